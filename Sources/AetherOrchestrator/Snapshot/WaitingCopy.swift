import AetherIPC
import AetherSystem
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A copy of a function's template made ahead of demand (restored by criu, or forked from the
/// live template) and already in its own cgroups. In the warm pool it is also attached ahead of
/// demand (`park`): it has its region (rings) and has said ATTACHED, then it is stopped
/// (SIGSTOP), so a start only lets it run and writes the first request, as to a warm instance
/// (no ATTACH round trip, no region to make, on the request path). Killed (its cgroup removed,
/// its pool place given back) if it is dropped before it is handed over.
final class WaitingCopy: @unchecked Sendable {
    let pid: pid_t
    let control: CInt
    let stdout: CInt
    let stderr: CInt
    let cgroup: String?
    /// The region it attached in the pool (`park`) and the reader of its responses, started
    /// there; the instance that takes the copy takes both.
    private(set) var rings: InstanceRings?
    /// Our child (a restored copy) to reap when killed; a forked copy is its template's.
    private let isChild: Bool
    private let memory: MemoryCgroup
    /// Gives its place in the warm pool back.
    private let release: @Sendable () -> Void
    private var handedOver = false

    init(
        pid: pid_t, control: CInt, stdout: CInt, stderr: CInt, cgroup: String?, isChild: Bool, memory: MemoryCgroup,
        release: @escaping @Sendable () -> Void
    ) {
        self.pid = pid
        self.control = control
        self.stdout = stdout
        self.stderr = stderr
        self.cgroup = cgroup
        self.isChild = isChild
        self.memory = memory
        self.release = release
    }

    /// Into the warm pool: ATTACH with `rings` (its own), its ATTACHED awaited, its response
    /// reader started on `loop`, then stopped. Off the request path (a pool refill). Why not, if
    /// it did not attach (then kill it).
    func park(
        attaching rings: InstanceRings, readingOn loop: any EventLoop, within limit: Duration = .seconds(5)
    ) -> String? {
        let usesFutex: Bool
        do throws(ControlLine.Failure) {
            try ControlLine.write(control, rings.attach.text, passing: rings.attach.passing)
            let answer = try ControlLine.read(control, timeout: limit)
            guard answer == InstanceRings.attachedWithBell || answer == InstanceRings.attached else {
                return "it answered ATTACH with \(answer.prefix(200).debugDescription)"
            }
            usesFutex = answer == InstanceRings.attached
        } catch {
            return error.description
        }
        self.rings = rings
        rings.reader.start(on: loop, for: nil)
        if usesFutex { rings.reader.handlerUsesFutex() }
        // Stopped once it is idle (every thread asleep: the runtime waiting for its first
        // request), not in the middle of what follows ATTACHED, which would then run on the
        // request path.
        let idleBy = ContinuousClock.now + .milliseconds(100)
        while !isIdle(), ContinuousClock.now < idleBy { usleep(200) }
        Glibc.kill(pid, SIGSTOP)
        return nil
    }

    /// Every thread of the copy is asleep (state S in /proc).
    private func isIdle() -> Bool {
        guard let threads = Posix.entries(of: "/proc/\(pid)/task"), !threads.isEmpty else { return false }
        return threads.allSatisfy { thread in
            guard let stat = Posix.readFile("/proc/\(pid)/task/\(thread.name)/stat"),
                let close = stat.lastIndex(of: ")")
            else { return false }
            return stat[stat.index(after: close)...].dropFirst().first == "S"
        }
    }

    /// Lets it run (and, when it did not attach in the pool, writes `attach` first), and hands
    /// over its PID, connection, output and cgroup; nil (and it is killed) if it ended while it
    /// waited. `resume` false: still stopped, the caller sends SIGCONT (after writing its first
    /// request: the copy then takes it in the wake-up SIGCONT gives it, not in a second one).
    func start(
        attach: (text: String, passing: [CInt])?, began: ContinuousClock.Instant, resume: Bool = true
    ) -> FunctionSnapshot.Copy? {
        if rings == nil, let attach {
            do {
                try ControlLine.write(control, attach.text, passing: attach.passing)
            } catch {
                kill()
                return nil
            }
        }
        // A parked copy has nothing to say: its connection readable means it ended (or broke
        // the protocol) while it waited.
        if rings != nil {
            var poller = pollfd(fd: control, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 0) != 0 {
                kill()
                return nil
            }
        }
        if resume { Glibc.kill(pid, SIGCONT) }
        handedOver = true
        release()
        return FunctionSnapshot.Copy(
            pid: pid, control: OwnedDescriptor(owning: control), stdout: OwnedDescriptor(owning: stdout),
            stderr: OwnedDescriptor(owning: stderr), duration: ContinuousClock.now - began, cgroup: cgroup)
    }

    func kill() {
        guard !handedOver else { return }
        handedOver = true
        Glibc.kill(pid, SIGKILL)
        if isChild {
            var status: CInt = 0
            waitpid(pid, &status, 0)
        }
        Glibc.close(control)
        Glibc.close(stdout)
        Glibc.close(stderr)
        if let cgroup { memory.remove(cgroup) }
        rings?.reader.stop()
        rings = nil
        release()
    }

    deinit { kill() }
}
