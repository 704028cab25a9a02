import AetherCore
import AetherIPC
import NIOCore
import NIOHTTP1

/// One HTTP connection on a trigger port.
final class GatewayHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

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
    /// The rest of the current request is ignored (it was already answered with an error).
    private var discarding = false
    private var deadline: Scheduled<Void>?

    init(port: UInt16, routes: GatewayRoutes, clientTimeout: TimeAmount) {
        self.port = port
        self.routes = routes
        self.clientTimeout = clientTimeout
    }

    func channelActive(context: ChannelHandlerContext) {
        armClientTimer(context: context)
        context.fireChannelActive()
    }

    private func armClientTimer(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: clientTimeout) { [self] in
            deadline = nil
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
        switch unwrapInboundIn(data) {
        case .head(let head):
            begin(head, context: context)
        case .body(var chunk):
            guard !discarding else { return }
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
            deadline?.cancel()
            deadline = nil
            if discarding {
                discarding = false
                return
            }
            guard let head, let function else { return }
            self.head = nil
            let invocation = Invocation(
                head: head, body: body, function: function, promise: context.eventLoop.makePromise())
            body = nil
            let keepAlive = head.isKeepAlive
            let version = head.version
            invocation.promise.futureResult.assumeIsolated().whenSuccess { [self] response in
                write(response, version: version, keepAlive: keepAlive, context: context)
            }
            function.submit(invocation)
        }
    }

    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        discarding = false
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
        guard let function = routes.function(port: port) else {
            refuse(.serviceUnavailable, "no function is deployed on port \(port)", context: context)
            return
        }
        self.function = function
        bodyLimit = function.config.maxBody.bytes
        if let declared = head.headers.first(name: "content-length").flatMap(Int.init), declared > bodyLimit {
            refuse(
                .payloadTooLarge,
                "request body of \(declared) bytes is over max_body_bytes \(bodyLimit) of this function",
                context: context)
            return
        }
        self.head = head
    }

    /// Answers the current request with an error and closes the connection (its remaining bytes
    /// cannot be trusted to line up with a next request).
    private func refuse(_ status: HTTPResponseStatus, _ message: String, context: ChannelHandlerContext) {
        let version = head?.version ?? .http1_1
        head = nil
        body = nil
        discarding = true
        deadline?.cancel()
        deadline = nil
        write(.error(status, message), version: version, keepAlive: false, context: context)
    }

    private func write(
        _ response: GatewayResponse, version: HTTPVersion, keepAlive: Bool, context: ChannelHandlerContext
    ) {
        var headers = response.headers
        headers.replaceOrAdd(name: "content-length", value: String(response.body?.readableBytes ?? 0))
        if !keepAlive {
            headers.replaceOrAdd(name: "connection", value: "close")
        } else if version.major == 1 && version.minor == 0 {
            headers.replaceOrAdd(name: "connection", value: "keep-alive")
        }
        let head = HTTPResponseHead(version: version, status: response.status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body = response.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let written = context.writeAndFlushPromise(wrapOutboundOut(.end(nil)))
        if keepAlive {
            armClientTimer(context: context)
        } else {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension ChannelHandlerContext {
    fileprivate func writeAndFlushPromise(_ data: NIOAny) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        writeAndFlush(data, promise: promise)
        return promise.futureResult
    }
}
