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

/// Blocking TCP client and server calls for tests.
enum TCP {
    struct Refused: Error {}
    struct TimedOut: Error {}
    struct Failed: Error, CustomStringConvertible {
        let call: String
        let code: Int32
        var description: String { "\(call): \(String(cString: strerror(code)))" }
    }

    static func connect(_ address: String, _ port: UInt16, timeoutMilliseconds: Int32 = 5000) throws -> Int32 {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        let result = IPv4.withAddress(address, port) { Glibc.connect(descriptor, $0, $1) }
        if result != 0 && errno != EINPROGRESS {
            let code = errno
            close(descriptor)
            throw code == ECONNREFUSED ? Refused() as any Error : Failed(call: "connect", code: code)
        }
        var poll = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
        guard Glibc.poll(&poll, 1, timeoutMilliseconds) == 1 else {
            close(descriptor)
            throw TimedOut()
        }
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &code, &length)
        if code != 0 {
            close(descriptor)
            throw code == ECONNREFUSED ? Refused() as any Error : Failed(call: "connect", code: code)
        }
        let flags = fcntl(descriptor, F_GETFL)
        _ = fcntl(descriptor, F_SETFL, flags & ~O_NONBLOCK)
        return descriptor
    }

    static func accept(_ listener: Int32, timeoutMilliseconds: Int32 = 5000) throws -> Int32 {
        var poll = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&poll, 1, timeoutMilliseconds) == 1 else { throw TimedOut() }
        let connection = Glibc.accept(listener, nil, nil)
        guard connection >= 0 else { throw Failed(call: "accept", code: errno) }
        return connection
    }

    /// Accepts connections on a listening socket forever, answering each with "ok".
    static func acceptAndAnswer(_ listener: Int32) {
        while true {
            guard let connection = try? accept(listener, timeoutMilliseconds: 60_000) else { return }
            _ = try? send(connection, "ok")
            close(connection)
        }
    }

    static func send(_ descriptor: Int32, _ text: String) throws {
        let sent = Glibc.send(descriptor, text, text.utf8.count, Int32(MSG_NOSIGNAL))
        if sent != text.utf8.count { throw Failed(call: "send", code: errno) }
    }

    static func receive(_ descriptor: Int32, count: Int) throws -> String {
        var buffer = [UInt8](repeating: 0, count: count)
        var received = 0
        while received < count {
            let read = buffer.withUnsafeMutableBytes {
                recv(descriptor, $0.baseAddress! + received, count - received, 0)
            }
            if read <= 0 { throw Failed(call: "recv", code: read == 0 ? ECONNRESET : errno) }
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
        let descriptor = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(descriptor) }
        let sent = IPv4.withAddress(address, port) { sendto(descriptor, payload, payload.count, 0, $0, $1) }
        if sent != payload.count { throw TCP.Failed(call: "sendto", code: errno) }
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
