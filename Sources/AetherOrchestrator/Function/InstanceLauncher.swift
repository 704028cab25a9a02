import AetherCore
import AetherIPC
import AetherNet
import AetherSystem
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Brings instances of one function generation up: makes their resources (shared memory, a
/// listening port), spawns the handler or has criu restore a copy of the snapshot, puts the
/// process in its memory cgroup, captures its output, watches for its exit and hands its
/// control connection over. Everything it learns goes to the instance's `InstanceEvents`.
struct InstanceLauncher: Sendable {
    let config: FunctionConfig
    let generation: Int
    let launch: HandlerLaunch
    let memory: MemoryCgroup
    /// `dataplane: ebpf`: process handlers bind a private port (AETHER_LISTEN_PORT).
    let usesEbpf: Bool
    let listenAddress: String
    let ringCapacity: Int
    let handshake: HandshakeServer
    let output: OutputCapture
    let group: any EventLoopGroup
    /// The loops its trigger port's connections are served on (Gateway, "Home loops"); an sdk
    /// instance's response reader runs on one of them. Empty: any loop.
    let homeLoops: [any EventLoop]
    /// How instances are confined (nil: `confinement: false`, handlers run as the orchestrator).
    let sandbox: InstanceSandbox?

    private var id: FunctionID { config.id }

    /// Where an instance's response reader runs: its turn of the home loops (what the scheduler's
    /// `Affinity` assumes; a copy that waited in the warm pool keeps the loop it was parked on).
    func readerLoop(for instance: InstanceID) -> any EventLoop {
        homeLoops.isEmpty
            ? group.next()
            : homeLoops[DeployedFunction.Scheduler.Affinity.loop(of: instance, among: homeLoops.count)]
    }

    /// The cgroup limits of each instance: `max_pids` only under confinement (unconfined
    /// handlers run as they always did), `cpu_limit` whenever it is set.
    var limits: MemoryCgroup.Limits {
        MemoryCgroup.Limits(
            memory: config.memoryLimit, pids: sandbox == nil ? nil : config.maxPIDs.rawValue, cpu: config.cpuLimit)
    }

    /// The name of an instance's memory cgroup.
    func cgroupName(_ instance: InstanceID) -> String { "\(id)-g\(generation)-\(instance.number)" }

    /// An instance's resources, before any process exists: its rings (sdk) or its listening port
    /// (process handler). Fails with the start error to report.
    /// A copy from the warm pool brings the `region` it attached there.
    func makeHandle(
        _ instance: InstanceID, origin: InstanceOrigin, events: any InstanceEvents,
        rings attached: InstanceRings? = nil
    ) -> Result<InstanceHandle, HandlerError> {
        var rings = attached
        if config.handlerProtocol == .sdk, rings == nil {
            // The orchestrator's pid too: two orchestrators (or one and its successor during a restart)
            // may run the same function at once.
            let name = SharedMemoryRegion.name(function: "\(id)-p\(getpid())-g\(generation)", instance: instance.number)
            do {
                rings = try InstanceRings.make(name: name, ringCapacity: ringCapacity)
            } catch {
                return .failure(
                    .spawnFailed(
                        function: id, program: launch.program, reason: "cannot create shared memory \(name): \(error)"))
            }
        }
        // A process handler binds AETHER_LISTEN_PORT: with eBPF a private port, whose socket the
        // trigger port is steered to once the handler is READY (so generations can overlap).
        var listenPort: UInt16?
        if config.handlerProtocol == .process {
            do {
                listenPort =
                    usesEbpf ? try ListeningSocket.freePort(address: listenAddress) : config.triggerPort.rawValue
            } catch {
                return .failure(
                    .spawnFailed(
                        function: id, program: launch.program, reason: "no free port for AETHER_LISTEN_PORT: \(error)"))
            }
        }
        return .success(
            InstanceHandle(id: instance, origin: origin, rings: rings, listenPort: listenPort, events: events))
    }

    /// Spawns the handler process; reports `launched` (or `launchFailed`) before returning.
    ///
    /// An sdk handler gets its control connection as descriptor 3 (`AETHER_CONTROL_FD`, one end
    /// of a socketpair, as a snapshot template does), so its ATTACH can carry the region's
    /// descriptor; a process handler connects to `AETHER_SOCKET` (the seed's protocol) and is
    /// told apart by its PID.
    func spawn(_ handle: InstanceHandle) {
        let events = handle.events
        func failed(_ reason: String) {
            release(handle)
            events.launchFailed(handle.id, error: .spawnFailed(function: id, program: launch.program, reason: reason))
        }
        var environment = launch.environment(instance: handle.id.number, listenPort: handle.listenPort)
        var ours: CInt = -1
        var theirs: [CInt] = []
        if config.handlerProtocol == .sdk {
            do {
                let pair = try DescriptorPair.socketPair(SOCK_STREAM, for: "the control connection")
                ours = pair.ours.take()
                theirs = [pair.theirs.take()]
            } catch {
                return failed(error.reason)
            }
            environment["AETHER_CONTROL_FD"] = "3"
        }
        defer { theirs.forEach { close($0) } }
        let cgroupName = cgroupName(handle.id)
        // Confined: the cgroups exist before the process, which joins them before any handler
        // code runs. Unconfined: the process is moved in right after the spawn.
        var cgroups: [String] = []
        if sandbox != nil {
            switch memory.prepare(name: cgroupName, limits: limits) {
            case .success(let folders): cgroups = folders
            case .failure(let failure):
                if ours >= 0 { close(ours) }
                return failed("cannot enforce the instance's limits: \(failure.reason)")
            }
        }
        func start() throws(SpawnError) -> SpawnedProcess {
            if let sandbox {
                return try SandboxSpawner.spawn(
                    sandbox, cgroups: cgroups, program: launch.program, arguments: launch.arguments,
                    environment: environment, searchPath: launch.searchPath,
                    asInit: config.handlerProtocol == .process, inheriting: theirs)
            }
            return try ProcessSpawner.spawn(
                program: launch.program, arguments: launch.arguments, environment: environment,
                searchPath: launch.searchPath, inheriting: theirs)
        }
        let process: SpawnedProcess
        do {
            process = try start()
        } catch {
            if ours >= 0 { close(ours) }
            if let cgroup = cgroups.first { memory.remove(cgroup) }
            return failed(error.reason)
        }
        let pid = process.pid
        let cgroup: Result<String, CgroupFailure> =
            cgroups.first.map { .success($0) }
            ?? memory.confine(pid: pid, name: cgroupName, limits: limits)
        handle.started(pid: pid, cgroup: try? cgroup.get())
        let outputClosed = captureOutput(of: handle, stdout: process.stdout, stderr: process.stderr)
        watch(handle, pid: pid, outputClosed: outputClosed)
        if case .failure(let failure) = cgroup {
            // Not started unconfined: the limit is part of the function's contract.
            if ours >= 0 { close(ours) }
            kill(-pid, SIGKILL)
            events.launchFailed(
                handle.id,
                error: .spawnFailed(
                    function: id, program: launch.program,
                    reason: "cannot enforce memory_limit_mb: \(failure.reason)"))
            return
        }
        if ours >= 0 {
            // The channel gets `ours`; a copy stays for the one ATTACH that carries a descriptor.
            let copy = dup(ours)
            handle.keepForAttach(copy)
            ControlConnection.wrap(connectedSocket: ours, group: group).whenComplete { result in
                switch result {
                case .success(let connection): connection.bind(to: handle)
                case .failure:
                    // Without its connection it never becomes ready: gone now, not at its deadline.
                    kill(-pid, SIGKILL)
                }
            }
        } else {
            handshake.expect(pid: pid, sink: handle)
        }
        handle.reader?.start(on: readerLoop(for: handle.id), for: handle)
        events.launched(handle.id, pid: pid)
    }

    /// Restores a copy of the snapshot on a thread of its own (criu takes milliseconds);
    /// reports `restored` or `launchFailed`. `forRequest`: held to `restore_timeout_ms`.
    func restore(_ handle: InstanceHandle, from snapshot: FunctionSnapshot, forRequest: Bool) {
        startCopy(handle, name: "restore", isChild: true) { () throws(CriuError) in
            // The copy's ATTACH goes with the restore (see FunctionSnapshot.restore).
            try snapshot.start(
                logName: "restore-g\(generation)-\(handle.id)", attach: Self.attach(handle), forRequest: forRequest)
        }
    }

    /// Forks a copy of the live template (`snapshot: fork`) on a thread of its own (it waits
    /// for the copy's first message); reports `restored` or `launchFailed`, as for a restored copy.
    func fork(_ handle: InstanceHandle, from template: ForkTemplate, forRequest: Bool) {
        startCopy(handle, name: "fork", isChild: false) { () throws(CriuError) in
            try template.start(attach: Self.attach(handle), forRequest: forRequest)
        }
    }

    /// Starts a copy from the warm pool as the instance: it attached there (`handle` was made
    /// with its region), so it only has to run. Not blocking: on the request path's event loop,
    /// no thread hop and no ATTACH round trip before the first request. False when the copy
    /// had ended while it waited.
    func startWaiting(_ handle: InstanceHandle, copy waiting: WaitingCopy, isChild: Bool) -> Bool {
        guard let copy = waiting.start(attach: nil, began: .now, resume: false) else { return false }
        let pid = copy.pid
        takeOn(handle, copy: copy, isChild: isChild, attached: true) { kill(pid, SIGCONT) }
        return true
    }

    /// The instance's ATTACH line and the descriptors it carries (the region, the bell).
    private static func attach(_ handle: InstanceHandle) -> (text: String, passing: [CInt]) {
        handle.rings?.attach ?? ("", [])
    }

    /// Makes a copy of the template (`make`, on a thread of its own) and takes it on as the
    /// instance. `isChild`: ours to reap (a restored copy); a forked one is its template's.
    private func startCopy(
        _ handle: InstanceHandle, name: String, isChild: Bool,
        make: @escaping @Sendable () throws(CriuError) -> FunctionSnapshot.Copy
    ) {
        BackgroundThread.start(name: "\(name)-\(handle.id)") { [self] in
            do throws(CriuError) {
                takeOn(handle, copy: try make(), isChild: isChild, attached: false)
            } catch {
                release(handle)
                handle.events.launchFailed(
                    handle.id, error: .restoreFailed(function: id, instance: handle.id.number, error: error))
            }
        }
    }

    /// A started copy becomes the instance: its output, exit watch, cgroup and control
    /// connection. Not blocking.
    /// `reader`: its response reader, started in the pool. `resume`: lets a copy still stopped
    /// run, once its first request is written.
    private func takeOn(
        _ handle: InstanceHandle, copy: consuming FunctionSnapshot.Copy, isChild: Bool, attached: Bool,
        resume: () -> Void = {}
    ) {
        let events = handle.events
        let pid = copy.pid
        handle.started(pid: pid, cgroup: copy.cgroup)
        // The copy was made inside the cgroups its slot (or its fork) was prepared with.
        guard copy.cgroup != nil else {
            watch(
                handle, pid: pid, isChild: isChild,
                outputClosed: captureOutput(of: handle, stdout: copy.stdout, stderr: copy.stderr))
            copy.control.close()
            kill(-pid, SIGKILL)
            events.launchFailed(
                handle.id,
                error: .spawnFailed(
                    function: id, program: "criu restore",
                    reason: "cannot enforce memory_limit_mb: no cgroup for the copy"))
            return
        }
        // First, so that a copy attached in the pool gets its first request now (`restored`
        // resumes it once the request is written); a pooled copy's response reader already
        // waits (bound before the request is written), another's starts next. Its output, exit
        // watch and connection wait meanwhile: its output in the pipes, lines in the connection,
        // an exit in its pidfd (the watch sees an exit that happened before it).
        // On the event loop running this (a pooled start runs on the gateway's), if any: handing
        // work to another loop would wake its thread while the copy needs a CPU.
        let here = MultiThreadedEventLoopGroup.currentEventLoop
        if attached {
            handle.reader?.bind(to: handle)
        }
        events.restored(handle.id, pid: pid, duration: copy.duration, attached: attached, resume: resume)
        if !attached {
            // Its home loop, where the scheduler sends it the requests that arrive there.
            let loop = homeLoops.isEmpty ? (here ?? group.next()) : readerLoop(for: handle.id)
            handle.reader?.start(on: loop, for: handle)
        }
        // Its channels on the same loop. There, they are set up once the first response has had time to come back: on 2 vCPUs this
        // work (0.2-0.4 ms) otherwise ran while the copy answered, and the loop that would
        // write its answer was busy with it.
        let (stdout, stderr, control) = (copy.stdout.take(), copy.stderr.take(), copy.control.take())
        let setUp: @Sendable () -> Void = { [self] in
            let outputClosed = captureOutput(
                of: handle, stdout: OwnedDescriptor(owning: stdout), stderr: OwnedDescriptor(owning: stderr), on: here)
            watch(handle, pid: pid, isChild: isChild, outputClosed: outputClosed)
            ControlConnection.wrap(connectedSocket: control, group: here ?? group).whenComplete { result in
                switch result {
                case .success(let connection): connection.bind(to: handle)
                case .failure:
                    // Without its connection it never becomes ready: gone now (its exit is
                    // reported), not at its deadline.
                    kill(-pid, SIGKILL)
                }
            }
        }
        if let here, attached {
            here.scheduleTask(in: Self.setUpAfterStart) { setUp() }
        } else {
            setUp()
        }
    }

    /// How long after a pooled start its output, exit watch and connection are set up (above).
    static let setUpAfterStart = TimeAmount.milliseconds(2)

    /// Undoes `makeHandle` when no process came of it.
    private func release(_ handle: InstanceHandle) {
        try? handle.region?.unlink()
    }

    /// Hands the output pipes to the event loops, which close them at end-of-file.
    private func captureOutput(
        of handle: InstanceHandle, stdout: consuming OwnedDescriptor, stderr: consuming OwnedDescriptor,
        on loop: (any EventLoop)? = nil
    ) -> EventLoopFuture<Void> {
        let number = handle.id.number
        let closed = [
            output.start(descriptor: stdout.take(), stream: "stdout", instance: number, on: loop),
            output.start(descriptor: stderr.take(), stream: "stderr", instance: number, on: loop),
        ]
        return EventLoopFuture.andAllComplete(closed, on: loop ?? group.next())
    }

    /// Has the reaper tell the instance's events when the process ends, once its output is read
    /// to the end (its last stderr lines explain a failed start), or after 200 ms if something
    /// it started keeps the pipes open.
    private func watch(
        _ handle: InstanceHandle, pid: pid_t, isChild: Bool = true, outputClosed: EventLoopFuture<Void>
    ) {
        let (memory, handshake, group) = (memory, handshake, group)
        let reported: @Sendable (ExitStatus) -> Void = { status in
            // The reader reads what was published, then lets go of the bell.
            handle.reader?.stop()
            try? handle.region?.unlink()
            handshake.forget(pid: pid)
            let (control, cgroup) = handle.markGone()
            control?.close()
            let outOfMemory = cgroup.map { memory.wasOutOfMemory($0) } ?? false
            if let cgroup { memory.remove(cgroup) }
            let loop = group.next()
            loop.execute {
                let reportedOnce = NIOLoopBoundBox(false, eventLoop: loop)
                let report: @Sendable () -> Void = {
                    guard !reportedOnce.value else { return }
                    reportedOnce.value = true
                    handle.events.exited(handle.id, status: status, outOfMemory: outOfMemory)
                }
                let timeout = loop.scheduleTask(in: .milliseconds(200)) { report() }
                outputClosed.hop(to: loop).whenComplete { _ in
                    timeout.cancel()
                    report()
                }
            }
        }
        do {
            try ChildReaper.shared.watch(
                pid, isChild: isChild, willReap: { _ = handle.markGone() }, reaped: reported)
        } catch {
            // A child of ours is a zombie at worst (pidfd_open works on it), so this is a forked
            // copy its template has already reaped: it has ended, its status is the template's.
            // Anything else: nobody would reap it.
            kill(-pid, SIGKILL)
            guard isChild else { return reported(.unknown) }
            var status: CInt = 0
            waitpid(pid, &status, 0)
            reported(ExitStatus(waitStatus: status))
        }
    }
}
