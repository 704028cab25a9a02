import AetherCore
import AetherIPC
import NIOCore
import NIOHTTP1

/// One HTTP connection on a trigger port.
///
/// It sits right after NIO's request decoder (`ServerBootstrap.http(ordersResponses: true)`;
/// there is no response encoder) and keeps HTTP/1.1's order itself (RFC 9112 §9.3.2): complete
/// requests, and the refusals of requests it will not serve (413, 431, 408, a request the parser
/// cannot read...), wait in `pending` in the order they arrived; one request at a time goes to
/// the function, and the next only once its answer is written. What it writes for each request
/// is exactly one final response (`GatewayResponse.wire`, as bytes by `ResponseBytes`: one
/// buffer, or the head and a large body), or before it at most one `100 Continue`, sent only
/// when that request is the next to be answered.
///
/// NIO's HTTPServerPipelineHandler did this before, but it stops reading from the socket while
/// any answer is outstanding and starts again after it: two `epoll_ctl` calls on every request
/// of every keep-alive connection (measured: +8-10% req/s without it). Here reads stop only
/// while a complete request is waiting behind the one being answered, which a client that does
/// not pipeline never causes.
///
/// Back-pressure: a client may send requests without reading the answers. While a request
/// waits in `pending`, or the channel is not writable (its unwritten responses are over the
/// write buffer's high water mark, NIO's default 64 KiB), the channel's reads are held, so
/// nothing more is read from the socket; they resume once `pending` is empty and the responses
/// drained below the low water mark (32 KiB). A connection then costs at most the high water
/// mark, one response, one read's worth of pipelined requests and its body limit.
final class GatewayHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// `client_timeout_ms`: from the connection's start, and again after each response, the
    /// next request must arrive completely within it. A request begun but not finished gets
    /// 408; a connection with no request (idle keep-alive, or a head trickling in) is closed.
    private let clientTimeout: TimeAmount

    private let port: UInt16
    private let routes: GatewayRoutes
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var bodyLimit = 0
    private var function: DeployedFunction?
    /// An answer with `connection: close` is written or owed (a refusal waits in `pending`):
    /// whatever else arrives is ignored (after an error, its bytes cannot be trusted to line up
    /// with a next request).
    private var closing = false
    /// When the client's time runs out (nil: not waiting for the client). The timer below is
    /// armed lazily: moving the deadline later (after every response) leaves the scheduled task
    /// alone, and when it fires early it is scheduled again for the deadline as it is then, so
    /// a keep-alive request costs no timer scheduling and cancelling (measured: 2.6% of the
    /// event loops' time at 16 connections).
    private var deadline: NIODeadline?
    private var clientTimer: Scheduled<Void>?
    /// Set once the connection is closing after an error answer (`closeLingering`).
    private var lingerTimer: Scheduled<Void>?
    /// Complete requests and refusals not answered yet, oldest first.
    private var pending = CircularBuffer<Pending>(initialCapacity: 1)
    /// A request went to its function and its answer has not been written yet.
    private var answering = false
    /// Inside `answerNext` (a nested call leaves the work to the running one).
    private var inAnswerNext = false
    /// The request being read expects `100 Continue`, which waits until the answers to the
    /// requests before it are written (its HTTP version).
    private var continueOwed: HTTPVersion?
    /// The channel asked to read while reads were held (see Back-pressure).
    private var readHeld = false

    private enum Pending {
        case request(Request)
        /// An answer the gateway makes itself, after which the connection closes.
        case refusal(GatewayResponse, GatewayResponse.Answered)
    }

    /// A complete request, not yet submitted.
    private struct Request {
        var head: HTTPRequestHead
        var body: ByteBuffer?
        var function: DeployedFunction
    }

    init(port: UInt16, routes: GatewayRoutes, clientTimeout: TimeAmount) {
        self.port = port
        self.routes = routes
        self.clientTimeout = clientTimeout
    }

    func channelActive(context: ChannelHandlerContext) {
        routes.connections.wrappingAdd(1, ordering: .relaxed)
        armClientTimer(context: context)
        context.fireChannelActive()
    }

    private func armClientTimer(context: ChannelHandlerContext) {
        let due = NIODeadline.now() + clientTimeout
        deadline = due
        if clientTimer == nil { scheduleClientTimer(at: due, context: context) }
    }

    private func scheduleClientTimer(at due: NIODeadline, context: ChannelHandlerContext) {
        clientTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [self] in
            clientTimer = nil
            guard let deadline else { return }
            if deadline > .now() {
                scheduleClientTimer(at: deadline, context: context)
                return
            }
            self.deadline = nil
            if head != nil {
                refuse(
                    .requestTimeout,
                    "the request did not arrive completely within client_timeout_ms \(clientTimeout.nanoseconds / 1_000_000)",
                    context: context)
            } else {
                context.close(promise: nil)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            begin(head, context: context)
        case .body(var chunk):
            guard head != nil else { return }
            let received = (body?.readableBytes ?? 0) + chunk.readableBytes
            guard received <= bodyLimit else {
                refuse(
                    .payloadTooLarge, "request body over max_body_bytes \(bodyLimit) of this function", context: context
                )
                return
            }
            if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
        case .end:
            deadline = nil
            guard let head, let function else { return }
            pending.append(.request(Request(head: head, body: body, function: function)))
            self.head = nil
            body = nil
            continueOwed = nil
            answerNext(context: context)
        }
    }

    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        self.head = head
        body = nil
        // Measured as encoded in the request message (8 bytes per header entry), which is what
        // must fit in the ring next to the body.
        let headBytes =
            head.method.rawValue.utf8.count + head.uri.utf8.count + InvocationFormat.headerBlockSize(head.headers).bytes
        guard headBytes <= InvocationLimits.maximumHead else {
            refuse(
                .requestHeaderFieldsTooLarge,
                "request line and headers take \(headBytes) bytes, over the \(InvocationLimits.maximumHead)-byte limit",
                context: context)
            return
        }
        guard head.method != .CONNECT else {
            // A 2xx answer would turn the connection into a tunnel, which a function cannot serve.
            refuse(.notImplemented, "CONNECT is not supported: functions cannot open tunnels", context: context)
            return
        }
        guard let function = routes.function(port: port) else {
            refuse(.serviceUnavailable, "no function is deployed on port \(port)", context: context)
            return
        }
        self.function = function
        // `auth:` is checked before anything else of the request is read or queued; the
        // Authorization header then goes on to the handler like any other.
        if function.config.auth != nil {
            let verdict = InvocationAuth.check(head.headers, token: routes.tokens.token(for: function.id))
            guard verdict == .allowed else {
                function.unauthorized()
                refuse(InvocationAuth.refusal(verdict, function: function.id), context: context)
                return
            }
        }
        bodyLimit = function.config.maxBody.bytes
        let declared = head.headers.first(name: "content-length").flatMap(Int.init)
        if let declared, declared > bodyLimit {
            refuse(
                .payloadTooLarge,
                "request body of \(declared) bytes is over max_body_bytes \(bodyLimit) of this function",
                context: context)
            return
        }
        // RFC 9110 §10.1.1: a client that expects 100-continue may wait for it before sending the
        // body; the final status cannot be known without the body, so the go-ahead is sent now.
        let expectsContinue = head.headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
        let bodyFollows = (declared ?? 0) > 0 || head.headers.contains(name: "transfer-encoding")
        if expectsContinue && bodyFollows && head.version.major == 1 && head.version.minor >= 1 {
            continueOwed = head.version
            sendOwedContinue(context: context)
        }
    }

    /// Sends the `100 Continue` the request being read expects, once it is the next to be
    /// answered (nothing in flight or waiting before it).
    private func sendOwedContinue(context: ChannelHandlerContext) {
        guard let version = continueOwed, head != nil, !answering, pending.isEmpty else { return }
        continueOwed = nil
        context.writeAndFlush(
            wrapOutboundOut(ResponseBytes.continueHead(version: version, allocator: context.channel.allocator)),
            promise: nil)
    }

    /// Sends the oldest pending request to its function or writes the oldest pending refusal,
    /// unless an answer is still outstanding or the connection cannot take more output now.
    /// A loop, not a recursion: an answer the function gives at once (a 429 when its queue is
    /// full) is written inside `submit`, and the next pending request then goes out here.
    private func answerNext(context: ChannelHandlerContext) {
        guard !inAnswerNext else { return }
        inAnswerNext = true
        defer { inAnswerNext = false }
        while !answering, context.channel.isWritable, let next = pending.popFirst() {
            switch next {
            case .request(let request):
                answering = true
                submit(request, context: context)
            case .refusal(let response, let answered):
                write(response, answering: answered, context: context)
            }
        }
        sendOwedContinue(context: context)
        resumeReading(context: context)
    }

    /// Whether reads may go on: lingering after a refusal everything is read (and dropped);
    /// otherwise not while a request waits or the channel is not writable.
    private func mayRead(context: ChannelHandlerContext) -> Bool {
        closing || (pending.isEmpty && context.channel.isWritable)
    }

    private func resumeReading(context: ChannelHandlerContext) {
        guard readHeld, mayRead(context: context) else { return }
        readHeld = false
        context.read()
    }

    private func submit(_ request: Request, context: ChannelHandlerContext) {
        var head = request.head
        // Every request has an id: its W3C trace's, or a new trace's. The handler sees both
        // headers (`request.request_id`, `request.traceparent`); the answer carries the id.
        // Traced, the handler's traceparent names the request's server span.
        let incoming = head.headers.first(name: "traceparent")
        let identity: RequestIdentity
        let trace: RequestTrace?
        if let tracing = routes.tracing {
            (identity, trace) = tracing.begin(
                incoming: incoming, tracestate: head.headers.first(name: "tracestate"),
                method: head.method.rawValue, target: head.uri, function: request.function.id, port: port)
        } else {
            identity = RequestIdentity(incoming: incoming)
            trace = nil
        }
        head.headers.replaceOrAdd(name: "traceparent", value: identity.traceparent)
        head.headers.replaceOrAdd(name: "x-request-id", value: identity.requestID)
        // After a request asking to upgrade (Upgrade with Connection: upgrade), NIO's decoder
        // parses nothing more on the connection: it closes once this request is answered.
        let answered = GatewayResponse.Answered(
            method: head.method, version: head.version,
            keepAlive: head.isKeepAlive && !head.headers.contains(name: "upgrade"), requestID: identity.requestID)
        let invocation = Invocation(
            head: head, body: request.body, function: request.function, promise: context.eventLoop.makePromise(),
            arrived: .now, trace: trace)
        invocation.promise.futureResult.assumeIsolated().whenSuccess { [self] response in
            write(response, answering: answered, context: context)
            trace?.responded(status: Int(response.status.code))
        }
        request.function.submit(invocation)
    }

    /// Answers the request being read with an error, after the answers owed before it, and
    /// closes the connection (its remaining bytes cannot be trusted to line up with a next
    /// request): nothing more is read into a request.
    private func refuse(_ status: HTTPResponseStatus, _ message: String, context: ChannelHandlerContext) {
        refuse(.error(status, message), context: context)
    }

    private func refuse(_ response: GatewayResponse, context: ChannelHandlerContext) {
        let answered = GatewayResponse.Answered(
            method: head?.method ?? .GET, version: head?.version ?? .http1_1, keepAlive: false)
        head = nil
        body = nil
        deadline = nil
        continueOwed = nil
        closing = true
        pending.append(.refusal(response, answered))
        answerNext(context: context)
    }

    private func write(
        _ response: GatewayResponse, answering request: GatewayResponse.Answered, context: ChannelHandlerContext
    ) {
        answering = false
        guard context.channel.isActive else { return }
        var request = request
        if routes.handingOver.load(ordering: .acquiring) { request.keepAlive = false }
        let (head, body) = response.wire(answering: request)
        let (first, rest) = ResponseBytes.encode(head: head, body: body, allocator: context.channel.allocator)
        let last = rest ?? first
        if rest != nil { context.write(wrapOutboundOut(first), promise: nil) }
        if request.keepAlive {
            // Waiting for the client again, unless a request of its is already here.
            if pending.isEmpty { armClientTimer(context: context) }
            context.writeAndFlush(wrapOutboundOut(last), promise: nil)
            answerNext(context: context)
        } else {
            closing = true
            // Nothing after this answer is answered (nor was any of it sent to a function).
            pending.removeAll()
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(last), promise: written)
            written.futureResult.assumeIsolated().whenComplete { [self] _ in closeLingering(context: context) }
        }
    }

    func read(context: ChannelHandlerContext) {
        if mayRead(context: context) {
            context.read()
        } else {
            readHeld = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { answerNext(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        routes.connections.wrappingSubtract(1, ordering: .relaxed)
        deadline = nil
        clientTimer?.cancel()
        clientTimer = nil
        lingerTimer?.cancel()
        pending.removeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError || error is ByteToMessageDecoderError {
            // A request NIO cannot parse: 400 (431 over the parser's own limits), after the
            // answers owed before it, then the connection closes. Later reads are reported as
            // `dataReceivedInErrorState` and dropped; the client may still be sending.
            guard !closing else { return }
            let (status, message) =
                (error as? HTTPParserError).map(MalformedRequestAnswer.answer(to:))
                ?? (.badRequest, "malformed HTTP request")
            refuse(status, message, context: context)
        } else {
            context.close(promise: nil)
        }
    }

    /// How long a connection refused with an error stays half open, its input read and dropped.
    static let linger = TimeAmount.seconds(1)

    /// Closes a connection whose client may still be sending (a refused request's body or head):
    /// the answer and a FIN go out first, what arrives meanwhile is read and dropped, and the
    /// connection closes when the client closes its side or after `linger`. Closing at once
    /// with unread bytes would make the kernel send a reset, which can destroy the answer
    /// before the client has read it (RFC 9112 §9.6).
    private func closeLingering(context: ChannelHandlerContext) {
        guard lingerTimer == nil, context.channel.isActive else { return }
        context.close(mode: .output, promise: nil)
        lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.linger) {
            context.close(promise: nil)
        }
    }
}
