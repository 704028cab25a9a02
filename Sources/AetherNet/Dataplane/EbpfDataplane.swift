public import AetherCore
public import AetherSystem
import CLibBPF
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where the XDP counter program is attached (`xdp_interface`, `xdp_mode`).
public struct XDPAttachment: Sendable, Equatable {
    public var interface: String
    public var mode: OrchestratorConfig.XDPMode

    public init(interface: String, mode: OrchestratorConfig.XDPMode) {
        self.interface = interface
        self.mode = mode
    }
}

/// The orchestrator's eBPF data plane (`dataplane: ebpf`), the "trigger port -> handler" table
/// of the seed, kept in the kernel:
/// - `aether_dispatch` (sk_lookup, linked to our network namespace) hands each new connection
///   to a trigger port to the listening socket in `dispatch_sockets`: the gateway's socket for
///   an sdk function, the handler's own socket for a process handler. Nothing needs to be
///   bound to the trigger port itself, and (re)deploying is one map update.
/// - `aether_xdp` (optional, linked to one interface) counts packets and bytes per mapped port
///   and drops new connections to ports marked so.
/// All attachments are bpf_links owned by this object: they go away with the process.
public final class EbpfDataplane: @unchecked Sendable {
    private struct Entry {
        var function: String
        var pid: Int32
        var socket: EbpfStatus.SocketOwner
        var dropsNewConnections: Bool
    }

    /// The socket holding a trigger port (`ListeningSocket.reserve`): the port is free again once
    /// this goes. (A class, because dictionaries hold copyable values only.)
    private final class PortHold {
        let socket: OwnedDescriptor

        init(_ socket: consuming OwnedDescriptor) {
            self.socket = socket
        }
    }

    private struct State {
        var object: BPFObject?
        var links: [BPFLink]
        var entries: [UInt16: Entry] = [:]
        var reservations: [UInt16: PortHold] = [:]
    }

    private let state: Mutex<State>
    private let sockets: BPFMap
    private let targets: BPFMap
    private let counters: BPFMap
    private let ipv4Filter: UInt32
    public let listenAddress: String

