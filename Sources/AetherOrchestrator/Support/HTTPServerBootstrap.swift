import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ServerBootstrap {
    /// An HTTP/1.1 server on NIO's codec whose every connection gets a new `makeHandler()`
    /// after it: the gateway, the control API and the metrics port. Its listener pauses
    /// accepting for a moment when accepting fails for want of resources (`AcceptRetry`).
    ///
    /// By default NIO's HTTPServerPipelineHandler hands the handler one request at a time,
    /// NIO checks every response header, and a request the decoder cannot parse is answered by
    /// `MalformedRequestAnswer`. `ordersResponses`: the handler does all three itself, and
    /// writes its responses as bytes (the gateway's GatewayHandler: it answers pipelined
    /// requests in order and malformed ones in their turn, every header it writes is its own or
    /// a handler's already checked by `GatewayResponse.checking`, and `ResponseBytes` writes each
    /// answer as one buffer); the pipeline is then NIO's request decoder alone, which saves two
    /// `epoll_ctl` calls per request and the response encoder's three pipeline steps.
    static func http(
        group: any EventLoopGroup, ordersResponses: Bool = false,
        handler makeHandler: @escaping @Sendable () -> any ChannelHandler
    ) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptRetry(), name: "AcceptRetry")
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if ordersResponses {
                        try pipeline.addHandler(
                            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                    } else {
                        try pipeline.configureHTTPServerPipeline(withErrorHandling: false)
                        try pipeline.addHandler(MalformedRequestAnswer())
                    }
                    try pipeline.addHandler(makeHandler())
                }
            }
    }
}

/// Stops a listener from spinning when accept fails with EMFILE or ENFILE (descriptors ran out),
/// ENOBUFS or ENOMEM: the connection stays in the backlog, so the socket stays readable, and
/// NIO, which keeps the listener open for these errors, would call accept again at once, forever,
/// on one event loop's thread. Instead, reading is switched off (`autoRead`, which takes the
/// socket out of epoll) and back on after `delay`; waiting connections are accepted then, once
/// descriptors are free again.
///
/// NIO's own `AcceptBackoffHandler` (which it installs only for the async bootstrap) does not
/// help in NIO 2.101: it delays the channel's next `read()`, but when the first accept of a read
/// cycle fails the channel still has its previous read pending, asks for no new one, and stays
/// registered for readability (ServerSocketChannel.readFromSocket clears `readPending` only on
/// a successful accept).
final class AcceptRetry: ChannelInboundHandler {
    typealias InboundIn = any Channel

    /// Short, so that waiting connections are taken soon after descriptors are free again; one
    /// failed accept per listener per `delay` costs nothing.
    static let delay = TimeAmount.milliseconds(100)

    private var paused = false

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        guard !paused, let options = context.channel.syncOptions else { return }
        do {
            try options.setOption(.autoRead, value: false)
        } catch {
            return
        }
        paused = true
        let channel = context.channel
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.delay) { [self] in
            paused = false
            guard channel.isActive else { return }
            try? channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }
}

/// Answers a request NIO's decoder cannot parse on the control API and metrics ports, in place
/// of NIO's `HTTPServerProtocolErrorHandler` (which sends an empty 400): like every answer the
/// orchestrator makes itself, a JSON `{"error": ...}` naming the cause. A head over the
/// decoder's own limits (80 KiB per field or in all, or too many fields) is a 431, as one over
/// the gateway's smaller limit is; anything else a 400 (`answer(to:)`, which the gateway's
/// GatewayHandler uses for its own answer). Nothing is written while a response is still
/// unfinished on the connection (the error then only closes it).
///
/// Unlike NIO's handler it does not trap on an out-of-order response part: a precondition here
/// would take the whole orchestrator down for one connection.
final class MalformedRequestAnswer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var responseUnfinished = false

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if !responseUnfinished {
            let (status, message) = Self.answer(to: parserError)
            let response = GatewayResponse.error(status, message)
            var headers = response.headers.httpHeaders
            headers.replaceOrAdd(name: "connection", value: "close")
            headers.replaceOrAdd(name: "content-length", value: String(response.body?.readableBytes ?? 0))
            let head = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if let body = response.body {
                context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.fireErrorCaught(error)
    }

    /// The status and message for a request the decoder refused.
    static func answer(to error: HTTPParserError) -> (HTTPResponseStatus, String) {
        if error == .headerOverflow {
            return (.requestHeaderFieldsTooLarge, "the request's headers are over the HTTP parser's limits")
        }
        return (.badRequest, "malformed HTTP request: \(error.debugDescription)")
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            responseUnfinished = true
        case .end:
            responseUnfinished = false
        case .head, .body:
            break
        }
        context.write(data, promise: promise)
    }
}
