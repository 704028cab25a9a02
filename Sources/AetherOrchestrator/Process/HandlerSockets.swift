import AetherCore
import AetherIPC
import AetherNet
import AetherSystem
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The TCP sockets of a process handler, seen from outside (`dataplane: ebpf`): its listening
/// socket is taken with pidfd_getfd and put in the data plane's socket map, and a retiring
/// generation is stopped only once its connections are done.
enum HandlerSockets {
    /// A copy of the listening TCP socket `pid` has bound to `port`.
    static func takeListeningSocket(pid: pid_t, port: UInt16) throws(SystemCallFailure) -> OwnedDescriptor {
        let process = try OwnedDescriptor("pidfd_open", on: "pid \(pid)") { aether_pidfd_open(pid) }
        for descriptor in socketDescriptors(of: pid) {
            let copy = try OwnedDescriptor("pidfd_getfd", on: "pid \(pid) fd \(descriptor)") {
                aether_pidfd_getfd(process.rawValue, descriptor)
            }
            if ListeningSocket.isListeningTCP(copy.rawValue) && ListeningSocket.localPort(of: copy.rawValue) == port {
                return copy
            }
        }
        throw SystemCallFailure(call: "listen", subject: "pid \(pid) on port \(port)", errno: ENOENT)
    }

    /// Connections `pid` still has to serve: its established TCP connections plus those waiting
    /// in its listening sockets' accept queues (/proc/net/tcp shows a listener's queue length
    /// as rx_queue).
    static func pendingConnections(of pid: pid_t) -> Int {
        let inodes = Set(socketInodes(of: pid))
        guard !inodes.isEmpty else { return 0 }
        var pending = 0
        for table in ["tcp", "tcp6"] {
            guard let text = Posix.readFile("/proc/\(pid)/net/\(table)") else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 9, let inode = UInt64(fields[9]), inodes.contains(inode) else { continue }
                switch fields[3] {
                case "01":  // ESTABLISHED
                    pending += 1
                case "0A":  // LISTEN: tx_queue:rx_queue, rx_queue = connections not yet accepted
                    let queue = fields[4].split(separator: ":").last.flatMap { Int($0, radix: 16) } ?? 0
                    pending += queue
                default:
                    continue
                }
            }
        }
        return pending
    }

    /// Descriptor numbers of `pid` that are sockets.
    private static func socketDescriptors(of pid: pid_t) -> [CInt] {
        socketLinks(of: pid).map(\.descriptor)
    }

    private static func socketInodes(of pid: pid_t) -> [UInt64] {
        socketLinks(of: pid).compactMap { UInt64($0.target.dropFirst("socket:[".count).dropLast()) }
    }

    private static func socketLinks(of pid: pid_t) -> [(descriptor: CInt, target: String)] {
        let folder = "/proc/\(pid)/fd"
        return (Posix.entries(of: folder) ?? []).compactMap { entry in
            guard let descriptor = CInt(entry.name) else { return nil }
            var buffer = [CChar](repeating: 0, count: 64)
            let length = readlink("\(folder)/\(entry.name)", &buffer, buffer.count - 1)
            guard length > 0 else { return nil }
            let target = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return target.hasPrefix("socket:[") ? (descriptor, target) : nil
        }.sorted { $0.descriptor < $1.descriptor }
    }
}
