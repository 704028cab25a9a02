import AetherSystem
import CAetherSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Waits for every child the orchestrator watches on ONE thread: each watched child is a pidfd
/// in an epoll set; when one becomes readable the process has ended, and that child alone is
/// reaped (`waitpid(pid)`, never `waitpid(-1)`, so code that waits for its own short-lived
/// children, criu's commands say, is not robbed of their status). The shape of
/// swift-subprocess's Linux monitor thread.
///
/// A zombie keeps its PID, so until `willReap` has run nothing else can get that number: the
/// owner marks its process gone there, and signals sent before that reach the right process.
final class ChildReaper: Sendable {
    /// The orchestrator's reaper, started on first use.
    static let shared = ChildReaper()

    private struct Watch: Sendable {
        let pid: pid_t
        let willReap: @Sendable () -> Void
        let reaped: @Sendable (ExitStatus) -> Void
    }

    private let epoll: CInt
    /// pidfd -> what to do when it becomes readable.
    private let watches = Mutex<[CInt: Watch]>([:])

    private init() {
        epoll = aether_epoll_create()
        precondition(
            epoll >= 0,
            "epoll_create1 failed: \(SystemCallFailure(call: "epoll_create1", subject: "child reaper", errno: errno))")
        BackgroundThread.start(name: "reaper") { [self] in run() }
    }

    /// Reaps `pid` (a child of ours) when it ends: `willReap` runs while it is still a zombie,
    /// then `reaped` with its status, both on the reaper thread.
    func watch(
        _ pid: pid_t, willReap: @escaping @Sendable () -> Void = {},
        reaped: @escaping @Sendable (ExitStatus) -> Void = { _ in }
    ) throws(SystemCallFailure) {
        let pidfd = try systemCall("pidfd_open", on: "pid \(pid)", failsWith: .minusOne) { aether_pidfd_open(pid) }
        watches.withLock { $0[pidfd] = Watch(pid: pid, willReap: willReap, reaped: reaped) }
        do {
            try systemCall("epoll_ctl", on: "pidfd of pid \(pid)", failsWith: .minusOne) {
                aether_epoll_add_readable(epoll, pidfd)
            }
        } catch {
            _ = watches.withLock { $0.removeValue(forKey: pidfd) }
            close(pidfd)
            throw error
        }
    }

    private func run() {
        var ready = [CInt](repeating: -1, count: 64)
        while true {
            let count = ready.withUnsafeMutableBufferPointer {
                aether_epoll_wait_descriptors(epoll, $0.baseAddress, CInt($0.count), -1)
            }
            guard count > 0 else { continue }  // EINTR
            for pidfd in ready[..<Int(count)] {
                guard let watch = watches.withLock({ $0.removeValue(forKey: pidfd) }) else { continue }
                _ = aether_epoll_remove(epoll, pidfd)
                close(pidfd)
                watch.willReap()
                var status: CInt = 0
                while waitpid(watch.pid, &status, 0) < 0 && errno == EINTR {}
                watch.reaped(ExitStatus(waitStatus: status))
            }
        }
    }
}
