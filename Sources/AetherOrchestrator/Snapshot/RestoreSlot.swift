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
final class RestoreSlot: Sendable {
    let pid: pid_t
    /// Our end of the copy's control connection, for writes before `restore` (the copy's first
    /// line, queued ahead). The slot owns it until `restore` hands it on; do not close or keep it.
    let control: CInt
    /// The cgroup criu was put in before it restores (so the copy, its child, is born there).
    let cgroup: String?
    /// Our descriptors, until `restore` or `discard` takes them (once).
    private let ends: Mutex<Ends?>

    /// Our end of the RPC socket and our ends of what the restored copy will have.
    private struct Ends: ~Copyable {
        let rpc: OwnedDescriptor
        let control: OwnedDescriptor
        let stdout: OwnedDescriptor
        let stderr: OwnedDescriptor
    }

    private init(pid: pid_t, cgroup: String?, ends: consuming sending Ends) {
        self.pid = pid
        self.cgroup = cgroup
        control = ends.control.rawValue
        self.ends = Mutex<Ends?>(ends)
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
        /// (the PID of the RPC socket's peer), so it is ours, not one passed to criu. Owned by
        /// the `FunctionSnapshot`, which outlives its restores.
        let directoryDescriptor: CInt
        let controlInode: UInt64
        let stdoutInode: UInt64
        let stderrInode: UInt64
        /// Confined copies: swrk runs in a mount namespace holding a fresh view's pieces, and the
        /// restore binds them into the copy (`--root`, `--external mnt[...]`).
        let sandbox: InstanceSandbox?
        /// The sandbox's `restoreExternals`, worked out once (it resolves every bind's path), not
        /// on each restore's path.
        let restoreExternals: [String]

        init(
            directory: String, directoryDescriptor: CInt, controlInode: UInt64, stdoutInode: UInt64,
            stderrInode: UInt64, sandbox: InstanceSandbox? = nil
        ) {
            self.directory = directory
            self.directoryDescriptor = directoryDescriptor
            self.controlInode = controlInode
            self.stdoutInode = stdoutInode
            self.stderrInode = stderrInode
            self.sandbox = sandbox
            restoreExternals = sandbox?.restoreExternals ?? []
        }
    }

    /// Starts `criu swrk` with the copy's descriptors. `prepare` runs on its PID before the slot
    /// is returned: it puts criu in the cgroup the copy will live in and returns that cgroup.
    static func start(
        criu: Criu, template: Template, prepare: (pid_t) -> String? = { _ in nil }
    ) throws(CriuError) -> RestoreSlot {
        let pairs: Pairs
        do {
            pairs = try Pairs()
        } catch {
            throw .restoreFailed(image: template.directory, log: "cannot prepare a restore: \(error.reason)")
        }
        let pid: pid_t
        do {
            var environment = HandlerLaunch.inheritedEnvironment()
            // Each slot serves one restore and is started ahead of it: resolving all of criu's
            // library symbols now, not lazily during the restore, takes ~1 ms off every
            // restore's critical path (A/B in BENCHMARKS.md).
            environment["LD_BIND_NOW"] = "1"
            let swrk = ["swrk", String(Slot.rpc)]
            if let sandbox = template.sandbox {
                pid = try ProcessSpawner.spawnDiscardingOutput(
                    program: sandbox.helper, arguments: sandbox.restoreSlotArguments(criu: criu.path, arguments: swrk),
                    environment: environment, searchPath: false, inheriting: pairs.theirs)
            } else {
                pid = try ProcessSpawner.spawnDiscardingOutput(
                    program: criu.path, arguments: swrk, environment: environment, searchPath: false,
                    inheriting: pairs.theirs)
            }
        } catch {
            throw .notInstalled(path: "\(criu.path) (\(error.reason))")
        }
        // Their ends close on return: swrk has them now.
        return RestoreSlot(
            pid: pid, cgroup: prepare(pid),
            ends: Ends(
                rpc: pairs.rpc.ours, control: pairs.control.ours, stdout: pairs.output.ours,
                stderr: pairs.errors.ours))
    }

    /// What a slot is started with: swrk gets `theirs` of each as its descriptors 3 to 6 (`Slot`).
    private struct Pairs: ~Copyable {
        let rpc: DescriptorPair
        let control: DescriptorPair
        let output: DescriptorPair
        let errors: DescriptorPair

        init() throws(SystemCallFailure) {
            // Made into locals first: a throwing init may not leave a noncopyable field half set.
            let rpc = try DescriptorPair.socketPair(SOCK_SEQPACKET, for: "criu swrk's RPC")
            let control = try DescriptorPair.socketPair(SOCK_STREAM, for: "a restored copy's control connection")
            let output = try DescriptorPair.pipe(for: "a restored copy's stdout")
            let errors = try DescriptorPair.pipe(for: "a restored copy's stderr")
            self.rpc = rpc
            self.control = control
            self.output = output
            self.errors = errors
        }

