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
///
/// The orchestrator is a child subreaper (for criu's restored copies), so orphans of everything
/// below it land here too: what a crashed handler forked, criu's helpers after a failed restore.
/// Once a second, the thread reaps every zombie child nobody watches that was already a zombie a
/// second earlier (code that waits for its own short-lived children does so within
/// microseconds of their exit, so it is never robbed).
final class ChildReaper: Sendable {
    /// The orchestrator's reaper, started on first use.
    static let shared = ChildReaper()

    private struct Watch: Sendable {
        let pid: pid_t
        /// A child of ours, to be reaped; false: another process's child (a forked copy), whose
        /// end is only noticed.
        let isChild: Bool
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
    /// `isChild` false: `pid` is not our child (a copy forked from a template): nothing is
    /// reaped, `reaped` gets `.unknown` once it has ended.
    func watch(
        _ pid: pid_t, isChild: Bool = true, willReap: @escaping @Sendable () -> Void = {},
        reaped: @escaping @Sendable (ExitStatus) -> Void = { _ in }
    ) throws(SystemCallFailure) {
        let pidfd = try systemCall("pidfd_open", on: "pid \(pid)", failsWith: .minusOne) { aether_pidfd_open(pid) }
        watches.withLock { $0[pidfd] = Watch(pid: pid, isChild: isChild, willReap: willReap, reaped: reaped) }
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
        var zombiesSeen: Set<pid_t> = []
        var nextSweep = ContinuousClock.now + .seconds(1)
        while true {
            let count = ready.withUnsafeMutableBufferPointer {
                aether_epoll_wait_descriptors(epoll, $0.baseAddress, CInt($0.count), 1000)
            }
            if ContinuousClock.now >= nextSweep {
                zombiesSeen = reapOrphans(seenBefore: zombiesSeen)
                nextSweep = ContinuousClock.now + .seconds(1)
            }
            guard count > 0 else { continue }  // a timeout, or EINTR
            for pidfd in ready[..<Int(count)] {
                guard let watch = watches.withLock({ $0.removeValue(forKey: pidfd) }) else { continue }
                _ = aether_epoll_remove(epoll, pidfd)
                close(pidfd)
                watch.willReap()
                guard watch.isChild else {
                    watch.reaped(.unknown)
                    continue
                }
                var status: CInt = 0
                while waitpid(watch.pid, &status, 0) < 0 && errno == EINTR {}
                watch.reaped(ExitStatus(waitStatus: status))
            }
        }
    }

    /// Reaps the zombie children that nobody watches and that were zombies at the last sweep;
    /// returns the zombies seen now.
    private func reapOrphans(seenBefore: Set<pid_t>) -> Set<pid_t> {
        let zombies = Set(Self.children().filter(Self.isZombie))
        guard !zombies.isEmpty else { return [] }
        let watched = watches.withLock { Set($0.values.map(\.pid)) }
        for pid in zombies where seenBefore.contains(pid) && !watched.contains(pid) {
            var status: CInt = 0
            _ = waitpid(pid, &status, WNOHANG)
        }
        return zombies
    }

    /// This process's children, from every thread's /proc children list (an orphan can be
    /// re-parented to any thread of the subreaper).
    static func children() -> [pid_t] {
        (Posix.entries(of: "/proc/self/task") ?? []).flatMap { task in
            (Posix.readFile("/proc/self/task/\(task.name)/children") ?? "").split(whereSeparator: \.isWhitespace)
                .compactMap { pid_t($0) }
        }
    }

    /// Whether `pid` is a zombie (its /proc stat state is Z).
    static func isZombie(_ pid: pid_t) -> Bool {
        guard let stat = Posix.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return false }
        return stat[close...].dropFirst(2).first == "Z"
    }
}
