import AetherCore
import AetherIPC
import AetherNet
import AetherSystem
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Everything the orchestrator runs for one deployed function: its handler socket, its instances
/// (processes, rings, reader threads), the queue of requests waiting for an instance, and its
/// statistics.
///
/// Threads: the gateway's event loops call `submit`; each instance's reader thread delivers
/// responses; each instance's waiter thread reports its exit. All shared state is behind `lock`,
/// and promises are completed outside it.
final class FunctionRuntime: @unchecked Sendable {
    enum State: String {
        case starting, running, draining, stopped
    }

    let config: FunctionConfig
    let socketPath: String
    let logs: LogBuffer
    let generation: Int
    private let shmBufferSize: Int
    private let launch: HandlerLaunch
    private let criu: Criu
    private let snapshotDirectory: String
    private let restoreBudget: Duration
    /// The function's CRIU image once built (`snapshot: true`).
    private var snapshot: FunctionSnapshot?
    private let memory: MemoryCgroup
    /// The eBPF data plane (`dataplane: ebpf`): a process handler's socket is put in it.
    private let dataplane: EbpfDataplane?
    private let listenAddress: String
    private let group: any EventLoopGroup
    private let logger: Logger

    private let lock = NIOLock()
    private var state = State.starting
    private var instances: [Instance] = []
    private var instanceByPID: [pid_t: Instance] = [:]
    private var queue = InvocationQueue()
    private var handshake: HandshakeServer?
    private var consecutiveFailures = 0
    private var restartScheduled = false
    private var stats = FunctionStats()
    private var readyWaiters: [Int: EventLoopPromise<Void>] = [:]
    private var idleWaiters: [EventLoopPromise<Void>] = []
    private var exitWaiters: [EventLoopPromise<Void>] = []
    private var handshakeChannel: (any Channel)?
    private var housekeeping: RepeatedTask?

    /// SIGTERM, then SIGKILL after this long.
    static let stopGracePeriod = TimeAmount.seconds(5)

    init(
        config: FunctionConfig, orchestrator: OrchestratorConfig, pythonSDK: String?, generation: Int,
        memory: MemoryCgroup, dataplane: EbpfDataplane?, group: any EventLoopGroup, logger: Logger
    ) {
        self.memory = memory
        self.dataplane = dataplane
        listenAddress = orchestrator.listenAddress
        criu = Criu(path: orchestrator.criuPath)
        snapshotDirectory =
            orchestrator.snapshotDirectory + "/\(getpid())-\(config.id)-g\(generation)"
        restoreBudget = orchestrator.restoreTimeout.duration
        self.config = config
        self.generation = generation
        shmBufferSize = orchestrator.shmBufferSize.bytes
        socketPath = UnixSocketPath.handlerSocket(function: config.id, controlSocket: orchestrator.controlSocket)
        launch = HandlerLaunch(
            function: config, socketPath: socketPath, pythonSDK: pythonSDK, python: orchestrator.python)
        logs = LogBuffer()
        self.group = group
        var logger = logger
        logger[metadataKey: "function"] = "\(config.id)"
        self.logger = logger
    }

    var id: FunctionID { config.id }

    // MARK: Start and stop

    /// Binds the handler socket and starts the first instance; returns once it is serving.
    /// `socketPath` may be shared with an older generation being replaced: the caller passes a
    /// fresh path through `HandshakeServer` binding, so both can run during a hot deploy.
    func start(handshake: HandshakeServer) async throws(HandlerError) {
        handshake.register(self)
        lock.withLock { self.handshake = handshake }
        if config.snapshot {
            do {
                let built = try await buildSnapshot()
                lock.withLock { snapshot = built }
                logger.info(
                    "snapshot ready",
                    metadata: [
                        "image": "\(built.directory)", "bytes": "\(built.imageBytes)",
                        "dump_ms": "\(built.dumpDuration.milliseconds)",
                    ])
            } catch {
                await stop()
                throw error
            }
        }
        // A snapshot build already proved the handler starts; without one, the first instance
        // does, even when min_warm is 0 (it is stopped again once idle).
        let first = config.snapshot ? config.minWarm.rawValue : max(1, config.minWarm.rawValue)
        let ready = lock.withLock { (0..<first).map { _ in launchInstanceLocked() } }
        do {
            for instance in ready { try await instance.get() }
        } catch let error as HandlerError {
            await stop()
            throw error
        } catch {
            await stop()
            throw .spawnFailed(function: id, program: launch.program, reason: "\(error)")
        }
        lock.withLock {
            if state == .starting { state = .running }
        }
        // Idle checks a few times per idle_timeout_ms (at most once a second).
        let period = TimeAmount.milliseconds(Int64(min(1000, max(50, config.idleTimeout.milliseconds / 4))))
        housekeeping = group.next().scheduleRepeatedTask(initialDelay: period, delay: period) {
            [weak self] _ in self?.stopIdleInstances()
        }
    }