    /// Loads the programs and attaches them. `listenAddress`: only connections to this address
    /// are steered (all addresses for 0.0.0.0 or ::).
    public init(listenAddress: String, xdp: XDPAttachment?) throws(EbpfError) {
        let object = try BPFObject(.dataplane)
        sockets = try object.map("dispatch_sockets")
        targets = try object.map("port_redirect_map")
        counters = try object.map("port_counters")
        self.listenAddress = listenAddress
        ipv4Filter =
            listenAddress == "0.0.0.0" || listenAddress == "::"
            ? 0 : ListeningSocket.ipv4NetworkOrder(listenAddress) ?? 0
        try object.map("dispatch_settings").update(
            UInt32(0), aether_dispatch_settings(ipv4_address: ipv4Filter, reserved: 0))

        var links: [BPFLink] = []
        let namespace: OwnedDescriptor
        do throws(SystemCallFailure) {
            namespace = try OwnedDescriptor.open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)
        } catch {
            throw .attachFailed(
                program: "aether_dispatch", target: "this network namespace",
                reason: "open /proc/self/ns/net: \(error.reason)")
        }
        var information = stat()
        fstat(namespace.rawValue, &information)
        links.append(
            try BPFLink(
                program: "aether_dispatch", programDescriptor: object.programDescriptor("aether_dispatch"),
                target: "network namespace net:[\(information.st_ino)]", targetDescriptor: namespace.rawValue,
                type: AETHER_ATTACH_SK_LOOKUP, flags: 0))
        if let xdp { links.append(try Self.xdpLink(xdp, object: object)) }
        state = Mutex(State(object: object, links: links))
    }

    private static func xdpLink(_ xdp: XDPAttachment, object: BPFObject) throws(EbpfError) -> BPFLink {
        let index = if_nametoindex(xdp.interface)
        guard index != 0 else {
            throw .attachFailed(
                program: "aether_xdp", target: "interface \(xdp.interface)",
                reason: "no such network interface in this namespace")
        }
        return try BPFLink(
            program: "aether_xdp", programDescriptor: object.programDescriptor("aether_xdp"),
            target: "interface \(xdp.interface) (\(xdp.mode.rawValue) XDP)", targetDescriptor: Int32(index),
            type: AETHER_ATTACH_XDP,
            flags: xdp.mode == .generic ? AETHER_XDP_FLAGS_GENERIC : AETHER_XDP_FLAGS_NATIVE)
    }

    /// Attaches the XDP program to an interface later than at load (a successor orchestrator,
    /// once its predecessor's XDP program is gone: an interface takes one).
    public func attachXDP(_ xdp: XDPAttachment) throws(EbpfError) {
        try state.withLock { state throws(EbpfError) in
            guard let object = state.object else { return }
            state.links.append(try Self.xdpLink(xdp, object: object))
        }
    }

    /// Whether the data plane's programs load here (verifier included), without attaching them:
    /// what `aether doctor` reports.
    public static func probe() throws(EbpfError) -> String {
        _ = try BPFObject(.dataplane)
        return "sk_lookup and XDP programs load (libbpf \(libbpf_major_version()).\(libbpf_minor_version()))"
    }

    /// Takes `port` on the listen address for a function before it is steered, as a bind would:
    /// fails if another socket (another program, another orchestrator) has it, and keeps others
    /// from binding it later. Reserving a port already reserved here does nothing. `adopting`:
    /// the hold socket of the orchestrator this one takes over from (`aether restart`), instead
    /// of a bind that would fail while it runs.
    public func reserve(port: UInt16, adopting: consuming OwnedDescriptor? = nil) throws(SystemCallFailure) {
        var adopted: CInt?
        if let socket = adopting.take() { adopted = socket.take() }
        try state.withLock { state throws(SystemCallFailure) in
            guard state.reservations[port] == nil else {
                if let adopted { Glibc.close(adopted) }
                return
            }
            if let adopted {
                state.reservations[port] = PortHold(OwnedDescriptor(owning: adopted))
            } else {
                state.reservations[port] = PortHold(try ListeningSocket.reserve(address: listenAddress, port: port))
            }
            // Held from now on: until a socket is steered to it, sk_lookup drops its SYNs (the
            // client retries) rather than refusing them or queueing them on the hold socket.
            do throws(EbpfError) {
                try targets.update(
                    UInt32(port), aether_port_target(pid: 0, ipv4_address: ipv4Filter, flags: 0, reserved: 0))
                if counters.lookupAllCPUs(UInt32(port), as: aether_port_counters.self) == nil {
                    try counters.updateAllCPUs(UInt32(port), aether_port_counters())
                }
            } catch {
                state.reservations[port] = nil
                throw SystemCallFailure(call: "bpf_map_update_elem", subject: "port_redirect_map[\(port)]", errno: EIO)
            }
        }
    }

    /// Sends new connections to `port` to the listening socket `descriptor` (the map holds the
    /// socket; the caller may close its descriptor). Replaces what the port pointed to before
    /// in one map update, so no connection in between is refused.
    public func steer(
        port: UInt16, function: String, socket descriptor: CInt, owner pid: Int32, kind: EbpfStatus.SocketOwner
    )
        throws(EbpfError)
    {
        try state.withLock { state throws(EbpfError) in
            let drops = state.entries[port]?.dropsNewConnections ?? false
            try sockets.update(
                aether_dispatch_key(protocol: UInt32(IPPROTO_TCP), port: UInt32(port)), UInt64(descriptor))
            try targets.update(
                UInt32(port),
                aether_port_target(
                    pid: UInt32(bitPattern: pid), ipv4_address: ipv4Filter,
                    flags: drops ? AETHER_PORT_DROP_NEW_CONNECTIONS : 0, reserved: 0))
            if counters.lookupAllCPUs(UInt32(port), as: aether_port_counters.self) == nil {
                try counters.updateAllCPUs(UInt32(port), aether_port_counters())
            }
            state.entries[port] = Entry(function: function, pid: pid, socket: kind, dropsNewConnections: drops)
        }
    }

    /// Stops steering `port`, forgets its counters and gives the port back (the function was
    /// removed or moved).
    public func release(port: UInt16) throws(EbpfError) {
        try state.withLock { state throws(EbpfError) in
            state.reservations[port] = nil
            try sockets.delete(aether_dispatch_key(protocol: UInt32(IPPROTO_TCP), port: UInt32(port)))
            try targets.delete(UInt32(port))
            try counters.delete(UInt32(port))
            state.entries[port] = nil
        }
    }

    /// While set, XDP drops new connections (SYN without ACK) to `port`; open ones continue.
    public func setDropsNewConnections(port: UInt16, _ drops: Bool) throws(EbpfError) {
        try state.withLock { state throws(EbpfError) in
            guard var entry = state.entries[port] else { return }
            entry.dropsNewConnections = drops
            try targets.update(
                UInt32(port),
                aether_port_target(
                    pid: UInt32(bitPattern: entry.pid), ipv4_address: ipv4Filter,
                    flags: drops ? AETHER_PORT_DROP_NEW_CONNECTIONS : 0, reserved: 0))
            state.entries[port] = entry
        }
    }

    /// Programs, links, map entries and per-port counters (summed over CPUs), read from the
    /// kernel now.
    public func status() -> EbpfStatus {
        state.withLock { state in
            let steered = Set(sockets.keys(as: aether_dispatch_key.self).map { UInt16(truncatingIfNeeded: $0.port) })
            let ports = state.entries.keys.sorted().map { port in
                let entry = state.entries[port]!
                let perCPU = counters.lookupAllCPUs(UInt32(port), as: aether_port_counters.self) ?? []
                return EbpfStatus.Port(
                    port: port, function: entry.function, pid: entry.pid, socket: entry.socket,
                    inSocketMap: steered.contains(port), dropsNewConnections: entry.dropsNewConnections,
                    packets: perCPU.reduce(0) { $0 + $1.packets }, bytes: perCPU.reduce(0) { $0 + $1.bytes },
                    dropped: perCPU.reduce(0) { $0 + $1.dropped }, steered: perCPU.reduce(0) { $0 + $1.steered },
                    steerFailures: perCPU.reduce(0) { $0 + $1.steer_failures }, held: perCPU.reduce(0) { $0 + $1.held })
            }
            return EbpfStatus(
                listenAddress: listenAddress,
                links: state.links.map {
                    EbpfStatus.Link(program: $0.program, programID: $0.programID, linkID: $0.id, target: $0.target)
                },
                ports: ports)
        }
    }

    /// Detaches the programs but keeps the hold sockets and maps: what an orchestrator handing
    /// over to its successor does (the successor's programs, attached later, take the ports
    /// from then on, and the successor holds the same hold sockets).
    public func detach() {
        state.withLock { $0.links = [] }
    }

    /// Detaches everything and releases the maps (also what happens when the process dies).
    public func close() {
        state.withLock { state in
            state.links = []
            state.entries = [:]
            state.object = nil
            state.reservations = [:]
        }
    }
}