        /// Their ends, in `Slot` order.
        var theirs: [CInt] {
            [rpc.theirs.rawValue, control.theirs.rawValue, output.theirs.rawValue, errors.theirs.rawValue]
        }
    }

    /// Restores one copy: sends the RESTORE request and waits for the answer. The copy is our
    /// child (`rst_sibling`). Over `budget`, counted from `begun` (when the caller decided to
    /// restore), the copy is killed and `latencyViolation` thrown: never a slower success.
    /// Consumes the slot; the copy returned owns our ends of its control connection and output.
    func restore(
        template: Template, logName: String, budget: Duration, begun: ContinuousClock.Instant
    )
        throws(CriuError) -> FunctionSnapshot.Copy
    {
        guard let ends = ends.withLock({ $0.take() }) else { preconditionFailure("restore slot \(pid) used twice") }
        // criu itself gets a generous limit; the budget is judged on the measured time.
        let pid = try request(
            rpc: ends.rpc, template: template, logName: logName, timeout: max(budget * 20, .seconds(5)))
        let duration = ContinuousClock.now - begun
        guard duration <= budget else {
            kill(pid, SIGKILL)
            var status: CInt = 0
            waitpid(pid, &status, 0)
            throw .latencyViolation(actual: duration, limit: budget)
        }
        return FunctionSnapshot.Copy(
            pid: pid, control: ends.control, stdout: ends.stdout, stderr: ends.stderr, duration: duration,
            cgroup: cgroup)
    }

    /// Sends the request over `rpc` (closed on return) and returns the restored copy's PID.
    private func request(
        rpc: consuming OwnedDescriptor, template: Template, logName: String, timeout: Duration
    ) throws(CriuError) -> pid_t {
        defer {
            // swrk exits after its one request; reap it without waiting here.
            try? ChildReaper.shared.watch(pid)
            // Its log was read (into the error) if it failed; it goes either way, or restores
            // would fill the image folder (on tmpfs: memory) with one log each.
            unlink(template.directory + "/\(logName).log")
        }
        let request = CriuRPC.restoreRequest(
            imagesDirectory: template.directoryDescriptor, logFile: "\(logName).log",
            root: template.sandbox?.restoreRoot, externals: template.restoreExternals,
            inherit: [
                ("socket:[\(template.controlInode)]", Slot.control),
                ("pipe:[\(template.stdoutInode)]", Slot.stdout),
                ("pipe:[\(template.stderrInode)]", Slot.stderr),
            ])
        let sent: Int
        do {
            sent = try systemCall("send", on: "criu swrk's RPC socket", failsWith: .minusOne) {
                request.withUnsafeBytes { send(rpc.rawValue, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            }
        } catch {
            kill(pid, SIGKILL)
            throw .restoreFailed(image: template.directory, log: "criu swrk did not take the request: \(error.reason)")
        }
        guard sent == request.count else {
            kill(pid, SIGKILL)
            throw .restoreFailed(
                image: template.directory,
                log: "criu swrk did not take the request: \(sent) of its \(request.count) bytes went")
        }
        var poller = pollfd(fd: rpc.rawValue, events: Int16(POLLIN), revents: 0)
        let milliseconds = CInt(max(1, timeout.milliseconds.rounded(.up)))
        let ready = try? systemCall("poll", on: "criu swrk's RPC socket", failsWith: .minusOne) {
            poll(&poller, 1, milliseconds)
        }
        guard let ready, ready > 0 else {
            // Not a slow restore (the budget is judged by the caller, on a restore that
            // finished): criu is stuck, typically on an image it cannot read. A failed restore,
            // so that restores that keep hanging get the image built again.
            kill(pid, SIGKILL)
            let log = Criu.logTail(template.directory + "/\(logName).log", fallback: "")
            throw .restoreFailed(
                image: template.directory,
                log: "criu swrk gave no answer within \(milliseconds) ms and was killed"
                    + (log.isEmpty ? "" : "\n" + log))
        }
        var answer = [UInt8](repeating: 0, count: 65536)
        let received = try? systemCall("recv", on: "criu swrk's RPC socket", failsWith: .minusOne) {
            answer.withUnsafeMutableBytes { recv(rpc.rawValue, $0.baseAddress, $0.count, 0) }
        }
        guard let received, received > 0 else {
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
        // Closes our descriptors (if `restore` has not taken them).
        _ = ends.withLock { $0.take() }
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
        try RestoreSlot.start(criu: criu, template: template, prepare: prepare)
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
