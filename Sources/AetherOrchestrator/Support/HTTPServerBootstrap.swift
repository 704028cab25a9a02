import NIOCore
import NIOHTTP1
import NIOPosix

extension ServerBootstrap {
    /// An HTTP/1.1 server (NIO's codec, with its error handling) whose every connection gets a
    /// new `makeHandler()` after the codec: the gateway, the control API and the metrics port.
    static func http(
        group: any EventLoopGroup, handler makeHandler: @escaping @Sendable () -> any ChannelHandler
    ) -> ServerBootstrap {
        ServerBootstrap(group: group).childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                try channel.pipeline.syncOperations.addHandler(makeHandler())
            }
        }
    }
}
