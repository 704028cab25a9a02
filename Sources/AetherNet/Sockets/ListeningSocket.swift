public import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// TCP listening sockets made by hand rather than by SwiftNIO, because the data plane needs
/// their descriptors: sk_lookup steers a trigger port to a socket bound elsewhere.
public enum ListeningSocket {
    /// A non-blocking, close-on-exec TCP socket bound to `address`:`port` (0: the kernel picks
    /// a free port) and listening. The caller owns the descriptor: the gateway hands it to
    /// SwiftNIO, which closes it with the channel.
    public static func open(address: String, port: UInt16, backlog: Int32 = 1024) throws(SystemCallFailure) -> CInt {
        try listening(
            boundSocket(address: address, port: port, nonBlocking: true, reuseAddress: true), backlog,
            subject: display(address: address, port: port))
    }

    /// `count` sockets as `open` makes them, in one SO_REUSEPORT group on one free port of
    /// `address`: the kernel hands each new connection to one of them (by a hash of its
    /// addresses), also when sk_lookup steers the connection to any member (its program does not
    /// ask for BPF_SK_LOOKUP_F_NO_REUSEPORT). The gateway gives each event loop its own, so a
    /// connection is accepted and served on one thread. Only sockets of the same effective uid
    /// can join a group: confined handlers cannot.
    public static func openGroup(
        address: String, count: Int, backlog: Int32 = 1024
    ) throws(SystemCallFailure)
        -> [CInt]
    {
        var sockets: [CInt] = []
        do throws(SystemCallFailure) {
            // The first is bound without SO_REUSEPORT, so the port the kernel picks is one no
            // other group holds (a port 0 bind may share a port with a reuseport socket of the
            // same uid); the option is set before listen, which is where the group forms.
            let first = try boundSocket(address: address, port: 0, nonBlocking: true, reuseAddress: true)
            guard let port = localPort(of: first.rawValue) else {
                throw SystemCallFailure(call: "getsockname", subject: address, errno: errno)
            }
            let subject = display(address: address, port: port)
            try reusePort(first.rawValue, subject: subject)
            sockets.append(try listening(first, backlog, subject: subject))
            for _ in 1..<max(1, count) {
                let socket = try boundSocket(
                    address: address, port: port, nonBlocking: true, reuseAddress: true, reusePort: true)
                sockets.append(try listening(socket, backlog, subject: subject))
            }
        } catch {
            for socket in sockets { Glibc.close(socket) }
            throw error
        }
        return sockets
    }

