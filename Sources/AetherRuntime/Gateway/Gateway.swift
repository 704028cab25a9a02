import AetherCore
import AetherIPC
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Which function runtime serves each trigger port right now. A hot deploy swaps the entry;
/// connections and listeners stay.
final class GatewayRoutes: @unchecked Sendable {
    private let lock = NIOLock()
    private var routes: [UInt16: FunctionRuntime] = [:]

    func runtime(port: UInt16) -> FunctionRuntime? { lock.withLock { routes[port] } }
    func set(_ runtime: FunctionRuntime?, port: UInt16) { lock.withLock { routes[port] = runtime } }
}

/// HTTP/1.1 listeners on the sdk functions' trigger ports (SwiftNIO), turning each request into
/// an `Invocation` for the port's current `FunctionRuntime`.
final class Gateway: @unchecked Sendable {
    let routes = GatewayRoutes()
    private let group: any EventLoopGroup
    private let address: String
    private let lock = NIOLock()
    private var listeners: [UInt16: any Channel] = [:]

    init(group: any EventLoopGroup, address: String) {
        self.group = group
        self.address = address
    }

    var boundPorts: [UInt16] { lock.withLock { Array(listeners.keys) } }

    func listen(port: Port, function: FunctionID) async throws(OrchestratorError) {
        if lock.withLock({ listeners[port.rawValue] != nil }) { return }
        let routes = routes
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        IdleStateHandler(readTimeout: GatewayHandler.idleTimeout))
                    try channel.pipeline.syncOperations.addHandler(GatewayHandler(port: port.rawValue, routes: routes))
                }
            }
        do {
            let channel = try await bootstrap.bind(host: address, port: Int(port.rawValue)).get()
            lock.withLock { listeners[port.rawValue] = channel }
        } catch {
            throw .bindFailed(
                what: "trigger port \(port) of function \(function)", address: "\(address):\(port)",
                reason: SystemErrorText.describe(error))
        }
    }

    /// Stops accepting on a port (its function was removed or moved); open connections finish.
    func close(port: UInt16) async {
        let channel = lock.withLock { listeners.removeValue(forKey: port) }
        try? await channel?.close()
    }

    func closeAll() async {
        for port in boundPorts { await close(port: port) }
    }
}

/// One HTTP connection on a trigger port.
final class GatewayHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// A connection with no bytes for this long is closed (keep-alive idle and slow clients).
    static let idleTimeout = TimeAmount.seconds(60)
    /// A request whose head and body have not all arrived this long after it began gets 408.
    static let requestDeadline = TimeAmount.seconds(30)

    private let port: UInt16
    private let routes: GatewayRoutes
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var bodyLimit = 0
    private var runtime: FunctionRuntime?
    /// The rest of the current request is ignored (it was already answered with an error).
    private var discarding = false
    private var deadline: Scheduled<Void>?

    init(port: UInt16, routes: GatewayRoutes) {
        self.port = port
        self.routes = routes
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
            guard let head, let runtime else { return }
            self.head = nil
            let invocation = Invocation(head: head, body: body, promise: context.eventLoop.makePromise())
            body = nil
            let keepAlive = head.isKeepAlive
            let version = head.version
            invocation.promise.futureResult.assumeIsolated().whenSuccess { [self] response in
                write(response, version: version, keepAlive: keepAlive, context: context)
            }
            runtime.submit(invocation, on: context.eventLoop)
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
        guard let runtime = routes.runtime(port: port) else {
            refuse(.serviceUnavailable, "no function is deployed on port \(port)", context: context)
            return
        }
        self.runtime = runtime
        bodyLimit = runtime.config.maxBody.bytes
        if let declared = head.headers.first(name: "content-length").flatMap(Int.init), declared > bodyLimit {
            refuse(
                .payloadTooLarge,
                "request body of \(declared) bytes is over max_body_bytes \(bodyLimit) of this function",
                context: context)
            return
        }
        self.head = head
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: Self.requestDeadline) { [self] in
            refuse(.requestTimeout, "the request did not arrive completely within 30 s", context: context)
        }
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
        if !keepAlive {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
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