    /// Stops taking requests and waits until every queued and in-flight request is answered;
    /// with `handlerConnections`, also until a process handler's own connections are done.
    func drain(handlerConnections: Bool = false) async {
        let idle: EventLoopFuture<Void>? = lock.withLock {
            if state == .starting || state == .running { state = .draining }
            if queue.isEmpty && instances.allSatisfy({ $0.inFlight.isEmpty }) { return nil }
            let promise = group.next().makePromise(of: Void.self)
            idleWaiters.append(promise)
            return promise.futureResult
        }
        try? await idle?.get()
        if handlerConnections { await drainHandlerConnections() }
    }

    /// A process handler answers its connections itself; once the trigger port points at a new
    /// generation (eBPF), the old one is stopped only when the connections it accepted, or that
    /// wait in its accept queue, are done: at most `timeout_ms`, and 5 s, since an idle
    /// keep-alive client looks the same as a request in progress.
    private func drainHandlerConnections() async {
        guard dataplane != nil, config.handlerProtocol == .process else { return }
        let deadline = ContinuousClock.now + .milliseconds(min(config.timeout.rawValue, 5000))
        while ContinuousClock.now < deadline {
            let pids = lock.withLock { instances.filter { $0.phase == .serving }.map(\.pid) }
            if pids.allSatisfy({ HandlerSockets.pendingConnections(of: $0) == 0 }) { return }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Stops every instance (SIGTERM, then SIGKILL after the grace period), answers whatever is
    /// still queued with 503 and removes the function's shared memory.
    func stop() async {
        housekeeping?.cancel()
        let (exited, queued): (EventLoopFuture<Void>?, [Invocation]) = lock.withLock {
            state = .stopped
            let queued = queue.removeAll()
            for instance in instances where instance.phase != .exited {
                signal(instance, SIGTERM, reason: nil)
            }
            if instances.isEmpty { return (nil, queued) }
            let promise = group.next().makePromise(of: Void.self)
            exitWaiters.append(promise)
            return (promise.futureResult, queued)
        }
        for invocation in queued {
            complete(invocation, .error(.serviceUnavailable, "function \(id) is shutting down"))
        }
        guard let exited else {
            lock.withLock { snapshot }?.remove()
            return
        }
        let killer = group.next().scheduleTask(in: Self.stopGracePeriod) { [self] in
            lock.withLock {
                for instance in instances where instance.phase != .exited {
                    logger.warning(
                        "instance did not stop within 5 s; killing it", metadata: ["instance": "\(instance.number)"])
                    signal(instance, SIGKILL, reason: nil)
                }
            }
        }
        try? await exited.get()
        killer.cancel()
        lock.withLock { snapshot }?.remove()
    }

    // MARK: Requests

    /// Takes one request from the gateway. The promise is always completed: with the handler's
    /// response, or with 429 / 502 / 503 / 504 made here.
    func submit(_ invocation: Invocation, on eventLoop: any EventLoop) {
        let timeout = TimeAmount.milliseconds(Int64(config.timeout.milliseconds))
        invocation.timeoutTask = eventLoop.scheduleTask(in: timeout) { [weak self, weak invocation] in
            guard let self, let invocation else { return }
            self.timedOut(invocation)
        }
        var rejection: GatewayResponse?
        lock.withLock {
            guard state == .running || state == .starting else {
                rejection = .error(.serviceUnavailable, "function \(id) is not accepting requests (\(state.rawValue))")
                return
            }
            if queue.isEmpty, let instance = availableInstanceLocked() {
                if dispatchLocked(invocation, to: instance) { return }
            }
            guard queue.count < config.maxQueue.rawValue else {
                stats.rejected += 1
                rejection = .error(
                    .tooManyRequests,
                    "function \(id) is at capacity: \(liveInstanceCountLocked()) instance(s) busy and \(queue.count) request(s) queued (max_queue)",
                    extraHeaders: [("retry-after", "1")])
                return
            }
            queue.append(invocation)
            scaleUpLocked()
        }
        if let rejection { complete(invocation, rejection) }
    }

    private func timedOut(_ invocation: Invocation) {
        let handled: Bool = lock.withLock {
            if queue.remove(invocation) {
                stats.timeouts += 1
                return true
            }
            guard let instance = invocation.instance,
                instance.inFlight.removeValue(forKey: invocation.requestID) != nil
            else { return false }
            stats.timeouts += 1
            signal(
                instance, SIGKILL,
                reason:
                    "request \(invocation.head.method) \(invocation.head.uri) ran over timeout_ms \(config.timeout.milliseconds)"
            )
            return true
        }
        guard handled else { return }
        invocation.timeoutTask = nil
        complete(
            invocation,
            .error(.gatewayTimeout, "function \(id) did not answer within timeout_ms \(config.timeout.milliseconds)"))
    }

    /// The least-loaded serving instance with room for one more request.
    private func availableInstanceLocked() -> Instance? {
        var best: Instance?
        for instance in instances
        where instance.isAvailable && !instance.requestRingFull
            && instance.inFlight.count < config.concurrency.rawValue
        {
            if best == nil || instance.inFlight.count < best!.inFlight.count { best = instance }
        }
        return best
    }

    /// Writes the request into the instance's ring. False (nothing changed) when the ring is full.
    private func dispatchLocked(_ invocation: Invocation, to instance: Instance) -> Bool {
        guard let requests = instance.requests else { return false }
        let requestID = instance.nextRequestID
        let head = invocation.head
        let method = head.method.rawValue
        let block = InvocationFormat.headerBlockSize(head.headers)
        let size = InvocationRequest.encodedSize(
            method: method, target: head.uri, headerBlock: block.bytes, body: invocation.body?.readableBytes ?? 0)
        let written: Bool
        do {
            // Header fields, then the body copied and checksummed in one pass.
            written = try requests.tryWrite(
                length: size,
                storing: { buffer in
                    let encode = { (body: UnsafeRawBufferPointer) in
                        InvocationRequest.encodeWithChecksum(
                            id: requestID, method: method, target: head.uri, headers: head.headers, headerBlock: block,
                            body: body, into: buffer)
                    }
                    if let body = invocation.body {
                        return body.withUnsafeReadableBytes(encode)
                    } else {
                        return encode(UnsafeRawBufferPointer(start: nil, count: 0))
                    }
                })
        } catch {
            // Poisoned by the handler (or a size the validator should have ruled out): this
            // instance cannot take requests any more.
            signal(instance, SIGKILL, reason: "its request ring failed: \(error)")
            return false
        }
        guard written else {
            instance.requestRingFull = true
            return false
        }
        instance.nextRequestID += 1
        if let readyAt = instance.readyAt, readyAt > invocation.arrived, let startup = instance.startupMilliseconds {
            invocation.coldStart = (instance.origin, startup, instance.restoreMilliseconds)
        }
        invocation.requestID = requestID
        invocation.instance = instance
        instance.inFlight[requestID] = invocation
        instance.lastActive = .now()
        return true
    }

    /// Hands queued requests to instances with room.
    private func pumpLocked() {
        while let next = queue.first, let instance = availableInstanceLocked() {
            guard dispatchLocked(next, to: instance) else { continue }
            _ = queue.popFirst()
        }
        if state == .draining { notifyIdleLocked() }
    }

    private func notifyIdleLocked() {
        guard queue.isEmpty, instances.allSatisfy({ $0.inFlight.isEmpty }) else { return }
        let waiters = idleWaiters
        idleWaiters = []
        waiters.forEach { $0.succeed() }
    }

    /// Called by an instance's reader thread with one message from its response ring.
    fileprivate func deliver(_ bytes: UnsafeRawBufferPointer, from instance: Instance) {
        let view: InvocationResponseView
        do {
            view = try InvocationResponseView(bytes)
        } catch {
            let victim: Invocation? = lock.withLock {
                signal(instance, SIGKILL, reason: "it wrote a malformed response: \(error.reason)")
                return error.requestID.flatMap { instance.inFlight.removeValue(forKey: $0) }
            }
            if let victim {
                complete(victim, .error(.badGateway, "function \(id) sent a malformed response: \(error.reason)"))
            }
            return
        }
        var headers = HTTPHeaders()
        for header in view.headers where !Self.hopByHop.contains(header.name.lowercased()) {
            guard HeaderSyntax.isValid(name: header.name, value: header.value) else {
                // CR or LF in a header would let a handler write arbitrary bytes into the HTTP stream.
                let victim: Invocation? = lock.withLock {
                    signal(
                        instance, SIGKILL, reason: "it sent an invalid response header \(Self.printable(header.name))")
                    return instance.inFlight.removeValue(forKey: view.id)
                }
                if let victim {
                    complete(
                        victim,
                        .error(.badGateway, "function \(id) sent an invalid header name or value (control characters)"))
                }
                return
            }
            headers.add(name: header.name, value: header.value)
        }
        headers.add(name: "x-aether-instance", value: String(instance.number))
        var body = ByteBufferAllocator().buffer(capacity: view.body.count)
        body.writeBytes(view.body)
        let response = GatewayResponse(
            status: HTTPResponseStatus(statusCode: Int(view.status)), headers: headers, body: body)

        let invocation: Invocation? = lock.withLock {
            let invocation = instance.inFlight.removeValue(forKey: view.id)
            instance.requestRingFull = false
            instance.lastActive = .now()
            if invocation != nil { instance.served += 1 }
            pumpLocked()
            return invocation
        }
        guard let invocation else {
            // Its request already timed out and was answered with 504.
            logger.debug(
                "late response dropped", metadata: ["instance": "\(instance.number)", "request": "\(view.id)"])
            return
        }
        var answered = response
        if let cold = invocation.coldStart {
            answered.headers.add(name: "x-aether-cold-start", value: cold.origin.rawValue)
            answered.headers.add(name: "x-aether-startup-ms", value: String(cold.milliseconds))
            if let restore = cold.restoreMilliseconds {
                answered.headers.add(name: "x-aether-restore-ms", value: String(restore))
            }
        } else {
            answered.headers.add(name: "x-aether-cold-start", value: "no")
        }
        complete(invocation, answered)
    }

    static let hopByHop: Set<String> = ["content-length", "transfer-encoding", "connection", "keep-alive"]

    /// Answers one request and records it.
    private func complete(_ invocation: Invocation, _ response: GatewayResponse) {
        invocation.timeoutTask?.cancel()
        let latency = NIODeadline.now() - invocation.arrived
        lock.withLock {
            stats.record(status: Int(response.status.code), latency: latency)
            switch invocation.coldStart?.origin {
            case .spawn: stats.spawnColdStarts += 1
            case .restore: stats.restoreColdStarts += 1
            case nil: break
            }
            if state == .draining { notifyIdleLocked() }
        }
        invocation.promise.succeed(response)
    }

    // MARK: Instances

    private func liveInstanceCountLocked() -> Int {
        instances.count { $0.phase != .stopping && $0.phase != .exited }
    }

    /// Starts another instance when requests are waiting and the limit allows it.
    private func scaleUpLocked() {
        guard state == .running, !restartScheduled else { return }
        // One new instance per waiting request that no starting instance will take, up to
        // max_instances: 20 requests against zero instances start (or restore) several at once.
        let live = liveInstanceCountLocked()
        let starting = instances.count { $0.phase == .starting || $0.phase == .attaching }
        let wanted = min(config.maxInstances.rawValue, live - starting + queue.count)
        for _ in 0..<max(0, wanted - live) { _ = launchInstanceLocked() }
    }

    /// Spawns one instance. The returned future completes when it is serving or fails with the
    /// reason it never got there. Runs under the lock, so a handler that connects at once is
    /// found by its PID.
    private func launchInstanceLocked() -> EventLoopFuture<Void> {
        let eventLoop = group.next()
        let ready = eventLoop.makePromise(of: Void.self)
        guard let number = handshake?.takeInstanceNumber() else {
            ready.fail(
                HandlerError.spawnFailed(function: id, program: launch.program, reason: "the function is not started"))
            return ready.futureResult
        }
        var region: SharedMemoryRegion?
        if config.handlerProtocol == .sdk {
            let name = SharedMemoryRegion.name(function: id.rawValue, instance: number)
            do {
                region = try SharedMemoryRegion.create(name: name, ringCapacity: shmBufferSize)
            } catch {
                ready.fail(
                    HandlerError.spawnFailed(
                        function: id, program: launch.program, reason: "cannot create shared memory \(name): \(error)"))
                return ready.futureResult
            }
        }
        if let snapshot {
            let instance = Instance(number: number, pid: 0, origin: .restore, region: region)
            instances.append(instance)
            readyWaiters[number] = ready
            BackgroundThread.start(name: "restore-\(number)") { [self] in restoreInstance(instance, from: snapshot) }
            return ready.futureResult
        }
        // A process handler binds AETHER_LISTEN_PORT: with eBPF a private port, whose socket the
        // trigger port is steered to once the handler is READY (so generations can overlap).
        var listenPort: UInt16?
        if config.handlerProtocol == .process {
            do {
                listenPort =
                    dataplane == nil
                    ? config.triggerPort.rawValue : try ListeningSocket.freePort(address: listenAddress)
            } catch {
                ready.fail(
                    HandlerError.spawnFailed(
                        function: id, program: launch.program, reason: "no free port for AETHER_LISTEN_PORT: \(error)"))
                return ready.futureResult
            }
        }
        let process: SpawnedProcess
        do {
            process = try ProcessSpawner.spawn(
                program: launch.program, arguments: launch.arguments,
                environment: launch.environment(instance: number, listenPort: listenPort),
                searchPath: launch.searchPath)
        } catch {
            try? region?.unlink()
            ready.fail(HandlerError.spawnFailed(function: id, program: launch.program, reason: error.reason))
            return ready.futureResult
        }
        let instance = Instance(number: number, pid: process.pid, origin: .spawn, region: region)
        instance.listenPort = listenPort
        switch memory.confine(pid: process.pid, name: "\(id)-g\(generation)-\(number)", limit: config.memoryLimit) {
        case .success(let folder):
            instance.cgroup = folder
        case .failure(let failure):
            // Not started unconfined: the limit is part of the function's contract.
            instance.startupFailure = .spawnFailed(
                function: id, program: launch.program, reason: "cannot enforce memory_limit_mb: \(failure.reason)")
            kill(-process.pid, SIGKILL)
        }
        instances.append(instance)
        instanceByPID[process.pid] = instance
        readyWaiters[number] = ready
        logger.info(
            "instance started", metadata: ["instance": "\(number)", "pid": "\(process.pid)"])

        OutputCapture.start(fd: process.stdout, stream: "stdout", instance: number, logs: logs)
        OutputCapture.start(fd: process.stderr, stream: "stderr", instance: number, logs: logs)
        watch(instance)
        let waited = config.startupTimeout.rawValue
        eventLoop.scheduleTask(in: .milliseconds(Int64(waited))) { [self] in
            lock.withLock {
                guard instance.phase == .starting || instance.phase == .attaching else { return }
                let awaiting = instance.phase == .starting ? "READY" : "ATTACHED"
                instance.startupFailure = .startupTimedOut(
                    function: id, instance: number, waitedMilliseconds: waited, awaiting: awaiting)
                signal(instance, SIGKILL, reason: "no \(awaiting) within startup_timeout_ms \(waited)")
            }
        }
        return ready.futureResult
    }

    /// Builds the function's snapshot on a background thread.
    private func buildSnapshot() async throws(HandlerError) -> FunctionSnapshot {
        let promise = group.next().makePromise(of: FunctionSnapshot.self)
        let (config, launch, directory, criu, budget, memory, logs) = (
            config, launch, snapshotDirectory, criu, restoreBudget, memory, logs
        )
        let cgroupName = "\(id)-g\(generation)-template"
        let slotNames = Atomic<Int>(0)
        let (id, generation, limit) = (id, generation, config.memoryLimit)
        // Each criu swrk waiting to restore a copy sits in the cgroup that copy will have.
        let prepareSlot: @Sendable (pid_t) -> String? = { pid in
            let slot = slotNames.wrappingAdd(1, ordering: .relaxed).oldValue
            guard
                case .success(let folder) = memory.confine(
                    pid: pid, name: "\(id)-g\(generation)-s\(slot)", limit: limit)
            else { return nil }
            return folder
        }
        BackgroundThread.start(name: "snapshot-\(id)") {
            do throws(FunctionSnapshot.BuildFailure) {
                promise.succeed(
                    try FunctionSnapshot.build(
                        function: config, launch: launch, directory: directory, criu: criu, budget: budget,
                        memory: memory, cgroupName: cgroupName, logs: logs, prepareSlot: prepareSlot))
            } catch {
                promise.fail(error.error)
            }
        }
        do {
            return try await promise.futureResult.get()
        } catch let error as HandlerError {
            throw error
        } catch {
            throw .snapshotFailed(function: id, detail: "\(error)")
        }
    }

    /// Brings up a restored copy for `instance` (a placeholder until criu returns), on its own
    /// thread: restore, confine, attach. Every failure ends as the instance's exit.
    private func restoreInstance(_ instance: Instance, from snapshot: FunctionSnapshot) {
        let copy: FunctionSnapshot.Copy
        do {
            // The copy's ATTACH goes with the restore (see FunctionSnapshot.restore).
            copy = try snapshot.restore(
                logName: "restore-\(instance.number)", firstLine: instance.region.map { "ATTACH \($0.name)\n" })
        } catch {
            lock.withLock {
                stats.restoreFailures += 1
                if case .latencyViolation = error { stats.latencyViolations += 1 }
                instance.startupFailure = .restoreFailed(function: id, instance: instance.number, error: error)
                logger.error("restore failed: \(error)", metadata: ["instance": "\(instance.number)"])
            }
            instanceExited(instance, status: .notStarted)
            return
        }
        let restoreMilliseconds = copy.duration.milliseconds
        let stillWanted: Bool = lock.withLock {
            instance.pid = copy.pid
            instance.controlDescriptor = copy.control
            instance.restoreMilliseconds = restoreMilliseconds
            instanceByPID[copy.pid] = instance
            stats.recordRestore(milliseconds: restoreMilliseconds)
            // criu restored the copy inside the cgroup its slot was prepared with.
            guard let cgroup = copy.cgroup else {
                instance.startupFailure = .spawnFailed(
                    function: id, program: "criu restore",
                    reason: "cannot enforce memory_limit_mb: no cgroup for the copy")
                return false
            }
            instance.cgroup = cgroup
            return instance.phase == .starting
        }
        logger.info(
            "instance restored",
            metadata: [
                "instance": "\(instance.number)", "pid": "\(copy.pid)", "restore_ms": "\(restoreMilliseconds)",
            ])
        OutputCapture.start(fd: copy.stdout, stream: "stdout", instance: instance.number, logs: logs)
        OutputCapture.start(fd: copy.stderr, stream: "stderr", instance: instance.number, logs: logs)
        watch(instance)
        guard stillWanted else {
            lock.withLock { signal(instance, SIGKILL, reason: nil) }
            return
        }
        var ready: EventLoopPromise<Void>?
        do throws(ControlLine.Failure) {
            guard instance.region != nil else { return }  // its ATTACH went with the restore
            lock.withLock { instance.phase = .attaching }
            let answer = try ControlLine.read(copy.control, timeout: config.startupTimeout.duration)
            lock.withLock {
                guard instance.phase == .attaching else { return }
                if answer == "ATTACHED" {
                    ready = becameReadyLocked(instance)
                } else {
                    let detail = "it answered ATTACH with \(Self.printable(answer))"
                    instance.startupFailure = .protocolViolation(
                        function: id, instance: instance.number, detail: detail)
                    signal(instance, SIGKILL, reason: "protocol violation: \(detail)")
                }
            }
        } catch {
            lock.withLock {
                instance.startupFailure = .protocolViolation(
                    function: id, instance: instance.number, detail: "restored copy: \(error.description)")
                signal(instance, SIGKILL, reason: "restored copy: \(error.description)")
            }
        }
        ready?.succeed()
    }

    /// Starts the threads that follow a running instance: its reaper and its response reader.
    private func watch(_ instance: Instance) {
        let pid = instance.pid
        BackgroundThread.start(name: "wait-\(pid)") { [self] in
            var status: CInt = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            instanceExited(instance, status: ExitStatus(waitStatus: status))
        }
        if instance.responses != nil {
            BackgroundThread.start(name: "ring-\(pid)") { [self] in readResponses(of: instance) }
        }
    }

    /// The reader thread of one sdk instance: waits on the response ring and delivers each
    /// message until the instance has exited.
    private func readResponses(of instance: Instance) {
        guard let responses = instance.responses else { return }
        while !instance.readerShouldStop.load(ordering: .acquiring) {
            do {
                try responses.read(timeout: .milliseconds(100)) { bytes in deliver(bytes, from: instance) }
            } catch .timedOut {
                continue
            } catch .corruptedData(let offset, let stored, let computed) {
                logger.error(
                    "corrupted response skipped",
                    metadata: [
                        "instance": "\(instance.number)", "offset": "\(offset)",
                        "crc": "stored \(stored), computed \(computed)",
                    ])
                lock.withLock { signal(instance, SIGKILL, reason: "its response ring carried a corrupted message") }
            } catch {
                lock.withLock { signal(instance, SIGKILL, reason: "its response ring failed: \(error)") }
                break
            }
        }
    }

    /// Sends a signal to the instance's process group, remembering why (logged on exit).
    private func signal(_ instance: Instance, _ signal: CInt, reason: String?) {
        guard instance.phase != .exited else { return }
        if instance.phase != .stopping {
            instance.phase = .stopping
            if let reason {
                instance.stopReason = reason
                logger.warning("stopping instance: \(reason)", metadata: ["instance": "\(instance.number)"])
            }
        }
        // The handler leads its own process group (ProcessSpawner; a restored copy keeps the
        // template's), so its children go too. No PID yet: a restore is running, and its
        // thread stops the copy when it sees the phase.
        if instance.origin == .restore && signal == SIGTERM && instance.controlDescriptor >= 0 {
            // A restored copy is PID 1 of its namespace, where SIGTERM without a handler is
            // ignored; its runtime exits when its control connection ends instead.
            shutdown(instance.controlDescriptor, CInt(SHUT_RDWR))
        } else if instance.pid > 0 {
            kill(-instance.pid, signal)
        }
    }

    /// Called on the waiter thread once the process has been reaped.
    private func instanceExited(_ instance: Instance, status: ExitStatus) {
        instance.readerShouldStop.store(true, ordering: .releasing)
        // The name goes now; the reader thread keeps its mapping until it notices the flag.
        try? instance.region?.unlink()
        let outcome = lock.withLock { exitedLocked(instance, status: status) }
        let cause = "\(status)" + (instance.stopReason.map { " (\($0))" } ?? "")
        for orphan in outcome.orphans {
            complete(orphan, .error(.badGateway, "function \(id): the instance serving this request \(cause)"))
        }
        for waiting in outcome.unservable {
            complete(
                waiting,
                .error(
                    .serviceUnavailable,
                    "function \(id) has no running instance: \(outcome.startupError?.description ?? "it failed to start")",
                    extraHeaders: [("retry-after", "1")]))
        }
        if let readyWaiter = outcome.readyWaiter, let error = outcome.startupError {
            readyWaiter.fail(error)
        }
        outcome.stopWaiters.forEach { $0.succeed() }
    }

    /// What an instance's exit leaves to be answered once the lock is released.
    private struct ExitOutcome {
        /// Requests it was serving: 502.
        var orphans: [Invocation] = []
        /// Queued requests nothing can serve (it failed to start and no other instance serves): 503.
        var unservable: [Invocation] = []
        var readyWaiter: EventLoopPromise<Void>?
        var startupError: HandlerError?
        var stopWaiters: [EventLoopPromise<Void>] = []
    }

    private func exitedLocked(_ instance: Instance, status: ExitStatus) -> ExitOutcome {
        var outcome = ExitOutcome()
        if instance.controlDescriptor >= 0 {
            close(instance.controlDescriptor)
            instance.controlDescriptor = -1
        }
        if let cgroup = instance.cgroup {
            if memory.wasOutOfMemory(cgroup) {
                instance.stopReason =
                    "the kernel's OOM killer stopped it at memory_limit_mb \(config.memoryLimit.megabytes)"
            }
            memory.remove(cgroup)
        }
        let wasServing = instance.readyAt != nil
        let unexpected = instance.phase != .stopping
        instance.phase = .exited
        instances.removeAll { $0 === instance }
        if instance.pid > 0 { instanceByPID[instance.pid] = nil }
        outcome.orphans = Array(instance.inFlight.values)
        instance.inFlight.removeAll()
        outcome.readyWaiter = readyWaiters.removeValue(forKey: instance.number)

        if !wasServing {
            let stderrTail = logs.tail(200).filter { $0.instance == instance.number && $0.stream == "stderr" }
            var output = stderrTail.suffix(10).map(\.text).joined(separator: "\n")
            if let listenPort = instance.listenPort, listenPort != config.triggerPort.rawValue,
                output.contains("Address already in use")
            {
                // Most likely a handler written for the seed's protocol, binding the trigger port.
                output +=
                    "\n(with dataplane: ebpf the orchestrator holds trigger port \(config.triggerPort); a process handler binds AETHER_LISTEN_PORT, here \(listenPort))"
            }
            outcome.startupError =
                instance.startupFailure
                ?? .exitedDuringStartup(
                    function: id, instance: instance.number, status: status.description, output: output)
            consecutiveFailures += 1
            if !instances.contains(where: { $0.phase == .serving }) { outcome.unservable = queue.removeAll() }
        } else if unexpected {
            consecutiveFailures += 1
        }
        if unexpected || instance.stopReason != nil {
            if unexpected { stats.crashes += 1 }
            logger.error(
                "instance \(status)\(instance.stopReason.map { " (\($0))" } ?? "")",
                metadata: ["instance": "\(instance.number)", "pid": "\(instance.pid)"])
        } else {
            logger.info("instance stopped", metadata: ["instance": "\(instance.number)"])
        }
        if instances.isEmpty && state == .stopped {
            outcome.stopWaiters = exitWaiters
            exitWaiters = []
        }
        replaceIfNeededLocked()
        pumpLocked()
        return outcome
    }

    /// Keeps at least one instance (and one per waiting request, up to max_instances) running,
    /// retrying with exponential back-off (0.1 s ... 10 s) after failures.
    private func replaceIfNeededLocked(afterBackOff: Bool = false) {
        guard state == .running || state == .draining, !restartScheduled else { return }
        let live = liveInstanceCountLocked()
        let wanted =
            state == .running
            ? max(config.minWarm.rawValue, min(queue.count, config.maxInstances.rawValue)) : (queue.isEmpty ? 0 : 1)
        guard live < wanted else { return }
        if consecutiveFailures == 0 || afterBackOff {
            _ = launchInstanceLocked()
            return
        }
        let delay = min(100 * (1 << min(consecutiveFailures - 1, 7)), 10_000)
        restartScheduled = true
        logger.warning("restarting instance in \(delay) ms after \(consecutiveFailures) failure(s)")
        group.next().scheduleTask(in: .milliseconds(Int64(delay))) { [self] in
            lock.withLock {
                restartScheduled = false
                replaceIfNeededLocked(afterBackOff: true)
            }
        }
    }

    /// Stops instances idle for idle_timeout_ms, keeping min_warm (0 = scale to zero).
    private func stopIdleInstances() {
        lock.withLock {
            guard state == .running, queue.isEmpty else { return }
            let idleLimit = TimeAmount.milliseconds(Int64(config.idleTimeout.milliseconds))
            var serving = instances.filter { $0.phase == .serving }.count
            let now = NIODeadline.now()
            for instance in instances.reversed() where serving > config.minWarm.rawValue {
                guard instance.phase == .serving, instance.inFlight.isEmpty, now - instance.lastActive > idleLimit
                else { continue }
                logger.info("stopping idle instance", metadata: ["instance": "\(instance.number)"])
                signal(instance, SIGTERM, reason: nil)
                serving -= 1
            }
        }
    }

    // MARK: Handshake (called by HandshakeServer)

    /// A process connected to AETHER_SOCKET; nil if it is not one of ours.
    func controlConnected(pid: pid_t, channel: any Channel) -> Int? {
        lock.withLock {
            guard let instance = instanceByPID[pid], instance.phase == .starting, instance.control == nil else {
                return nil
            }
            instance.control = channel
            return instance.number
        }
    }

    /// One line from an instance's control connection.
    func controlLine(_ line: String, instance number: Int) {
        var reply: String?
        var ready: EventLoopPromise<Void>?
        lock.withLock {
            guard let instance = instances.first(where: { $0.number == number }) else { return }
            switch (line, instance.phase) {
            case ("READY", .starting):
                if let region = instance.region {
                    instance.phase = .attaching
                    reply = "ATTACH \(region.name)\n"
                } else if let failure = steerToHandlerLocked(instance) {
                    instance.startupFailure = .protocolViolation(function: id, instance: number, detail: failure)
                    signal(instance, SIGKILL, reason: "protocol violation: \(failure)")
                } else {
                    ready = becameReadyLocked(instance)
                }
            case ("ATTACHED", .attaching):
                ready = becameReadyLocked(instance)
            default:
                guard instance.phase != .stopping && instance.phase != .exited else { return }
                let detail =
                    line.hasPrefix("ERROR ")
                    ? "it reported: \(line.dropFirst(6))"
                    : "it sent \(Self.printable(line)) while \(instance.phase == .starting ? "READY" : instance.phase == .attaching ? "ATTACHED" : "nothing") was expected"
                instance.startupFailure = .protocolViolation(function: id, instance: number, detail: detail)
                signal(instance, SIGKILL, reason: "protocol violation: \(detail)")
            }
            if let reply { instance.control?.writeAndFlush(ByteBuffer(string: reply), promise: nil) }
        }
        ready?.succeed()
    }

    /// The instance's control connection sent more than a line's worth without a newline.
    func controlOverflow(instance number: Int) {
        lock.withLock {
            guard let instance = instances.first(where: { $0.number == number }) else { return }
            let detail = "it sent a line longer than 4096 bytes on AETHER_SOCKET"
            instance.startupFailure = .protocolViolation(function: id, instance: number, detail: detail)
            signal(instance, SIGKILL, reason: "protocol violation: \(detail)")
        }
    }

    /// With the eBPF data plane, a READY process handler's listening socket takes over the
    /// trigger port (one map update: new connections go to it from now on). Returns why not.
    private func steerToHandlerLocked(_ instance: Instance) -> String? {
        guard let dataplane, let port = instance.listenPort else { return nil }
        let socket: CInt
        do {
            socket = try HandlerSockets.takeListeningSocket(pid: instance.pid, port: port)
        } catch {
            return error.errno == ENOENT
                ? "it sent READY without listening on AETHER_LISTEN_PORT \(port) (dataplane: ebpf steers the trigger port to that socket)"
                : "its listening socket could not be taken: \(error)"
        }
        defer { close(socket) }
        do {
            try dataplane.steer(
                port: config.triggerPort.rawValue, function: id.rawValue, socket: socket, owner: instance.pid,
                kind: .handler)
        } catch {
            return "its socket could not be put in the eBPF socket map: \(error)"
        }
        return nil
    }

    private func becameReadyLocked(_ instance: Instance) -> EventLoopPromise<Void>? {
        instance.phase = .serving
        instance.readyAt = .now()
        instance.lastActive = .now()
        consecutiveFailures = 0
        let startup = (Double((NIODeadline.now() - instance.startedAt).nanoseconds) / 1e4).rounded() / 100
        instance.startupMilliseconds = startup
        stats.lastStartupMilliseconds = startup
        logger.info(
            "instance ready", metadata: ["instance": "\(instance.number)", "startup_ms": "\(Int(startup.rounded()))"])
        pumpLocked()
        return readyWaiters.removeValue(forKey: instance.number)
    }

    static func printable(_ text: String) -> String {
        let cut = text.count > 80 ? String(text.prefix(77)) + "..." : text
        return JSONText.quoted(cut)
    }

    // MARK: Status

    func status() -> FunctionStatus {
        lock.withLock {
            FunctionStatus(
                id: id.rawValue, port: Int(config.triggerPort.rawValue), protocol: config.handlerProtocol.rawValue,
                state: state.rawValue, handler: config.handlerPath, queueDepth: queue.count,
                maxInstances: config.maxInstances.rawValue, concurrency: config.concurrency.rawValue,
                instances: instances.map { instance in
                    InstanceStatus(
                        number: instance.number, pid: Int(instance.pid), phase: instance.phase.rawValue,
                        inFlight: instance.inFlight.count, served: instance.served,
                        uptimeSeconds: Double((NIODeadline.now() - instance.startedAt).nanoseconds) / 1e9,
                        region: instance.region?.name, memoryBytes: instance.cgroup.flatMap { memory.usage(of: $0) },
                        origin: instance.origin.rawValue, startupMilliseconds: instance.startupMilliseconds)
                },
                stats: stats.summary(),
                snapshot: snapshot.map {
                    SnapshotStatus(
                        image: $0.directory, imageBytes: $0.imageBytes,
                        dumpMilliseconds: $0.dumpDuration.milliseconds,
                        restoreBudgetMilliseconds: $0.budget.milliseconds)
                })
        }
    }
}

/// RFC 9110 header syntax: a token name, and a value without CR, LF or NUL.
enum HeaderSyntax {
    static func isValid(name: String, value: String) -> Bool {
        guard !name.isEmpty else { return false }
        let tokenPunctuation = Set("!#$%&'*+-.^_`|~".utf8)
        for byte in name.utf8 {
            let isAlphanumeric =
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            guard isAlphanumeric || tokenPunctuation.contains(byte) else { return false }
        }
        return !value.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 }
    }
}

/// Requests waiting for an instance, oldest first.
struct InvocationQueue {
    private var items: [Invocation] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }
    var first: Invocation? { isEmpty ? nil : items[head] }

