package import AetherCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Small POSIX chores shared by the orchestrator, the handler SDK and the ring: listing a
/// folder, reading a small file, and connecting to a Unix stream socket.
package enum Posix {
    package struct DirectoryEntry {
        package let name: String
        package let isDirectory: Bool
    }

    /// The entries of a folder, without `.` and `..`; nil if it cannot be opened.
    package static func entries(of path: String) -> [DirectoryEntry]? {
        guard let handle = opendir(path) else { return nil }
        defer { closedir(handle) }
        var entries: [DirectoryEntry] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name != ".", name != ".." else { continue }
            entries.append(DirectoryEntry(name: name, isDirectory: entry.pointee.d_type == UInt8(DT_DIR)))
        }
        return entries
    }

    /// A whole (small) file: /proc and cgroup files, criu's logs and caches. Nil if unreadable.
    package static func readBytes(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            bytes += chunk[..<n]
        }
        return bytes
    }

    package static func readFile(_ path: String) -> String? {
        readBytes(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A connected, close-on-exec Unix stream socket.
    package static func connectUnixSocket(_ path: String) throws(SystemCallFailure) -> CInt {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemCallFailure(call: "connect", subject: path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemCallFailure(call: "socket", subject: path, errno: errno) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            throw SystemCallFailure(call: "connect", subject: path, errno: code)
        }
        return fd
    }
}

/// Blocking line I/O on a handler control connection (docs/handler-protocol.md): the
/// orchestrator's side for restored copies, and the Swift handler runtime's side.
package enum ControlLine {
    package struct Failure: Error, CustomStringConvertible {
        package let description: String
    }

    package static func write(_ fd: CInt, _ text: String) throws(Failure) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw Failure(
                    description: "cannot write to the control connection: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }

    /// One line without its newline; at most 4096 bytes. `timeout` nil waits for ever.
    package static func read(_ fd: CInt, timeout: Duration?) throws(Failure) -> String {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var line: [UInt8] = []
        while line.count <= 4096 {
            var milliseconds: CInt = -1
            if let deadline, let timeout {
                let left = deadline - ContinuousClock.now
                guard left > .zero else { throw Failure(description: "no answer within \(timeout)") }
                milliseconds = CInt(
                    max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, milliseconds)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { continue }
            var byte: UInt8 = 0
            let n = recv(fd, &byte, 1, 0)
            if n < 0 && errno == EINTR { continue }
            guard n == 1 else { throw Failure(description: "the control connection was closed") }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        throw Failure(description: "a line longer than 4096 bytes")
    }
}
