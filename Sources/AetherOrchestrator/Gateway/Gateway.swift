import AetherCore
import AetherIPC
import AetherNet
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

/// HTTP/1.1 listeners for the sdk functions' trigger ports (SwiftNIO), turning each request into
/// an `Invocation` for the port's current `FunctionRuntime`. With `dataplane: sockets` each
/// listener is bound to its trigger port; with the eBPF data plane it is bound to a free port
/// and the kernel steers the trigger port to it.
final class Gateway: @unchecked Sendable {
    let routes = GatewayRoutes()
    private let group: any EventLoopGroup
    private let address: String
    private let clientTimeout: TimeAmount
    private let lock = NIOLock()
    private var listeners: [UInt16: any Channel] = [:]

    init(group: any EventLoopGroup, address: String, clientTimeout: ClientTimeout) {
        self.group = group
        self.address = address
        self.clientTimeout = .milliseconds(Int64(clientTimeout.milliseconds))
    }

    var boundPorts: [UInt16] { lock.withLock { Array(listeners.keys) } }

    func listen(port: Port, function: FunctionID, dataplane: EbpfDataplane?) async throws(OrchestratorError) {
        if lock.withLock({ listeners[port.rawValue] != nil }) { return }
        let routes = routes
        let clientTimeout = clientTimeout
        let bootstrap = ServerBootstrap.http(group: group) {
            GatewayHandler(port: port.rawValue, routes: routes, clientTimeout: clientTimeout)
        }
        .serverChannelOption(.backlog, value: 1024)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelOption(.maxMessagesPerRead, value: 16)
        let what = "trigger port \(port) of function \(function)"
        let display = ListeningSocket.display(address: address, port: port.rawValue)
        guard let dataplane else {
            do {
                let channel = try await bootstrap.bind(host: address, port: Int(port.rawValue)).get()
                lock.withLock { listeners[port.rawValue] = channel }
            } catch {
                throw .bindFailed(what: what, address: display, reason: SystemErrorText.describe(error))
            }
            return
        }
        // The trigger port is held like a bind would hold it (the steering must not shadow
        // anyone else's socket); the listener itself is bound to a free port.
        var channel: (any Channel)?
        do {
            try dataplane.reserve(port: port.rawValue)
            let socket = try ListeningSocket.open(address: address, port: 0)
            channel = try await bootstrap.withBoundSocket(socket).get()
            try dataplane.steer(
                port: port.rawValue, function: function.rawValue, socket: socket, owner: getpid(), kind: .gateway)
        } catch {
            try? dataplane.release(port: port.rawValue)
            try? await channel?.close()
            throw .bindFailed(what: what, address: display, reason: SystemErrorText.describe(error))
        }
        lock.withLock { listeners[port.rawValue] = channel }
    }

    /// Stops accepting on a port (its function was removed or moved); open connections finish.
    func close(port: UInt16, dataplane: EbpfDataplane?) async {
        let channel = lock.withLock { listeners.removeValue(forKey: port) }
        guard let channel else { return }
        try? dataplane?.release(port: port)
        try? await channel.close()
    }

    func closeAll(dataplane: EbpfDataplane?) async {
        for port in boundPorts { await close(port: port, dataplane: dataplane) }
    }
}

/// One HTTP connection on a trigger port.
final class GatewayHandler: ChannelInboundHandler, @unchecked Sendable {
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
    private var runtime: FunctionRuntime?
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
