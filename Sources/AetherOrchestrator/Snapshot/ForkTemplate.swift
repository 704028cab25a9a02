import AetherCore
import AetherIPC
import AetherSystem
import CAetherSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A `snapshot: fork` function's live template (docs/handler-protocol.md, "Snapshots"): brought
/// to FROZEN like a CRIU template, then kept alive, and each new instance is a child forked from
/// it. Nothing is read from disk and the initialised pages are shared copy-on-write.
///
/// One fork, on the template's control connection:
/// 1. We send `FORK` with three descriptors: one end of a fresh socketpair (the copy's control
///    connection) and the write ends of its stdout and stderr pipes.
/// 2. The template forks; the child starts a session of its own, takes those as its connection
///    and output, and sends `FORKED` on the new connection. The kernel tells us its PID with
///    that message (SO_PASSCRED): nothing the template says is trusted for it.
/// 3. We move the child into its own cgroups. It has run no handler code yet: it waits for its
///    next line, ATTACH, after which the conversation goes on as for a restored copy.
///
/// Steps 1-3 take 10-20 ms here, nearly all of it the move into cgroup v1 controllers (an RCU
/// grace period per move), so they happen ahead of demand: copies wait forked, confined and
/// stopped in the orchestrator's warm pool (`WarmPoolManager`), and a start only writes ATTACH.
///
/// The template is the PID 1 of the copies' namespace and reaps them (SIGCHLD ignored), so a
/// copy's exit status is not ours to read (`ExitStatus.unknown`); when the template ends, the
/// kernel ends every copy with it.
final class ForkTemplate: Sendable {
    /// Host PID of the template.
    let pid: pid_t
    let budget: Duration
    /// Our end of its control connection; one FORK conversation at a time.
    private let control: Mutex<OwnedDescriptor?>
    private let launcherPID: pid_t
    private let cgroup: String?
    private let memory: MemoryCgroup
    /// Moves a copy into cgroups of its own; their memory cgroup, or why not.
    private let confine: @Sendable (pid_t) -> Result<String, CgroupFailure>
    /// Copies forked and confined, waiting in its places of the warm pool (nil: it has none; a
    /// start with no copy waiting forks on the request path, 10-20 ms more: over the default
    /// budget, so such starts fail as latency violations).
    private let shelf: CopyShelf?
    private let stopped = Mutex(false)

    private init(
        frozen: consuming FrozenTemplate, budget: Duration, pool: WarmPoolManager.Share?,
        confine: @escaping @Sendable (pid_t) -> Result<String, CgroupFailure>
    ) {
        shelf = pool.map { CopyShelf(pool: $0, threadName: "fork-refill") }
        pid = frozen.pid
        launcherPID = frozen.launcherPID
        cgroup = frozen.cgroup
        memory = frozen.memory
        self.budget = budget
        self.confine = confine
        control = Mutex(OwnedDescriptor(owning: frozen.control.take()))
    }

    /// Starts the template and brings it to FROZEN, then forks the first ready copies; `ended`
    /// is called once it has ended (on the reaper's thread). Blocking: call it off the event
    /// loops.
    static func start(
        function: FunctionConfig, launch: HandlerLaunch, budget: Duration, memory: MemoryCgroup,
        limits: MemoryCgroup.Limits, sandbox: InstanceSandbox?, cgroupName: String, output: OutputCapture,
        pool: WarmPoolManager.Share?, confine: @escaping @Sendable (pid_t) -> Result<String, CgroupFailure>,
        ended: @escaping @Sendable (ExitStatus) -> Void
    ) throws(FunctionSnapshot.BuildFailure) -> ForkTemplate {
        let frozen = try FrozenTemplate.start(
            function: function, launch: launch, memory: memory, limits: limits, sandbox: sandbox,
            cgroupName: cgroupName, output: output, forkTemplate: true)
        let launcherPID = frozen.launcherPID
        let template = ForkTemplate(frozen: frozen, budget: budget, pool: pool, confine: confine)
        do {
            try ChildReaper.shared.watch(launcherPID, reaped: ended)
        } catch {
            template.stop()
            throw FunctionSnapshot.BuildFailure(
                error: .snapshotFailed(function: function.id, detail: "cannot watch the template: \(error.reason)"))
        }
        // The first copy is forked here, so a template that cannot fork fails the start; it waits
        // in the pool if the pool has a place for it.
        do throws(CriuError) {
            let placed = pool?.reserve() ?? false
            let first = try template.forkWaitingCopy(release: placed ? pool?.release : nil)
            if let shelf = template.shelf, placed {
                shelf.shelve(first)
            } else {
                first.kill()
            }
        } catch {
            template.stop()
            throw FunctionSnapshot.BuildFailure(
                error: .snapshotFailed(function: function.id, detail: error.description))
        }
        template.refill()
        return template
    }

    /// Starts one instance forked now, ATTACH written to it: the way when no copy waits in the
    /// pool (`takeWaiting`). Blocking. `forRequest` (a request waits for it): over `budget`,
    /// `latencyViolation`, the copy killed; ahead of demand it is not held to the request budget.
    func start(attach: (text: String, passing: [CInt]), forRequest: Bool) throws(CriuError) -> FunctionSnapshot.Copy {
        let begun = ContinuousClock.now
        defer { refill(after: WarmPoolManager.refillDelay) }
        guard !stopped.withLock({ $0 }) else {
            throw .forkFailed(template: pid, reason: "the template has ended")
        }
        guard let started = try forkWaitingCopy(release: nil).start(attach: attach, began: begun) else {
            throw .forkFailed(template: pid, reason: "the copy ended before its ATTACH")
        }
        guard !forRequest || started.duration <= budget else {
            kill(-started.pid, SIGKILL)
            throw .latencyViolation(actual: started.duration, limit: budget)
        }
        return started
    }

