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
        guard let handle = try? systemCall("opendir", on: path, failsWith: .null, { opendir(path) }) else {
            return nil
        }
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
        guard let file = try? OwnedDescriptor.open(path, O_RDONLY | O_CLOEXEC) else { return nil }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = try? systemCall("read", on: path, failsWith: .minusOne) {
                chunk.withUnsafeMutableBytes { read(file.rawValue, $0.baseAddress, $0.count) }
            }
            guard let count, count > 0 else { break }
            bytes += chunk[..<count]
        }
        return bytes
    }

    package static func readFile(_ path: String) -> String? {
        readBytes(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A connected, close-on-exec Unix stream socket. The caller owns the descriptor: the
    /// orchestrator's control client closes it after one request, a handler keeps it for life.
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
        let socket = try OwnedDescriptor("socket", on: path) {
            Glibc.socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        }
        try systemCall("connect", on: path, failsWith: .minusOne, retryOnInterrupt: false) {
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(socket.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        return socket.take()
    }
}
