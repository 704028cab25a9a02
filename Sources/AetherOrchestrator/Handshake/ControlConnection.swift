import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Synchronization

/// Receives the lines of one instance's control connection (docs/handler-protocol.md).
protocol ControlLineSink: Sendable {
    /// The connection is this sink's from now on (lines follow).
    func connected(_ connection: ControlConnection)
    func controlLine(_ line: String)
    /// More than a line's worth arrived without a newline; the connection is closed.
    func controlOverflow()
}

/// One instance's control connection: a handler's connection to `AETHER_SOCKET`, or our end
/// of a restored copy's socketpair. Lines are held until a sink is bound (a spawned handler
/// may connect and speak before its spawn has been recorded).
final class ControlConnection: Sendable {
    static let maximumLine = 4096

    let channel: any Channel
    private let sink = Mutex<(any ControlLineSink)?>(nil)

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Sets a connection up on `channel` (in its initializer): the line splitter goes into its
    /// pipeline.
    static func adopt(_ channel: any Channel) throws -> ControlConnection {
        let connection = ControlConnection(channel: channel)
        try channel.pipeline.syncOperations.addHandler(ControlLineSplitter(connection: connection))
        return connection
    }

    /// Wraps our end of a restored copy's control socketpair (takes ownership of `descriptor`).
    static func wrap(
        connectedSocket descriptor: CInt, group: any EventLoopGroup
    ) -> EventLoopFuture<ControlConnection> {
        let box = NIOLockedValueBox<ControlConnection?>(nil)
        return ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    box.withLockedValue { $0 = try? ControlConnection.adopt(channel) }
                }
            }
            .withConnectedSocket(descriptor)
            .flatMapThrowing { channel in
                guard let connection = box.withLockedValue({ $0 }) else {
                    throw ChannelError.inappropriateOperationForState
                }
                return connection
            }
    }

    /// From now on lines go to `sink`, starting with those that arrived before.
    func bind(to sink: any ControlLineSink) {
        sink.connected(self)
        self.sink.withLock { $0 = sink }
        channel.pipeline.fireUserInboundEventTriggered(ControlLineSplitter.SinkBound())
    }

    var boundSink: (any ControlLineSink)? { sink.withLock { $0 } }

    /// Lets go of the sink once the connection is closed: an instance's handle holds its
    /// connection, and the connection must not hold the handle back (its region, its memfd).
    fileprivate func unbind() {
        sink.withLock { $0 = nil }
    }

    func write(_ line: String) {
        channel.writeAndFlush(ByteBuffer(string: line), promise: nil)
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// Splits a control connection into lines and hands them to the connection's sink.
private final class ControlLineSplitter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    struct SinkBound {}

    private let connection: ControlConnection
    private var pending = ByteBuffer()
    /// A READY without its newline was delivered: the newline, if it follows, is not a line.
    private var unterminatedReady = false

    init(connection: ControlConnection) { self.connection = connection }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending.writeBuffer(&buffer)
        deliverLines(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is SinkBound {
            deliverLines(context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func deliverLines(context: ChannelHandlerContext) {
        guard let sink = connection.boundSink else {
            if pending.readableBytes > ControlConnection.maximumLine * 4 { context.close(promise: nil) }
            return
        }
        if unterminatedReady, let first = pending.readableBytesView.first {
            unterminatedReady = false
            if first == UInt8(ascii: "\r") || first == UInt8(ascii: "\n") {
                pending.moveReaderIndex(forwardBy: 1)
                if first == UInt8(ascii: "\r"), pending.readableBytesView.first == UInt8(ascii: "\n") {
                    pending.moveReaderIndex(forwardBy: 1)
                }
            }
        }
        while let newline = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            var line = pending.readString(length: newline - pending.readerIndex) ?? ""
            pending.moveReaderIndex(forwardBy: 1)
            if line.hasSuffix("\r") { line.removeLast() }
            sink.controlLine(line)
        }
        // The seed's handlers send the 5 bytes READY with no newline (and may say nothing more).
        if pending.readableBytesView.elementsEqual("READY".utf8) {
            pending.moveReaderIndex(forwardBy: 5)
            unterminatedReady = true
            sink.controlLine("READY")
        }
        if pending.readableBytes > ControlConnection.maximumLine {
            sink.controlOverflow()
            context.close(promise: nil)
        }
        pending.discardReadBytes()
    }

    /// A last line without a newline counts when the handler closes its end.
    func channelInactive(context: ChannelHandlerContext) {
        if let sink = connection.boundSink, pending.readableBytes > 0 {
            var line = pending.readString(length: pending.readableBytes) ?? ""
            if line.hasSuffix("\r") { line.removeLast() }
            sink.controlLine(line)
        }
        connection.unbind()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
