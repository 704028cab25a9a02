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

/// Restores through `criu swrk` (criu's RPC service) started ahead of need, so the ~6 ms it
/// takes to exec criu and load its libraries is not on the request path.
///
/// A `RestoreSlot` is one started `criu swrk` with everything the next copy needs already in
/// its descriptor table: the image folder, the copy's control connection and its stdout and
/// stderr pipes. A restore is then one RPC message and its answer. Slots are single-use
/// (swrk serves one request); `RestoreSlots` keeps a few ready and refills in the background.
final class RestoreSlot: @unchecked Sendable {
    let pid: pid_t
    private let rpc: CInt
    /// Our ends of what the restored copy will have.
    let control: CInt
    let stdout: CInt
    let stderr: CInt
    /// The cgroup criu was put in before it restores (so the copy, its child, is born there).
    var cgroup: String?

    private init(pid: pid_t, rpc: CInt, control: CInt, stdout: CInt, stderr: CInt) {
        self.pid = pid
        self.rpc = rpc
        self.control = control
        self.stdout = stdout
        self.stderr = stderr
    }

    /// Descriptor numbers inside the swrk process.
    private enum Slot {
        static let rpc: CInt = 3
        static let control: CInt = 4
        static let stdout: CInt = 5
        static let stderr: CInt = 6
    }

    struct Template: Sendable {
        let directory: String
        /// Our descriptor of the image folder: criu swrk opens it as /proc/<our pid>/fd/<it>
        /// (the PID of the RPC socket's peer), so it is ours, not one passed to criu.
        let directoryDescriptor: CInt
        let controlInode: UInt64
        let stdoutInode: UInt64
        let stderrInode: UInt64
    }

