import AetherIPC
import NIOCore
import NIOHTTP1

/// One HTTP request on its way to a function: the request as the client sent it, and where its
/// answer goes. The function only asks it to encode itself into a ring slot and hands it its
/// outcome, so HTTP types stay in the gateway.
///
/// A class: the scheduler copies it between its tables and its actions several times per
/// request, and a copy is then one reference count instead of one per field (measured: the
/// struct's copies and releases were the reader thread's largest item).
final class Invocation: SchedulableRequest {
    let head: HTTPRequestHead
    let body: ByteBuffer?
    /// The function it went to: told when its response is refused.
    let function: DeployedFunction
    /// Completed with the HTTP answer (the connection's event loop writes it).
    let promise: EventLoopPromise<GatewayResponse>
    /// When the gateway had the whole request (for `faas_invoke_duration_seconds`).
    let arrived: ContinuousClock.Instant
    /// Its spans, when the orchestrator traces (`otlp_endpoint`); nil otherwise.
    let trace: RequestTrace?

    init(
        head: HTTPRequestHead, body: ByteBuffer?, function: DeployedFunction,
        promise: EventLoopPromise<GatewayResponse>, arrived: ContinuousClock.Instant, trace: RequestTrace?
    ) {
        self.head = head
        self.body = body
        self.function = function
        self.promise = promise
        self.arrived = arrived
        self.trace = trace
    }

    var summary: String { "\(head.method) \(head.uri)" }

    /// Turns the outcome into the HTTP answer here, on the thread that produced it (for a response,
    /// the instance's ring reader), so the connection's event loop only writes it.
    func complete(_ outcome: InvocationOutcome<HandlerResponse>) {
        trace?.answered(outcome)
        let (response, rejection) = GatewayResponse.answering(outcome, function: function.id)
        if let rejection {
            function.responseRejected(instance: rejection.instance, reason: rejection.reason, status: rejection.status)
        }
        function.metrics.invoked(status: Int(response.status.code), duration: .now - arrived)
        if let failure = response.failure {
            function.requestFailed(
                requestID: head.headers.first(name: "x-request-id"), summary: summary,
                status: Int(response.status.code),
                reason: failure)
        }
        promise.succeed(response)
    }

    /// Writes the request message (docs/handler-protocol.md) into `producer`'s next slot with its
    /// checksum, in one pass over the body. False when the ring has no room now. The handler is
    /// not woken: the caller rings `producer.ringConsumer()` once it let go of its lock.
    func write(requestID: UInt64, to producer: RingProducer) throws(SharedMemoryError) -> Bool {
        let method = head.method.rawValue
        let target = head.uri
        let headers = head.headers
        let block = InvocationFormat.headerBlockSize(headers)
        let size = InvocationRequest.encodedSize(
            method: method, target: target, headerBlock: block.bytes, body: body?.readableBytes ?? 0)
        return try producer.tryWrite(
            length: size, ringing: false,
            storing: { buffer in
                let encode = { (body: UnsafeRawBufferPointer) in
                    InvocationRequest.encodeWithChecksum(
                        id: requestID, method: method, target: target, headers: headers, headerBlock: block,
                        body: body, into: buffer)
                }
                if let body {
                    return body.withUnsafeReadableBytes(encode)
                } else {
                    return encode(UnsafeRawBufferPointer(start: nil, count: 0))
                }
            })
    }
}
