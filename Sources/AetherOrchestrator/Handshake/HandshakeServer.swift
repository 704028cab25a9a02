import AetherCore
import AetherSystem
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The Unix socket a function's handlers connect to (`AETHER_SOCKET`, mode 0600). One per
/// function id; during a hot deploy the old and the new generation share it. A connection
/// belongs to the instance whose process connected (`SO_PEERCRED`): the function says which
/// PIDs it expects, and whichever comes second, the connection or the expectation, completes
/// the match. A connection nobody expects is closed after `unclaimedGrace`.
final class HandshakeServer: Sendable {
    let path: String
    private struct State {
        var expected: [pid_t: any ControlLineSink] = [:]
        var unclaimed: [pid_t: ControlConnection] = [:]
        var users: Set<ObjectIdentifier> = []
        var channel: (any Channel)?
    }

    private let state = Mutex(State())
    /// How long a connection from a PID nobody has announced is kept (the spawn that made that
    /// process is being recorded) before it is closed.
    static let unclaimedGrace = TimeAmount.seconds(2)

    private init(path: String) { self.path = path }

    static func bind(path: String, group: any EventLoopGroup) async throws(OrchestratorError) -> HandshakeServer {
        let server = HandshakeServer(path: path)
        do {
            let channel = try await ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let connection = try ControlConnection.adopt(channel)
                        try channel.pipeline.syncOperations.addHandler(
                            PeerIdentifier(server: server, connection: connection))
                    }
                }
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            chmod(path, 0o600)
            server.state.withLock { $0.channel = channel }
        } catch {
            throw .bindFailed(what: "handler connections", address: path, reason: SystemErrorText.describe(error))
        }
        return server
    }

    /// A function generation that uses the socket (it stays open while one does).
    func addUser(_ user: AnyObject) {
        _ = state.withLock { $0.users.insert(ObjectIdentifier(user)) }
    }

    func removeUser(_ user: AnyObject) {
        _ = state.withLock { $0.users.remove(ObjectIdentifier(user)) }
    }

    /// No function generation uses the socket any more.
    var isUnused: Bool { state.withLock { $0.users.isEmpty } }

    /// The process `pid` (just started) will connect; its connection goes to `sink`.
    func expect(pid: pid_t, sink: any ControlLineSink) {
        let early = state.withLock { state -> ControlConnection? in
            if let connection = state.unclaimed.removeValue(forKey: pid) { return connection }
            state.expected[pid] = sink
            return nil
        }
        early?.bind(to: sink)
    }

    /// The process ended: forget it.
    func forget(pid: pid_t) {
        state.withLock { _ = $0.expected.removeValue(forKey: pid) }
    }

    func close() async {
        let channel = state.withLock { $0.channel }
        try? await channel?.close()
        unlink(path)
    }

    /// A connection from `pid`: to its instance, or held until its instance is announced.
    fileprivate func connected(pid peer: pid_t, connection: ControlConnection) -> (any ControlLineSink)? {
        // The instance a connection belongs to is the process we started: the peer itself, or
        // its parent when that is not us (the sandbox's init, under which a confined process
        // handler runs; a handler's own worker process).
        let pid = Self.parent(of: peer).flatMap { $0 == getpid() || $0 <= 1 ? nil : $0 } ?? peer
        let sink = state.withLock { state -> (any ControlLineSink)? in
            if let sink = state.expected.removeValue(forKey: pid) { return sink }
            state.unclaimed[pid] = connection
            return nil
        }
        if let sink {
            connection.bind(to: sink)
            return sink
        }
        connection.channel.eventLoop.scheduleTask(in: Self.unclaimedGrace) { [self] in
            let stale = state.withLock { state -> Bool in
                guard state.unclaimed[pid] === connection else { return false }
                state.unclaimed[pid] = nil
                return true
            }
            if stale { connection.close() }
        }
        return nil
    }

    /// The parent PID of `pid` (/proc/PID/stat's fourth field), nil if it is gone.
    private static func parent(of pid: pid_t) -> pid_t? {
        guard let stat = Posix.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? pid_t(fields[1]) : nil
    }

    /// The instance that owns a connection made before the expectation (see `expect`).
    fileprivate func connectionClosed(pid: pid_t, connection: ControlConnection) {
        state.withLock { state in
            // Kept under the PID of the process we started, which may be the peer's parent.
            if state.unclaimed[pid] === connection {
                state.unclaimed[pid] = nil
            } else if let key = state.unclaimed.first(where: { $0.value === connection })?.key {
                state.unclaimed[key] = nil
            }
        }
    }
}

/// `struct ucred` of SO_PEERCRED (Linux), which Swift's Glibc module does not export.
private struct PeerCredentials: Sendable {
    var pid: pid_t = 0
    var uid: uid_t = 0
    var gid: gid_t = 0
}

/// Finds which process is at the other end of a new connection and hands it to the server.
private final class PeerIdentifier: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let server: HandshakeServer
    private let connection: ControlConnection
    private var pid: pid_t?

    init(server: HandshakeServer, connection: ControlConnection) {
        self.server = server
        self.connection = connection
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        guard let provider = channel as? any SocketOptionProvider else {
            context.close(promise: nil)
            return
        }
        let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        credentials.hop(to: context.eventLoop).assumeIsolated().whenComplete { [self] result in
            guard case .success(let peer) = result else {
                channel.close(promise: nil)
                return
            }
            pid = peer.pid
            _ = server.connected(pid: peer.pid, connection: connection)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let pid { server.connectionClosed(pid: pid, connection: connection) }
        context.fireChannelInactive()
    }
}

extension HandshakeServer {
    /// Removes the handler sockets (`fn-<id>-<pid>.sock`) in `folder`, the control socket's,
    /// that a dead orchestrator left: a killed one cannot remove its own, and each `kill -9`
    /// would leave one per function for good. Only a socket file of that name is removed, and
    /// only when no process `pid` exists and nothing accepts on it (a running orchestrator's,
    /// or an `aether restart` predecessor's, stays). Returns the names removed.
    static func removeStale(in folder: String) -> [String] {
        guard let entries = Posix.entries(of: folder) else { return [] }
        var removed: [String] = []
        for entry in entries where !entry.isDirectory {
            let name = entry.name
            guard name.hasPrefix("fn-"), name.hasSuffix(".sock") else { continue }
            let stem = name.dropFirst("fn-".count).dropLast(".sock".count)
            guard let dash = stem.lastIndex(of: "-"), let owner = Int32(stem[stem.index(after: dash)...]),
                owner > 0, owner != getpid()
            else { continue }
            guard kill(owner, 0) != 0, errno == ESRCH else { continue }
            let path = folder + "/" + name
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { continue }
            if let descriptor = try? Posix.connectUnixSocket(path) {
                OwnedDescriptor(owning: descriptor).close()
                continue
            }
            if unlink(path) == 0 { removed.append(name) }
        }
        return removed
    }
}
