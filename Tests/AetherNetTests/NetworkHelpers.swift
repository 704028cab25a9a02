import AetherSystem
import CLibBPF
import Foundation

/// Whether this process runs in a private network namespace (`unshare -n`): one whose only
/// interfaces are `lo` and the test's own `aeth*` veths (/proc/self/net/dev lists those of our
/// namespace). The host's namespace has real interfaces.
enum PrivateNetwork {
    static var isPrivate: Bool {
        guard let text = try? String(contentsOfFile: "/proc/self/net/dev", encoding: .utf8) else { return false }
        let names = text.split(separator: "\n").dropFirst(2).compactMap {
            $0.split(separator: ":").first?.trimmingCharacters(in: .whitespaces)
        }
        return names.allSatisfy { $0 == "lo" || $0.hasPrefix("aeth") }
    }
}

/// Blocking TCP client and server calls for tests. Connections are owned descriptors: closed
/// when the test lets go of them.
enum TCP {
    struct Refused: Error {}
    struct TimedOut: Error {}
    /// The peer closed the connection, or took fewer bytes than sent.
    struct Cut: Error {}

    static func connect(
        _ address: String, _ port: UInt16, timeoutMilliseconds: Int32 = 5000
    ) throws -> OwnedDescriptor {
        let subject = "\(address):\(port)"
        let socket = try OwnedDescriptor("socket", on: subject) {
            Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        }
        do throws(SystemCallFailure) {
            try systemCall("connect", on: subject, failsWith: .minusOne, retryOnInterrupt: false) {
                IPv4.withAddress(address, port) { Glibc.connect(socket.rawValue, $0, $1) }
            }
        } catch {
            // EINPROGRESS: the connection completes in the background; it is waited for below.
            if error.errno == ECONNREFUSED { throw Refused() }
            if error.errno != EINPROGRESS { throw error }
        }
        var poll = pollfd(fd: socket.rawValue, events: Int16(POLLOUT), revents: 0)
        guard Glibc.poll(&poll, 1, timeoutMilliseconds) == 1 else { throw TimedOut() }
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(socket.rawValue, SOL_SOCKET, SO_ERROR, &code, &length)
        if code != 0 {
            throw code == ECONNREFUSED
                ? Refused() as any Error : SystemCallFailure(call: "connect", subject: subject, errno: code)
        }
        let flags = fcntl(socket.rawValue, F_GETFL)
        _ = fcntl(socket.rawValue, F_SETFL, flags & ~O_NONBLOCK)
        return socket
    }

    static func accept(_ listener: Int32, timeoutMilliseconds: Int32 = 5000) throws -> OwnedDescriptor {
        var poll = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&poll, 1, timeoutMilliseconds) == 1 else { throw TimedOut() }
        return try OwnedDescriptor("accept", on: "listener \(listener)") { Glibc.accept(listener, nil, nil) }
    }

    /// Accepts connections on a listening socket forever, answering each with "ok".
    static func acceptAndAnswer(_ listener: Int32) {
        while true {
            guard let connection = try? accept(listener, timeoutMilliseconds: 60_000) else { return }
            _ = try? send(connection, "ok")
        }
    }

    static func send(_ connection: borrowing OwnedDescriptor, _ text: String) throws {
        let sent = try systemCall("send", on: "a test connection", failsWith: .minusOne) {
            Glibc.send(connection.rawValue, text, text.utf8.count, Int32(MSG_NOSIGNAL))
        }
        if sent != text.utf8.count { throw Cut() }
    }

    static func receive(_ connection: borrowing OwnedDescriptor, count: Int) throws -> String {
        var buffer = [UInt8](repeating: 0, count: count)
        var received = 0
        while received < count {
            let read = try systemCall("recv", on: "a test connection", failsWith: .minusOne) {
                buffer.withUnsafeMutableBytes {
                    recv(connection.rawValue, $0.baseAddress! + received, count - received, 0)
                }
            }
            if read == 0 { throw Cut() }
            received += read
        }
        return String(decoding: buffer, as: UTF8.self)
    }
}

enum IPv4 {
    /// Calls `body` with `address`:`port` as a `sockaddr` and its length.
    static func withAddress<Result>(
        _ address: String, _ port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Result
    ) -> Result {
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = port.bigEndian
        inet_pton(AF_INET, address, &socketAddress.sin_addr)
        return withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
}

enum UDP {
    static func send(_ payload: [UInt8], to address: String, _ port: UInt16) throws {
        let socket = try OwnedDescriptor("socket", on: "UDP") { Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0) }
        try systemCall("sendto", on: "\(address):\(port)", failsWith: .minusOne) {
            IPv4.withAddress(address, port) { sendto(socket.rawValue, payload, payload.count, 0, $0, $1) }
        }
    }
}

/// Every bpf_link in the kernel now (what `bpftool link` lists).
enum KernelLinks {
    static func ids() -> Set<UInt32> {
        var ids: Set<UInt32> = []
        var id: UInt32 = 0
        while bpf_link_get_next_id(id, &id) == 0 { ids.insert(id) }
        return ids
    }
}