    /// A copy waiting in the warm pool, attached and stopped, for a start to take; nil when
    /// none waits. Not blocking (the request path calls it); a refill follows.
    func takeWaiting() -> WaitingCopy? {
        guard let copy = shelf?.take() else { return nil }
        refill(after: WarmPoolManager.refillDelay)
        return copy
    }

    /// Forks copies in the background while the warm pool gives this function places.
    private func refill(after delay: Duration = .zero) {
        guard let shelf else { return }
        shelf.refill(after: delay) { [self] _ in
            guard !stopped.withLock({ $0 }) else { return nil }
            return try? forkWaitingCopy(release: shelf.pool.release)
        }
    }

    /// FORK, FORKED, and the move into the copy's own cgroups. `release` gives its pool place
    /// back once it is used or dropped (nil: it has none).
    private func forkWaitingCopy(release: (@Sendable () -> Void)?) throws(CriuError) -> WaitingCopy {
        func failed(_ reason: String) -> CriuError { .forkFailed(template: pid, reason: reason) }
        let ends = try CopyEnds.make(failed)
        let sent = control.withLock { control -> String? in
            guard let fd = control?.rawValue else { return "the template has ended" }
            do {
                try ControlLine.write(
                    fd, "FORK\n",
                    passing: [
                        ends.connection.theirs.rawValue, ends.stdout.theirs.rawValue, ends.stderr.theirs.rawValue,
                    ])
                return nil
            } catch {
                return "cannot send FORK: \(error)"
            }
        }
        ends.connection.theirs.close()
        ends.stdout.theirs.close()
        ends.stderr.theirs.close()
        if let sent { throw failed(sent) }
        let child = try forked(on: ends.connection.ours.rawValue, within: .seconds(5), failed: failed)
        switch confine(child) {
        case .success(let folder):
            return WaitingCopy(
                pid: child, control: ends.connection.ours.take(), stdout: ends.stdout.ours.take(),
                stderr: ends.stderr.ours.take(), cgroup: folder, isChild: false, memory: memory,
                release: release ?? {})
        case .failure(let failure):
            kill(-child, SIGKILL)
            throw failed("cannot enforce memory_limit_mb: \(failure.reason)")
        }
    }

    /// A copy's control connection and output pipes, made before FORK.
    private struct CopyEnds: ~Copyable {
        let connection: DescriptorPair
        let stdout: DescriptorPair
        let stderr: DescriptorPair

        static func make(_ failed: (String) -> CriuError) throws(CriuError) -> CopyEnds {
            do throws(SystemCallFailure) {
                let ends = CopyEnds(
                    connection: try .socketPair(SOCK_STREAM, for: "a forked copy's control connection"),
                    stdout: try .pipe(for: "a forked copy's stdout"), stderr: try .pipe(for: "a forked copy's stderr"))
                // The copy's PID comes from its first message's credentials.
                guard aether_pass_credentials(ends.connection.ours.rawValue) == 0 else {
                    throw SystemCallFailure(call: "setsockopt", subject: "SO_PASSCRED", errno: errno)
                }
                return ends
            } catch {
                throw failed(error.reason)
            }
        }
    }

    /// Waits (until `deadline`) for the copy's `FORKED` and returns its PID, as the kernel
    /// reported the sender of that message.
    private func forked(
        on fd: CInt, within limit: Duration, failed: (String) -> CriuError
    ) throws(CriuError) -> pid_t {
        let deadline = ContinuousClock.now + limit
        var line: [UInt8] = []
        var sender: pid_t = -1
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else {
                if sender > 0 { kill(-sender, SIGKILL) }
                throw failed("no FORKED from the copy within \(limit)")
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = CInt(
                clamping: max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            guard poll(&poller, 1, milliseconds) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 64)
            var pid: CInt = -1
            let count = buffer.withUnsafeMutableBytes { aether_receive_with_sender(fd, $0.baseAddress, 64, &pid) }
            if count < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            guard count > 0 else {
                throw failed("the template closed the copy's connection without FORKED (it cannot fork, or it ended)")
            }
            if sender < 0 { sender = pid }
            line += buffer[..<count]
            if let end = line.firstIndex(of: UInt8(ascii: "\n")) {
                let text = String(decoding: line[..<end], as: UTF8.self)
                guard text == "FORKED", end == line.count - 1, sender > 0 else {
                    if sender > 0 { kill(-sender, SIGKILL) }
                    throw failed("the copy sent \(JSONText.printable(text)) instead of FORKED")
                }
                return sender
            }
            guard line.count < 64 else { throw failed("the copy sent a line over 64 bytes instead of FORKED") }
        }
    }

    /// Ends the template, and with it every copy forked from it.
    func stop() {
        stopped.withLock { $0 = true }
        shelf?.close()
        _ = control.withLock { $0.take() }
        kill(-pid, SIGKILL)
        kill(launcherPID, SIGKILL)
        if let cgroup { memory.remove(cgroup) }
    }
}
