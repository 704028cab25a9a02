import AetherCore
import Logging
import OTel
import ServiceLifecycle
import Synchronization
import Tracing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Traces of the requests the gateway serves (`otlp_endpoint`), exported over OTLP/HTTP by
/// swift-otel's batch span processor. Made only when the configuration names an endpoint: without
/// one there is no tracer, and a request carries no `RequestTrace` (nothing is allocated or read
/// for it beyond its `RequestIdentity`).
///
/// Each request is one trace (or a part of the caller's, when it came with a valid
/// `traceparent`): a server span from its arrival to its response, and inside it `queue` (until
/// it was written to an instance's ring), `start` (the instance it waited for being spawned,
/// restored or forked, when it did) and `handler` (from the ring until the response was read).
/// The handler's `traceparent` names the server span as its parent, and the request's id is the
/// trace id throughout.
final class RequestTracing: Sendable {
    private let tracer: any Tracer
    /// swift-otel's exporter, processor and tracer: they run from `run()` until `shutdown()`.
    private let services: ServiceGroup
    private let running = Mutex<Task<Void, Never>?>(nil)
    let endpoint: OTLPEndpoint

    /// How long `shutdown` waits for the last spans to be exported before it lets them go.
    static let flushBudget = Duration.seconds(3)

    init(endpoint: OTLPEndpoint, logger: Logger) throws {
        self.endpoint = endpoint
        var config = OTel.Configuration.default
        config.serviceName = "aetherless"
        // Export failures (a receiver that is down) are logged by the processor once per batch:
        // at most one line a minute of each here, never one per request.
        let base = logger.handler
        config.diagnosticLogger = .custom(
            Logger(label: "aether.otel") { _ in OncePerMinuteLogHandler(wrapping: base, label: "aether.otel") })
        config.diagnosticLogLevel = .warning
        config.propagators = [.traceContext]
        config.metrics.enabled = false
        config.logs.enabled = false
        config.traces.enabled = true
        config.traces.exporter = .otlp
        config.traces.sampler = .parentBasedAlwaysOn
        config.traces.otlpExporter.endpoint = endpoint.tracesURL
        config.traces.otlpExporter.protocol = .httpProtobuf
        config.traces.otlpExporter.timeout = .seconds(2)
        // A trace reaches the collector about a second after its request (OTel's default is 5).
        config.traces.batchSpanProcessor.scheduleDelay = .seconds(1)
        config.traces.batchSpanProcessor.exportTimeout = .seconds(2)
        let backend = try OTel.makeTracingBackend(configuration: config)
        tracer = backend.factory
        services = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: backend.service, successTerminationBehavior: .gracefullyShutdownGroup)
                ], logger: logger))
    }

    /// Starts the exporter in the background (once).
    func run() {
        running.withLock { task in
            guard task == nil else { return }
            let services = services
            task = Task { try? await services.run() }
        }
    }

    /// Exports what is still buffered (within `flushBudget`) and stops the exporter.
    func shutdown() async {
        guard let task = running.withLock({ $0 }) else { return }
        await services.triggerGracefulShutdown()
        let flushed = Task {
            try? await Task.sleep(for: Self.flushBudget)
            task.cancel()
        }
        await task.value
        flushed.cancel()
    }

    /// The identity and trace of a request that just arrived: a child of the caller's span when
    /// `incoming` is a valid `traceparent`, else the root of a new trace. The identity's
    /// `traceparent` (for the handler) names the server span.
    func begin(
        incoming: String?, tracestate: String?, method: String, target: String, function: FunctionID, port: UInt16
    ) -> (RequestIdentity, RequestTrace) {
        let arrived = DefaultTracerClock.now
        var context = ServiceContext.topLevel
        if let incoming, let parent = RequestIdentity.normalized(incoming) {
            tracer.extract(
                TraceHeaders(traceparent: parent, tracestate: tracestate), into: &context, using: TraceHeaders.Access())
        }
        let path = target.prefix { $0 != "?" }
        let server = tracer.startSpan("\(method) \(function)", context: context, ofKind: .server, at: arrived)
        server.updateAttributes { attributes in
            attributes["http.request.method"] = method
            attributes["url.path"] = String(path)
            attributes["server.port"] = Int(port)
            attributes["faas.trigger"] = "http"
            attributes["faas.invoked_name"] = function.rawValue
        }
        var injected = TraceHeaders()
        tracer.inject(server.context, into: &injected, using: TraceHeaders.Access())
        let identity: RequestIdentity
        if let traceparent = injected.traceparent, let traceID = RequestIdentity.traceID(ofValid: traceparent) {
            identity = RequestIdentity(traceID: traceID, traceparent: traceparent)
        } else {
            identity = RequestIdentity(incoming: incoming)
        }
        server.attributes["aether.request_id"] = identity.requestID
        return (identity, RequestTrace(tracer: tracer, server: server, arrived: arrived))
    }
}

