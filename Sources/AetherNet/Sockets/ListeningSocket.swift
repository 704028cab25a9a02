public import AetherCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// TCP listening sockets made by hand rather than by SwiftNIO, because the data plane needs
/// their descriptors: sk_lookup steers a trigger port to a socket bound elsewhere.
public enum ListeningSocket {
    /// A non-blocking, close-on-exec TCP socket bound to `address`:`port` (0: the kernel picks
    /// a free port) and listening. The caller owns the descriptor.
    public static func open(address: String, port: UInt16, backlog: Int32 = 1024) throws(SystemCallFailure) -> CInt {
        let subject = "\(address.contains(":") ? "[\(address)]" : address):\(port)"
        let family = address.contains(":") ? AF_INET6 : AF_INET
        let descriptor = socket(
            family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw SystemCallFailure(call: "socket", subject: subject, errno: errno) }
        var one: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        do throws(SystemCallFailure) {
            try bind(descriptor, address: address, port: port, subject: subject)
            guard listen(descriptor, backlog) == 0 else {
                throw SystemCallFailure(call: "listen", subject: subject, errno: errno)
            }
        } catch {
            close(descriptor)
            throw error
        }
        return descriptor
    }

    /// A TCP socket bound to `address`:`port` but not listening: it accepts nothing (sk_lookup
    /// steers the port's connections elsewhere) but keeps anyone else from binding the port,
    /// who would otherwise be silently shadowed by the steering. No SO_REUSEADDR, so any other
    /// bind of the port fails. The caller owns the descriptor.
    public static func reserve(address: String, port: UInt16) throws(SystemCallFailure) -> CInt {
        let subject = "\(address.contains(":") ? "[\(address)]" : address):\(port)"
        let family = address.contains(":") ? AF_INET6 : AF_INET
        let descriptor = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw SystemCallFailure(call: "socket", subject: subject, errno: errno) }
        do {
            try bind(descriptor, address: address, port: port, subject: subject)
        } catch {
            close(descriptor)
            throw error
        }
        return descriptor
    }

    /// A port the kernel considers free on `address` right now (bound to 0, read back, closed).
    /// Another process may take it before it is used; callers pass it to a handler that binds
    /// it moments later.
    public static func freePort(address: String) throws(SystemCallFailure) -> UInt16 {
        let descriptor = try open(address: address, port: 0, backlog: 1)
        defer { close(descriptor) }
        guard let port = localPort(of: descriptor) else {
            throw SystemCallFailure(call: "getsockname", subject: address, errno: errno)
        }
        return port
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

    private static func bind(
        _ descriptor: CInt, address: String, port: UInt16, subject: String
    ) throws(SystemCallFailure) {
        var result: Int32
        if address.contains(":") {
            var socketAddress = sockaddr_in6()
            socketAddress.sin6_family = sa_family_t(AF_INET6)
            socketAddress.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, address, &socketAddress.sin6_addr) == 1 else {
                throw SystemCallFailure(call: "inet_pton", subject: address, errno: EINVAL)
            }
            result = withUnsafePointer(to: &socketAddress) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        } else {
            var socketAddress = sockaddr_in()
            socketAddress.sin_family = sa_family_t(AF_INET)
            socketAddress.sin_port = port.bigEndian
            guard inet_pton(AF_INET, address, &socketAddress.sin_addr) == 1 else {
                throw SystemCallFailure(call: "inet_pton", subject: address, errno: EINVAL)
            }
            result = withUnsafePointer(to: &socketAddress) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        if result != 0 { throw SystemCallFailure(call: "bind", subject: subject, errno: errno) }
    }
}