    mutating func append(_ invocation: Invocation) { items.append(invocation) }

    mutating func popFirst() -> Invocation? {
        guard !isEmpty else { return nil }
        let item = items[head]
        head += 1
        if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    /// Removes one queued request (a timeout); false if it is not queued.
    mutating func remove(_ invocation: Invocation) -> Bool {
        guard let index = items[head...].firstIndex(where: { $0 === invocation }) else { return false }
        items.remove(at: index)
        return true
    }

    mutating func removeAll() -> [Invocation] {
        let rest = Array(items[head...])
        items = []
        head = 0
        return rest
    }
}

/// Reads a child's stdout or stderr into the function's log, line by line.
enum OutputCapture {
    static func start(fd: CInt, stream: String, instance: Int, logs: LogBuffer) {
        BackgroundThread.start(name: "\(stream.prefix(3))-\(instance)") {
            var pending: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 16384)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                pending.append(contentsOf: chunk[..<count])
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    logs.append(
                        instance: instance, stream: stream, text: String(decoding: pending[..<newline], as: UTF8.self))
                    pending.removeSubrange(...newline)
                }
                if pending.count > LogBuffer.maximumLineLength {
                    logs.append(instance: instance, stream: stream, text: String(decoding: pending, as: UTF8.self))
                    pending.removeAll()
                }
            }
            if !pending.isEmpty {
                logs.append(instance: instance, stream: stream, text: String(decoding: pending, as: UTF8.self))
            }
            close(fd)
        }
    }
}
