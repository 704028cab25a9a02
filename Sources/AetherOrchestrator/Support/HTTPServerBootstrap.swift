import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ServerBootstrap {
    /// An HTTP/1.1 server (NIO's codec, with its error handling) whose every connection gets a
    /// new `makeHandler()` after the codec: the gateway, the control API and the metrics port.
    /// Its listener pauses accepting for a moment when accepting fails for want of resources
    /// (`AcceptRetry`).
    static func http(
        group: any EventLoopGroup, handler makeHandler: @escaping @Sendable () -> any ChannelHandler
    ) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptRetry(), name: "AcceptRetry")
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(makeHandler())
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