    static func start(criu: Criu, template: Template) throws(CriuError) -> RestoreSlot {
        var rpc: [CInt] = [-1, -1]
        var control: [CInt] = [-1, -1]
        var output: [CInt] = [-1, -1]
        var errors: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &rpc) == 0,
            socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &control) == 0,
            aether_pipe_cloexec(&output) == 0, aether_pipe_cloexec(&errors) == 0
        else {
            let reason = String(cString: strerror(errno))
            for fd in rpc + control + output + errors where fd >= 0 { close(fd) }
            throw .restoreFailed(image: template.directory, log: "cannot prepare a restore: \(reason)")
        }
        let theirs = [rpc[1], control[1], output[1], errors[1]]
        defer { theirs.forEach { close($0) } }
        let process: SpawnedProcess
        do {
            var environment = HandlerLaunch.inheritedEnvironment()
            // Each slot serves one restore and is started ahead of it: resolving all of criu's
            // library symbols now, not lazily during the restore, takes ~1 ms off every
            // restore's critical path (A/B in BENCHMARKS.md).
            environment["LD_BIND_NOW"] = "1"
            process = try ProcessSpawner.spawn(
                program: criu.path, arguments: ["swrk", String(Slot.rpc)],
                environment: environment, searchPath: false, inheriting: theirs,
                captureOutput: false)
        } catch {
            for fd in [rpc[0], control[0], output[0], errors[0]] { close(fd) }
            throw .notInstalled(path: "\(criu.path) (\(error.reason))")
        }
        return RestoreSlot(pid: process.pid, rpc: rpc[0], control: control[0], stdout: output[0], stderr: errors[0])
    }

    /// Restores one copy: sends the RESTORE request and waits for the answer. The copy is our
    /// child (`rst_sibling`). Over `budget`, counted from `begun` (when the caller decided to
    /// restore), the copy is killed and `latencyViolation` thrown: never a slower success.
    /// Consumes the slot; on success the caller owns `control`, `stdout` and `stderr`.
    func restore(
        template: Template, logName: String, budget: Duration, begun: ContinuousClock.Instant
    )
        throws(CriuError) -> (pid: pid_t, duration: Duration)
    {
        let pid: pid_t
        do {
            // criu itself gets a generous limit; the budget is judged on the measured time.
            pid = try request(template: template, logName: logName, timeout: max(budget * 20, .seconds(5)))
        } catch {
            for fd in [control, stdout, stderr] { close(fd) }
            throw error
        }
        let duration = ContinuousClock.now - begun
        guard duration <= budget else {
            kill(pid, SIGKILL)
            var status: CInt = 0
            waitpid(pid, &status, 0)
            for fd in [control, stdout, stderr] { close(fd) }
            throw .latencyViolation(actual: duration, limit: budget)
        }
        return (pid, duration)
    }

    private func request(template: Template, logName: String, timeout: Duration) throws(CriuError) -> pid_t {
        defer {
            close(rpc)
            // swrk exits after its one request; reap it without waiting here.
            try? ChildReaper.shared.watch(pid)
        }
        let request = CriuRPC.restoreRequest(
            imagesDirectory: template.directoryDescriptor, logFile: "\(logName).log",
            inherit: [
                ("socket:[\(template.controlInode)]", Slot.control),
                ("pipe:[\(template.stdoutInode)]", Slot.stdout),
                ("pipe:[\(template.stderrInode)]", Slot.stderr),
            ])
        let sent = request.withUnsafeBytes { send(rpc, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
        guard sent == request.count else {
            kill(pid, SIGKILL)
            throw .restoreFailed(
                image: template.directory,
                log: "criu swrk did not take the request: \(String(cString: strerror(errno)))")
        }
        var poller = pollfd(fd: rpc, events: Int16(POLLIN), revents: 0)
        let milliseconds = CInt(max(1, timeout.milliseconds.rounded(.up)))
        var ready: CInt
        repeat { ready = poll(&poller, 1, milliseconds) } while ready < 0 && errno == EINTR
        guard ready > 0 else {
            kill(pid, SIGKILL)
            throw .latencyViolation(actual: timeout, limit: timeout)
        }
        var answer = [UInt8](repeating: 0, count: 65536)
        let received = answer.withUnsafeMutableBytes { recv(rpc, $0.baseAddress, $0.count, 0) }
        guard received > 0 else {
            throw .restoreFailed(
                image: template.directory,
                log: Criu.logTail(template.directory + "/\(logName).log", fallback: "criu swrk ended without an answer")
            )
        }
        let response = CriuRPC.Response(Array(answer[..<received]))
        guard response.success, let restored = response.restoredPID else {
            var log = Criu.logTail(template.directory + "/\(logName).log", fallback: "")
            if let message = response.errorMessage { log = message + (log.isEmpty ? "" : "\n" + log) }
            throw .restoreFailed(image: template.directory, log: log)
        }
        return restored
    }

    /// Gives the slot up unused (the function is going away).
    func discard() {
        kill(pid, SIGKILL)
        var status: CInt = 0
        waitpid(pid, &status, 0)
        for fd in [rpc, control, stdout, stderr] { close(fd) }
    }
}

/// A few started `criu swrk` processes per function, refilled in the background.
final class RestoreSlots: Sendable {
    let criu: Criu
    let template: RestoreSlot.Template
    let target: Int
    /// Runs on each new slot's criu PID (off the request path): puts it in the cgroup its copy
    /// will live in, and returns that cgroup.
    private let prepare: @Sendable (pid_t) -> String?
    /// Removes the cgroup of a slot given up unused.
    private let release: @Sendable (String) -> Void
    private let state = Mutex<(ready: [RestoreSlot], starting: Int, closed: Bool)>(([], 0, false))

    init(
        criu: Criu, template: RestoreSlot.Template, target: Int, prepare: @escaping @Sendable (pid_t) -> String?,
        release: @escaping @Sendable (String) -> Void
    ) {
        self.criu = criu
        self.template = template
        self.target = target
        self.prepare = prepare
        self.release = release
    }

    /// Gives up a slot taken but not used, with its cgroup.
    func discard(_ slot: RestoreSlot) {
        slot.discard()
        if let cgroup = slot.cgroup { release(cgroup) }
    }

    /// A started slot, or a new one when none is ready (then the restore pays criu's start).
    func take() throws(CriuError) -> RestoreSlot {
        let slot = state.withLock { $0.ready.popLast() }
        refill()
        if let slot { return slot }
        return try started()
    }

    private func started() throws(CriuError) -> RestoreSlot {
        let slot = try RestoreSlot.start(criu: criu, template: template)
        slot.cgroup = prepare(slot.pid)
        return slot
    }

    func refill() {
        let missing = state.withLock { state -> Int in
            guard !state.closed else { return 0 }
            let missing = max(0, target - state.ready.count - state.starting)
            state.starting += missing
            return missing
        }
        for _ in 0..<missing {
            BackgroundThread.start(name: "swrk-start") { [self] in
                let slot = try? started()
                let unused = state.withLock { state -> RestoreSlot? in
                    state.starting -= 1
                    guard let slot else { return nil }
                    if state.closed { return slot }
                    state.ready.append(slot)
                    return nil
                }
                if let unused { discard(unused) }
            }
        }
    }

    func close() {
        let slots = state.withLock { state -> [RestoreSlot] in
            state.closed = true
            defer { state.ready = [] }
            return state.ready
        }
        slots.forEach { discard($0) }
    }
}