/// One request's spans: the server span is open from its arrival; the phases inside it are
/// recorded as instants and made into spans once the outcome is known (a request put back in the
/// queue because its instance's ring was full is dispatched again, and only its last dispatch
/// counts).
final class RequestTrace: Sendable {
    private let tracer: any Tracer
    private let server: any Span
    private let arrived: DefaultTracerClock.Instant
    private let dispatch = Mutex<(at: DefaultTracerClock.Instant, instance: InstanceID)?>(nil)

    fileprivate init(tracer: any Tracer, server: any Span, arrived: DefaultTracerClock.Instant) {
        self.tracer = tracer
        self.server = server
        self.arrived = arrived
    }

    /// The request is about to be written to `instance`'s ring: its wait in the queue ends.
    func dispatched(to instance: InstanceID) {
        let now = DefaultTracerClock.now
        dispatch.withLock { $0 = (now, instance) }
    }

    /// The scheduler's outcome (the response read from the ring, or why there is none).
    func answered(_ outcome: InvocationOutcome<HandlerResponse>) {
        let now = DefaultTracerClock.now
        let dispatched = dispatch.withLock { $0 }
        let failure: String? =
            switch outcome {
            case .response: nil
            case .queueFull(let busy, let queued): "queue full: \(queued) waiting, \(busy) instances busy"
            case .timedOut(let milliseconds): "timed out after \(milliseconds) ms"
            case .instanceFailed(_, let cause): "instance failed: \(cause)"
            case .malformedResponse(_, let reason): "malformed response: \(reason)"
            case .notAccepting(let mode): "function \(mode.rawValue)"
            case .unavailable(let error): "\(error)"
            }
        let parent = server.context
        let queue = tracer.startSpan("queue", context: parent, ofKind: .internal, at: arrived)
        guard let dispatched else {
            if let failure { queue.setStatus(SpanStatus(code: .error, message: failure)) }
            queue.end(at: now)
            return
        }
        queue.end(at: dispatched.at)
        if case .response(_, _, let coldStart?) = outcome {
            let began = dispatched.at.nanosecondsSinceEpoch &- UInt64(max(0, coldStart.milliseconds) * 1_000_000)
            let start = tracer.startSpan(
                "start", context: parent, ofKind: .internal,
                at: DefaultTracerClock.Instant(nanosecondsSinceEpoch: began))
            start.updateAttributes { attributes in
                attributes["aether.start.kind"] = coldStart.origin.rawValue
                attributes["aether.instance"] = dispatched.instance.number
                if let restore = coldStart.restoreMilliseconds { attributes["aether.start.restore_ms"] = restore }
            }
            start.end(at: dispatched.at)
            server.attributes["faas.coldstart"] = true
        }
        let handler = tracer.startSpan("handler", context: parent, ofKind: .internal, at: dispatched.at)
        handler.attributes["aether.instance"] = dispatched.instance.number
        if let failure { handler.setStatus(SpanStatus(code: .error, message: failure)) }
        handler.end(at: now)
    }

    /// The response (`status`) has been written to the client: the server span ends.
    func responded(status: Int) {
        server.attributes["http.response.status_code"] = status
        if status >= 500 { server.setStatus(SpanStatus(code: .error)) }
        server.end()
    }
}

/// The W3C headers a trace context travels in, as the tracer's propagator reads and writes them.
private struct TraceHeaders: Sendable {
    var traceparent: String?
    var tracestate: String?

    struct Access: Extractor, Injector {
        func extract(key: String, from carrier: TraceHeaders) -> String? {
            switch key {
            case "traceparent": carrier.traceparent
            case "tracestate": carrier.tracestate
            default: nil
            }
        }

        func inject(_ value: String, forKey key: String, into carrier: inout TraceHeaders) {
            switch key {
            case "traceparent": carrier.traceparent = value
            case "tracestate": carrier.tracestate = value
            default: break
            }
        }
    }
}

/// Passes each distinct message on at most once a minute (swift-otel logs a failed export per
/// batch, every second while a receiver is down).
private struct OncePerMinuteLogHandler: LogHandler {
    private let wrapped: any LogHandler
    private let label: String
    private let seen: Seen
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level

    private final class Seen: Sendable {
        let last = Mutex<[String: ContinuousClock.Instant]>([:])
    }

    static let interval = Duration.seconds(60)

    init(wrapping handler: any LogHandler, label: String) {
        wrapped = handler
        self.label = label
        seen = Seen()
        logLevel = handler.logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let text = event.message.description
        let now = ContinuousClock.now
        let due = seen.last.withLock { last in
            if let then = last[text], now - then < Self.interval { return false }
            last[text] = now
            return true
        }
        guard due else { return }
        var event = event
        event.metadata = metadata.merging(event.metadata ?? [:]) { $1 }
        wrapped.log(event: event)
    }
}
