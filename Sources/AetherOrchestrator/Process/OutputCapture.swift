import NIOCore
import NIOPosix

/// Reads a child's stdout or stderr into its function's `LogBuffer`, line by line, on the event
/// loops (a pipe channel per stream: no thread per pipe).
struct OutputCapture: Sendable {
    let group: any EventLoopGroup
    let logs: LogBuffer

    /// Takes ownership of `descriptor` (the read end of the child's pipe). The future completes
    /// when the pipe reaches end-of-file (every writer is gone) or could not be watched.
    /// `on`: the loop to read it on (default: the next of `group`).
    @discardableResult
    func start(
        descriptor: CInt, stream: String, instance: Int, on loop: (any EventLoop)? = nil
    ) -> EventLoopFuture<Void> {
        let logs = logs
        let channel = NIOPipeBootstrap(group: loop ?? group.next())
            .channelOption(.maxMessagesPerRead, value: 4)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        LineCollector(logs: logs, stream: stream, instance: instance))
                }
            }
            .takingOwnershipOfDescriptor(input: descriptor)
        return channel.flatMap { $0.closeFuture }.recover { _ in }
    }
}

/// Splits a byte stream into lines (at most `LogBuffer.maximumLineLength` each) for the log.
private final class LineCollector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let logs: LogBuffer
    private let stream: String
    private let instance: Int
    private var pending = ByteBuffer()

    init(logs: LogBuffer, stream: String, instance: Int) {
        self.logs = logs
        self.stream = stream
        self.instance = instance
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        pending.writeBuffer(&chunk)
        while let newline = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = pending.readString(length: newline - pending.readerIndex) ?? ""
            pending.moveReaderIndex(forwardBy: 1)
            logs.append(instance: instance, stream: stream, text: line)
        }
        if pending.readableBytes > LogBuffer.maximumLineLength {
            flush()
        }
        pending.discardReadBytes()
    }

    func channelInactive(context: ChannelHandlerContext) {
        flush()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func flush() {
        guard pending.readableBytes > 0 else { return }
        logs.append(instance: instance, stream: stream, text: pending.readString(length: pending.readableBytes) ?? "")
    }
}
