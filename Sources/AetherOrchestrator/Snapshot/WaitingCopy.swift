import AetherIPC
import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A copy of a function's template made ahead of demand (restored by criu, or forked from the
/// live template) and already in its own cgroups, waiting for its ATTACH, stopped (SIGSTOP)
/// until it is used: a start then only writes ATTACH. Counted in the orchestrator's warm pool
/// while it waits. Killed (its cgroup removed, its pool place given back) if it is dropped
/// before it is handed over.
final class WaitingCopy: @unchecked Sendable {
    let pid: pid_t
    let control: CInt
    let stdout: CInt
    let stderr: CInt
    let cgroup: String?
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
        Glibc.kill(pid, SIGSTOP)
    }

    /// Writes its ATTACH, lets it run, and hands over its PID, connection, output and cgroup;
    /// nil (and it is killed) if it ended while it waited.
    func start(attach: (text: String, passing: [CInt]), began: ContinuousClock.Instant) -> FunctionSnapshot.Copy? {
        do {
            try ControlLine.write(control, attach.text, passing: attach.passing)
        } catch {
            kill()
            return nil
        }
        Glibc.kill(pid, SIGCONT)
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
        release()
    }

    deinit { kill() }
}