/// What `aether stats` shows of the data plane.
public struct EbpfStatus: Sendable, Codable, Equatable {
    public enum SocketOwner: String, Sendable, Codable {
        /// The orchestrator's gateway socket (sdk functions).
        case gateway
        /// The handler's own listening socket, taken with pidfd_getfd (process handlers).
        case handler
    }

    public struct Link: Sendable, Codable, Equatable {
        public var program: String
        public var programID: UInt32
        public var linkID: UInt32
        public var target: String

        // The control API's JSON is snake_case: `programId` round-trips as `program_id`.
        enum CodingKeys: String, CodingKey {
            case program, target
            case programID = "programId"
            case linkID = "linkId"
        }
    }

    public struct Port: Sendable, Codable, Equatable {
        public var port: UInt16
        public var function: String
        public var pid: Int32
        public var socket: SocketOwner
        /// The socket is in dispatch_sockets now (the kernel drops an entry whose socket closed).
        public var inSocketMap: Bool
        public var dropsNewConnections: Bool
        public var packets: UInt64
        public var bytes: UInt64
        public var dropped: UInt64
        public var steered: UInt64
        public var steerFailures: UInt64
        /// SYNs dropped while the port had no socket (the function was starting, or between a
        /// crashed process handler and its replacement); clients retry them.
        public var held: UInt64
    }

    public var listenAddress: String
    public var links: [Link]
    public var ports: [Port]
}