    private static func reusePort(_ descriptor: CInt, subject: String) throws(SystemCallFailure) {
        var one: Int32 = 1
        try systemCall("setsockopt(SO_REUSEPORT)", on: subject, failsWith: .minusOne) {
            setsockopt(descriptor, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    private static func listening(
        _ socket: consuming OwnedDescriptor, _ backlog: Int32, subject: String
    ) throws(SystemCallFailure) -> CInt {
        try systemCall("listen", on: subject, failsWith: .minusOne) { listen(socket.rawValue, backlog) }
        return socket.take()
    }

    /// A TCP socket holding `address`:`port` for the data plane: bound with SO_REUSEADDR (so a
    /// connection in TIME_WAIT from a previous run does not keep `aether up` from starting) and
    /// listening (so no other socket can bind the port, SO_REUSEADDR or not, and be silently
    /// shadowed by the steering). It never accepts: sk_lookup steers the port's connections to
    /// the function's socket, or drops their SYNs while it has none. The port is held while the
    /// descriptor lives.
    public static func reserve(address: String, port: UInt16) throws(SystemCallFailure) -> OwnedDescriptor {
        let socket = try boundSocket(address: address, port: port, nonBlocking: true, reuseAddress: true)
        // A classic BPF filter that keeps nothing (`ret #0`): a SYN that reaches the hold socket
        // is discarded before TCP sees it, without a reset, and the client sends it again.
        var program: [UInt64] = [0x06]  // BPF_RET | BPF_K, k = 0
        let attached = program.withUnsafeMutableBytes { instructions -> CInt in
            // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
            let fprog: [UInt64] = [1, UInt64(UInt(bitPattern: instructions.baseAddress))]
            return fprog.withUnsafeBytes {
                setsockopt(socket.rawValue, SOL_SOCKET, SO_ATTACH_FILTER, $0.baseAddress, socklen_t($0.count))
            }
        }
        if attached != 0 {
            throw SystemCallFailure(
                call: "setsockopt(SO_ATTACH_FILTER)", subject: display(address: address, port: port), errno: errno)
        }
        try systemCall("listen", on: display(address: address, port: port), failsWith: .minusOne) {
            listen(socket.rawValue, 1)
        }
        return socket
    }

    /// A port the kernel considers free on `address` right now (bound to 0, read back, closed).
    /// Another process may take it before it is used; callers pass it to a handler that binds
    /// it moments later.
    public static func freePort(address: String) throws(SystemCallFailure) -> UInt16 {
        let socket = try boundSocket(address: address, port: 0, nonBlocking: false, reuseAddress: false)
        guard let port = localPort(of: socket.rawValue) else {
            throw SystemCallFailure(call: "getsockname", subject: address, errno: errno)
        }
        return port
    }

    /// `address`:`port` as people write it (`[::1]:8080` for IPv6).
    public static func display(address: String, port: UInt16) -> String {
        address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    /// The local port a socket is bound to.
    public static func localPort(of descriptor: CInt) -> UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard result == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
        default:
            return nil
        }
    }

    /// Whether the descriptor is a listening TCP socket.
    public static func isListeningTCP(_ descriptor: CInt) -> Bool {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0, value == 1 else { return false }
        length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_PROTOCOL, &value, &length) == 0 else { return false }
        return value == Int32(IPPROTO_TCP)
    }

    /// The IPv4 address in network byte order (what sk_lookup's `local_ip4` holds), nil for
    /// anything else.
    public static func ipv4NetworkOrder(_ address: String) -> UInt32? {
        var parsed = in_addr()
        guard inet_pton(AF_INET, address, &parsed) == 1 else { return nil }
        return parsed.s_addr
    }

    /// A close-on-exec TCP socket bound to `address`:`port` (closed again if the bind fails).
    private static func boundSocket(
        address: String, port: UInt16, nonBlocking: Bool, reuseAddress: Bool, reusePort: Bool = false
    ) throws(SystemCallFailure) -> OwnedDescriptor {
        let subject = display(address: address, port: port)
        let ipv6 = address.contains(":")
        var flags = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        if nonBlocking { flags |= Int32(SOCK_NONBLOCK.rawValue) }
        let socket = try OwnedDescriptor("socket", on: subject) { Glibc.socket(ipv6 ? AF_INET6 : AF_INET, flags, 0) }
        if reuseAddress {
            var one: Int32 = 1
            setsockopt(socket.rawValue, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        if reusePort { try Self.reusePort(socket.rawValue, subject: subject) }
        // The address in the family's own sockaddr, passed to bind as a generic one.
        func bind<Address>(_ descriptor: CInt, _ socketAddress: Address) throws(SystemCallFailure) {
            try systemCall("bind", on: subject, failsWith: .minusOne) {
                withUnsafePointer(to: socketAddress) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        Glibc.bind(descriptor, $0, socklen_t(MemoryLayout<Address>.size))
                    }
                }
            }
        }
        if ipv6 {
            var socketAddress = sockaddr_in6()
            socketAddress.sin6_family = sa_family_t(AF_INET6)
            socketAddress.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, address, &socketAddress.sin6_addr) == 1 else {
                throw SystemCallFailure(call: "inet_pton", subject: address, errno: EINVAL)
            }
            try bind(socket.rawValue, socketAddress)
        } else {
            var socketAddress = sockaddr_in()
            socketAddress.sin_family = sa_family_t(AF_INET)
            socketAddress.sin_port = port.bigEndian
            guard inet_pton(AF_INET, address, &socketAddress.sin_addr) == 1 else {
                throw SystemCallFailure(call: "inet_pton", subject: address, errno: EINVAL)
            }
            try bind(socket.rawValue, socketAddress)
        }
        return socket
    }
}
