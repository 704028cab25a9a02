import AetherCore
import AetherIPC
import AetherNet
import AetherSystem
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Which function generation serves each trigger port right now (a hot deploy swaps the entry;
/// connections and listeners stay), and what every connection of the gateway shares: how many
/// there are, and whether the orchestrator is handing over to a successor.
final class GatewayRoutes: Sendable {
    private let routes = Mutex<[UInt16: DeployedFunction]>([:])
    /// Open client connections.
    let connections = Atomic<Int>(0)
    /// Handing over (`aether restart`): every response says `Connection: close`, so clients
    /// reconnect, to the successor.
    let handingOver = Atomic<Bool>(false)
    /// The bearer tokens of the functions with `auth:`.
    let tokens = BearerTokens()
    /// Traces requests (`otlp_endpoint`); nil: no tracing.
    let tracing: RequestTracing?

    init(tracing: RequestTracing? = nil) {
        self.tracing = tracing
    }

    func function(port: UInt16) -> DeployedFunction? { routes.withLock { $0[port] } }
    func set(_ function: DeployedFunction?, port: UInt16) { routes.withLock { $0[port] = function } }
}

/// HTTP/1.1 listeners for the sdk functions' trigger ports (SwiftNIO), turning each request into
/// an `Invocation` for the port's current `DeployedFunction`. With `dataplane: sockets` each
/// listener is bound to its trigger port; with the eBPF data plane each port has one listener
/// per home loop (below), in one SO_REUSEPORT group on a free port, and the kernel steers the
/// trigger port to the group: a connection is accepted on the loop that serves it, instead of
/// being handed to another loop's thread (a wake-up of 0.1-0.3 ms on the first request of every
/// new connection on these VMs).
///
/// Home loops: a port's connections are served on as many event loops as its function may run
/// instances (`max_instances`), but at most half of the loops (one of two on 2 cores), and its
/// instances' response readers are spread over the same loops (`homeLoops(port:instances:)`).
/// An instance's answers are then read on a loop that writes them (with several, the scheduler
/// prefers that instance for requests arriving there: `FunctionScheduler.Affinity`): no hop to
/// another loop's thread, and the function's scheduler and request rings are not contended by
/// every loop. Half: the handlers, and the clients, need the other cores (measured on 2 vCPUs:
/// one loop instead of two cost 18-31% less CPU per answer, with one instance and with two,
/// BENCHMARKS.md). Ports take their first loop in turn, so several functions still spread over
/// every loop. A port keeps its loops while it is listened on (a redeploy keeps its listeners,
/// and with them the loops).
final class Gateway: Sendable {
    let routes: GatewayRoutes
    private let group: any EventLoopGroup
    private let address: String
    private let clientTimeout: TimeAmount
    private let listeners = Mutex<[UInt16: [any Channel]]>([:])
    /// Each port's home loops, and where the next port's start.
    private let homes = Mutex<(loops: [UInt16: [any EventLoop]], next: Int)>(([:], 0))

    init(group: any EventLoopGroup, address: String, clientTimeout: ClientTimeout, tracing: RequestTracing? = nil) {
        routes = GatewayRoutes(tracing: tracing)
        self.group = group
        self.address = address
        self.clientTimeout = .milliseconds(Int64(clientTimeout.milliseconds))
    }

    var boundPorts: [UInt16] { listeners.withLock { Array($0.keys) } }

    /// What serves on `loops`: one loop is a group of itself; for more, the whole group (NIO has
    /// no group of some of its loops).
    static func serving(_ loops: [any EventLoop], in group: any EventLoopGroup) -> any EventLoopGroup {
        loops.count == 1 ? loops[0] : group
    }

    /// The event loops `port`'s connections are served on and its function's response readers
    /// run on: `instances` of them, at most half of the loops, the same ones for as long as the
    /// port is listened on.
    func homeLoops(port: UInt16, instances: Int) -> [any EventLoop] {
        let all = Array(group.makeIterator())
        return homes.withLock { homes in
            if let loops = homes.loops[port] { return loops }
            let count = min(max(1, instances), max(1, all.count / 2))
            let loops = (0..<count).map { all[(homes.next + $0) % all.count] }
            homes.next = (homes.next + count) % all.count
            homes.loops[port] = loops
            return loops
        }
    }

    /// `adopting`: the predecessor's socket on the port (`aether restart`): with
    /// `dataplane: sockets` both accept on it until the predecessor lets go; with eBPF it is the
    /// port's hold socket.
    func listen(
        port: Port, function: FunctionID, instances: Int, dataplane: EbpfDataplane?, adopting: CInt? = nil
    ) async throws(OrchestratorError) {
        if listeners.withLock({ $0[port.rawValue] != nil }) {
            if let adopting { Glibc.close(adopting) }
            return
        }
        let routes = routes
        let clientTimeout = clientTimeout
        // A listener on `group` accepts on one loop and serves each connection on the next.
        let bootstrap = { @Sendable (group: any EventLoopGroup) in
            ServerBootstrap.http(group: group, ordersResponses: true) {
                GatewayHandler(port: port.rawValue, routes: routes, clientTimeout: clientTimeout)
            }
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
        }
        let what = "trigger port \(port) of function \(function)"
        let display = ListeningSocket.display(address: address, port: port.rawValue)
        let loops = homeLoops(port: port.rawValue, instances: instances)
        guard let dataplane else {
            // One loop accepts and serves; with more, every loop serves.
            let serving = Self.serving(loops, in: group)
            do {
                let channel =
                    if let adopting {
                        try await bootstrap(serving).withBoundSocket(adopting).get()
                    } else {
                        try await bootstrap(serving).bind(host: address, port: Int(port.rawValue)).get()
                    }
                listeners.withLock { $0[port.rawValue] = [channel] }
            } catch {
                throw .bindFailed(what: what, address: display, reason: SystemErrorText.describe(error))
            }
            return
        }
        // The trigger port is held like a bind would hold it (the steering must not shadow
        // anyone else's socket); the listener itself is bound to a free port.
        var channels: [any Channel] = []
        var unbound: ArraySlice<CInt> = []
        do {
            if let adopting {
                try dataplane.reserve(port: port.rawValue, adopting: OwnedDescriptor(owning: adopting))
            } else {
                try dataplane.reserve(port: port.rawValue)
            }
            let sockets = try ListeningSocket.openGroup(address: address, count: loops.count)
            unbound = sockets[...]
            for loop in loops {
                let socket = unbound.removeFirst()
                channels.append(try await bootstrap(loop).withBoundSocket(socket).get())
            }
            try dataplane.steer(
                port: port.rawValue, function: function.rawValue, socket: sockets[0], owner: getpid(), kind: .gateway)
        } catch {
            try? dataplane.release(port: port.rawValue)
            for socket in unbound { Glibc.close(socket) }
            for channel in channels { try? await channel.close() }
            throw .bindFailed(what: what, address: display, reason: SystemErrorText.describe(error))
        }
        listeners.withLock { $0[port.rawValue] = channels }
    }

    /// Stops accepting on a port (its function was removed or moved); open connections finish.
    func close(port: UInt16, dataplane: EbpfDataplane?) async {
        let channels = listeners.withLock { $0.removeValue(forKey: port) }
        homes.withLock { _ = $0.loops.removeValue(forKey: port) }
        guard let channels else { return }
        try? dataplane?.release(port: port)
        for channel in channels { try? await channel.close() }
    }

    /// Handing over to a successor: responses close their connections from now on, and with
    /// `dataplane: sockets` this gateway stops accepting (the successor accepts on the same
    /// sockets); with eBPF nothing new arrives once the data plane detached.
    func handOver(dataplane: EbpfDataplane?) async {
        routes.handingOver.store(true, ordering: .releasing)
        guard dataplane == nil else { return }
        let channels = listeners.withLock { listeners in
            defer { listeners = [:] }
            return listeners.values.flatMap { $0 }
        }
        for channel in channels { try? await channel.close() }
    }

    func closeAll(dataplane: EbpfDataplane?) async {
        for port in boundPorts { await close(port: port, dataplane: dataplane) }
    }
}
