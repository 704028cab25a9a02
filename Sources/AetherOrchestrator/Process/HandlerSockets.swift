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
    /// (`pid` and the processes under it: a confined handler runs under the sandbox's init.)
    static func takeListeningSocket(pid: pid_t, port: UInt16) throws(SystemCallFailure) -> OwnedDescriptor {
        for owner in processTree(of: pid) {
            guard let process = try? OwnedDescriptor("pidfd_open", on: "pid \(owner)", { aether_pidfd_open(owner) })
            else { continue }
            for link in socketLinks(of: owner) {
                guard
                    let copy = try? OwnedDescriptor(
                        "pidfd_getfd", on: "pid \(owner) fd \(link.descriptor)",
                        { aether_pidfd_getfd(process.rawValue, link.descriptor) })
                else { continue }
                if ListeningSocket.isListeningTCP(copy.rawValue) && ListeningSocket.localPort(of: copy.rawValue) == port
                {
                    return copy
                }
            }
        }
        throw SystemCallFailure(call: "listen", subject: "pid \(pid) on port \(port)", errno: ENOENT)
    }

    /// `pid` and its descendants (/proc/PID/task/PID/children), parents first.
    static func processTree(of pid: pid_t) -> [pid_t] {
        var tree = [pid]
        var index = 0
        while index < tree.count, tree.count < 4096 {
            let parent = tree[index]
            let children = Posix.readFile("/proc/\(parent)/task/\(parent)/children") ?? ""
            tree += children.split(separator: " ").compactMap { pid_t($0.filter { $0 != "\n" }) }
            index += 1
        }
        return tree
    }

    /// Connections `pid` still has to serve: its established TCP connections plus those waiting
    /// in its listening sockets' accept queues (/proc/net/tcp shows a listener's queue length
    /// as rx_queue).
    static func pendingConnections(of pid: pid_t) -> Int {
        let inodes = Set(processTree(of: pid).flatMap { socketInodes(of: $0) })
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

    /// `timeout_ms` for a process handler, whose connections the orchestrator does not carry:
    /// on each of `pid`'s established TCP connections whose last data came in (a request) at
    /// least `milliseconds` ago with nothing sent back since, writes `answer` (a complete 504
    /// response) through a copy of the socket (pidfd_getfd) and shuts the connection down.
    /// An idle keep-alive connection (answered, then quiet) is left alone.
    /// Returns how many it answered.
    static func answerOverdueRequests(of pid: pid_t, olderThan milliseconds: Int, answer: [UInt8]) -> Int {
        var answered = 0
        var seen: Set<String> = []
        for owner in processTree(of: pid) {
            answered += answerOverdueRequests(ofOne: owner, olderThan: milliseconds, answer: answer, seen: &seen)
        }
        return answered
    }

    /// `answerOverdueRequests` for one process; `seen`: the sockets already looked at (a
    /// connection shared by a parent and its child is answered once).
    private static func answerOverdueRequests(
        ofOne pid: pid_t, olderThan milliseconds: Int, answer: [UInt8], seen: inout Set<String>
    ) -> Int {
        guard let process = try? OwnedDescriptor("pidfd_open", on: "pid \(pid)", { aether_pidfd_open(pid) }) else {
            return 0
        }
        var answered = 0
        for link in socketLinks(of: pid) where seen.insert(link.target).inserted {
            let descriptor = link.descriptor
            guard
                let copy = try? OwnedDescriptor(
                    "pidfd_getfd", on: "pid \(pid) fd \(descriptor)",
                    { aether_pidfd_getfd(process.rawValue, descriptor) })
            else { continue }
            var state: CInt = 0
            var sinceReceived: UInt32 = 0
            var sinceSent: UInt32 = 0
            var received: UInt64 = 0
            var sent: UInt64 = 0
            guard
                aether_tcp_activity(copy.rawValue, &state, &sinceReceived, &sinceSent, &received, &sent) == 0,
                state == 1,  // TCP_ESTABLISHED
                received > 0, Int(sinceReceived) >= milliseconds,
                // Waiting for an answer: it never answered anything, or it has received since it
                // last sent (a tie, within one jiffy, is taken as answered: never a false 504).
                sent == 0 || sinceReceived < sinceSent
            else { continue }
            _ = answer.withUnsafeBytes {
                send(copy.rawValue, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            shutdown(copy.rawValue, CInt(SHUT_RDWR))
            answered += 1
        }
        return answered
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
