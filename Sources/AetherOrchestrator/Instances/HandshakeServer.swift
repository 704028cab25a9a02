import AetherCore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The Unix socket a function's handlers connect to (`AETHER_SOCKET`, mode 0600), and the
/// line protocol on it (docs/handler-protocol.md). One per function id; during a hot deploy
/// the old and the new generation of the function share it, and a connection belongs to
/// whichever generation started the connecting PID.
final class HandshakeServer: @unchecked Sendable {
    let path: String
    private let lock = NIOLock()
    private var runtimes: [FunctionRuntime] = []
    private var channel: (any Channel)?
    private var nextInstance = 0

    private init(path: String) { self.path = path }

    static func bind(path: String, group: any EventLoopGroup) async throws(OrchestratorError) -> HandshakeServer {
        let server = HandshakeServer(path: path)
        do {
            let channel = try await ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ControlLineHandler(server: server))
                    }
                }
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            chmod(path, 0o600)
            server.channel = channel
        } catch {
            throw .bindFailed(what: "handler connections", address: path, reason: SystemErrorText.describe(error))
        }
        return server
    }

    func register(_ runtime: FunctionRuntime) {
        lock.withLock { runtimes.append(runtime) }
    }

    func unregister(_ runtime: FunctionRuntime) {
        lock.withLock { runtimes.removeAll { $0 === runtime } }
    }

    var isUnused: Bool { lock.withLock { runtimes.isEmpty } }

    /// Instance numbers are unique per function for the orchestrator's lifetime, across
    /// generations, so an old and a new generation never share a shared-memory name.
    func takeInstanceNumber() -> Int {
        lock.withLock {
            defer { nextInstance += 1 }
            return nextInstance
        }
    }

    func close() async {
        try? await channel?.close()
        unlink(path)
    }

    fileprivate func claim(pid: pid_t, channel: any Channel) -> (FunctionRuntime, Int)? {
        let candidates = lock.withLock { runtimes }
        for runtime in candidates {
            if let number = runtime.controlConnected(pid: pid, channel: channel) { return (runtime, number) }
        }
        return nil
    }
}

/// `struct ucred` of SO_PEERCRED (Linux), which Swift's Glibc module does not export.
private struct PeerCredentials: Sendable {
    var pid: pid_t = 0
    var uid: uid_t = 0
    var gid: gid_t = 0
}

/// Splits a handler connection into lines and hands them to the instance's runtime.
private final class ControlLineHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    static let maximumLine = 4096
    private let server: HandshakeServer
    private var owner: (runtime: FunctionRuntime, instance: Int)?
    private var pending = ByteBuffer()

    init(server: HandshakeServer) { self.server = server }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        guard let provider = channel as? any SocketOptionProvider else {
            context.close(promise: nil)
            return
        }
        let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        credentials.hop(to: context.eventLoop).assumeIsolated().whenComplete { [self] result in
            guard case .success(let peer) = result, let owner = server.claim(pid: peer.pid, channel: channel) else {
                channel.close(promise: nil)
                return
            }
            self.owner = owner
            processLines(context: context)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending.writeBuffer(&buffer)
        processLines(context: context)
    }

    private func processLines(context: ChannelHandlerContext) {
        guard let owner else { return }
        while let newline = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - pending.readerIndex
            var line = pending.readString(length: length) ?? ""
            pending.moveReaderIndex(forwardBy: 1)
            if line.hasSuffix("\r") { line.removeLast() }
            owner.runtime.controlLine(line, instance: owner.instance)
        }
        if pending.readableBytes > Self.maximumLine {
            owner.runtime.controlOverflow(instance: owner.instance)
            context.close(promise: nil)
        }
        pending.discardReadBytes()
    }
}
