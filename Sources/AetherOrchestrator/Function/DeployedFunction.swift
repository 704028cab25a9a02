import AetherCore
import AetherIPC
import AetherNet
import AetherSystem
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One generation of a deployed function: the imperative shell around its
/// `FunctionScheduler`. Every event (a request, a response, a control line, an exit, the
/// timer) goes into the scheduler under its lock; the actions it returns are performed here,
/// after the lock is released. The instances' resources are `InstanceHandle`s, started by the
/// `InstanceLauncher`.
final class DeployedFunction: Sendable, InstanceEvents {
    typealias Scheduler = FunctionScheduler<Invocation, HandlerResponse>

    let config: FunctionConfig
    let generation: Int
    let logs: LogBuffer
    /// Its live Prometheus metrics (shared by every generation of the function).
    let metrics: FunctionMetrics
    private let scheduler: Mutex<Scheduler>
    /// The generation a deploy replaced this one with on the same port: a request the gateway
    /// routed here just before the routes swapped, arriving once this one drains, goes there
    /// instead of getting 503.
    private let successor = Mutex<DeployedFunction?>(nil)
    private let handles = Mutex<[InstanceID: InstanceHandle]>([:])
    let launcher: InstanceLauncher
    private let handshake: HandshakeServer
    private let dataplane: EbpfDataplane?
    let memory: MemoryCgroup
    let criu: Criu
    let snapshotDirectory: String
    let restoreBudget: Duration
    /// The function's CRIU image once built (`snapshot: true`).
    let snapshot = Mutex<FunctionSnapshot?>(nil)
    /// CRIU images kept across orchestrator runs (`<state_dir>/images`).
    let keptImages: KeptImages
    /// The Python SDK handlers run with (part of what shapes an image).
    let pythonSDK: String?
    /// Started by `aether up` (or a restart's successor): a kept image with the current key is
    /// restored from instead of running init again. A deploy always builds afresh (a forced
    /// redeploy of an unchanged handler is asking for a new init).
    let reusesKeptImage: Bool
    /// Its places in the orchestrator's warm pool (copies restored or forked ahead of demand).
    let poolShare: WarmPoolManager.Share?
    /// The live template copies are forked from (`snapshot: fork`); nil while it is (re)started.
    let forkTemplate = Mutex<ForkTemplate?>(nil)
    private let wakeUps: WakeUpTimer
    /// Restores that failed in a row for a reason other than time (a corrupt or missing image),
    /// and whether a new image is being built because of them.
    let imageRepair = Mutex<(failures: Int, rebuilding: Bool, rebuilds: Int)>((0, false, 0))
    /// Requests an sdk instance may hold in its request ring beyond its `concurrency` once the
    /// function runs `max_instances` (FunctionScheduler.Settings.prefetch): enough that a
    /// handler finishing one finds the next already there while the event loop that reads its
    /// answers serves connections (4 left it idle with the bell: BENCHMARKS.md, "Responses read
    /// on the event loops").
    static let prefetch = 8

    /// After this many failed restores in a row the image is built again from the handler.
    static let restoreFailuresBeforeRebuild = 3
    /// `watchProcessRequests`' repeated task (process handlers).
    private let processWatch = Mutex<RepeatedTask?>(nil)
    let group: any EventLoopGroup
    let logger: Logger
    private let started: EventLoopPromise<HandlerError?>
    private let drained: EventLoopPromise<Void>
    private let stopped: EventLoopPromise<Void>

    init(
        config: FunctionConfig, orchestrator: OrchestratorConfig, pythonSDK: String?, generation: Int,
        memory: MemoryCgroup, sandbox: InstanceSandbox?, dataplane: EbpfDataplane?, handshake: HandshakeServer,
        group: any EventLoopGroup, homeLoops: [any EventLoop] = [], logger: Logger, metrics: FunctionMetrics,
        reusesKeptImage: Bool = false, warmPool: WarmPoolManager? = nil
    ) {
        // Pooled copies read their answers on the port's loop too when it has one.
        let homeGroup = Gateway.serving(homeLoops, in: group)
        self.metrics = metrics
        self.reusesKeptImage = reusesKeptImage
        let ringBytes = orchestrator.shmBufferSize.bytes
        poolShare = warmPool.map {
            WarmPoolManager.Share(
                pool: $0, function: config.id, bytes: config.memoryLimit.bytes, memory: memory,
                makeRings: { pid in
                    try? InstanceRings.make(
                        name: SharedMemoryRegion.name(
                            function: "\(config.id)-p\(getpid())-g\(generation)-pool", instance: Int(pid)),
                        ringCapacity: ringBytes)
                }, group: homeGroup)
        }
        self.config = config
        self.generation = generation
        self.memory = memory
        self.dataplane = dataplane
        self.handshake = handshake
        self.group = group
        criu = Criu(path: orchestrator.criuPath)
        snapshotDirectory = orchestrator.snapshotDirectory + "/\(getpid())-\(config.id)-g\(generation)"
        keptImages = KeptImages(
            folder: (orchestrator.stateDirectory ?? OrchestratorConfig.defaultStateDirectory) + "/images",
            limit: orchestrator.keepVersions.rawValue)
        self.pythonSDK = pythonSDK
        restoreBudget = orchestrator.restoreTimeout.duration
        let logs = LogBuffer()
        self.logs = logs
        var logger = logger
        logger[metadataKey: "function"] = "\(config.id)"
        self.logger = logger
        // A process handler serves once its socket listens (looked for after READY): with eBPF
        // the trigger port is then steered to it.
        let handshakeKind: HandshakeKind = config.handlerProtocol == .sdk ? .attach : .readyThenSteer
        scheduler = Mutex(
            Scheduler(
                settings: .init(
                    function: config.id, maxQueue: config.maxQueue.rawValue, maxInstances: config.maxInstances.rawValue,
                    minWarm: config.minWarm.rawValue, concurrency: config.concurrency.rawValue,
                    requestTimeout: .milliseconds(config.timeout.milliseconds),
                    startupTimeout: config.startupTimeout.duration,
                    idleTimeout: .milliseconds(config.idleTimeout.milliseconds),
                    start: config.snapshot ? (config.snapshotMode == .fork ? .fork : .restore) : .spawn,
                    handshake: handshakeKind,
                    memoryLimitMegabytes: config.memoryLimit.megabytes,
                    prefetch: config.handlerProtocol == .sdk ? Self.prefetch : 0,
                    restoreBudget: orchestrator.restoreTimeout.duration)))
        launcher = InstanceLauncher(
            config: config, generation: generation,
            launch: HandlerLaunch(
                function: config, socketPath: handshake.path, pythonSDK: pythonSDK, python: orchestrator.python,
                confined: sandbox != nil),
            memory: memory, usesEbpf: dataplane != nil, listenAddress: orchestrator.listenAddress,
            ringCapacity: orchestrator.shmBufferSize.bytes, handshake: handshake,
            output: OutputCapture(group: group, logs: logs), group: group, homeLoops: homeLoops, sandbox: sandbox)
        // Its timers on the loop that reads its answers, when it has one loop.
        let loop = homeGroup.next()
        started = loop.makePromise()
        drained = loop.makePromise()
        stopped = loop.makePromise()
        wakeUps = WakeUpTimer(eventLoop: loop)
    }

    deinit {
        // A promise must not be dropped unfulfilled.
        started.succeed(nil)
        drained.succeed()
        stopped.succeed()
    }

    var id: FunctionID { config.id }

    // MARK: Start and stop

    /// Builds the snapshot (`snapshot: true`) and starts the first instances; returns once they
    /// serve, or stops everything and throws why they could not.
    func start() async throws(HandlerError) {
        handshake.addUser(self)
        if config.snapshot && config.snapshotMode == .fork {
            do {
                let template = try await startForkTemplate()
                forkTemplate.withLock { $0 = template }
                logger.info("fork template ready", metadata: ["pid": "\(template.pid)"])
            } catch {
                await stop()
                throw error
            }
        } else if config.snapshot {
            do {
                let built = try await buildSnapshot(into: snapshotDirectory, reusingKept: reusesKeptImage)
                snapshot.withLock { $0 = built }
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
        event { $0.start(now: $1) }
        if let failure = try? await started.futureResult.get() {
            await stop()
            throw failure
        }
        if config.handlerProtocol == .process { watchProcessRequests() }
    }

    /// `timeout_ms` for a process handler: its connections do not pass through the gateway, so
    /// a few times per timeout the serving instances' connections are looked at (TCP_INFO): a
    /// request older than the timeout with no answer yet gets a 504 written on its connection,
    /// and the instance is killed and replaced, as an sdk instance would be.
    private func watchProcessRequests() {
        let timeout = config.timeout.milliseconds
        let period = TimeAmount.milliseconds(Int64(min(1000, max(50, timeout / 4))))
        let text = "{\"error\":\(JSONText.quoted("function \(id) did not answer within timeout_ms \(timeout)"))}"
        let answer = Array(
            ("HTTP/1.1 504 Gateway Timeout\r\ncontent-type: application/json\r\ncontent-length: \(text.utf8.count)\r\n"
                + "connection: close\r\n\r\n" + text).utf8)
        let task = group.next().scheduleRepeatedTask(initialDelay: period, delay: period) { [weak self] task in
            guard let self else {
                task.cancel()
                return
            }
            let serving = scheduler.withLock { $0.instanceSnapshots }.filter { $0.phase == "serving" }
            for instance in serving {
                guard let pid = instance.pid else { continue }
                let answered = HandlerSockets.answerOverdueRequests(of: pid, olderThan: timeout, answer: answer)
                if answered > 0 {
                    event { $0.processRequestsTimedOut(instance: instance.id, count: answered, now: $1) }
                }
            }
        }
        processWatch.withLock { $0 = task }
    }

    /// Stops taking requests and waits until every queued and in-flight request is answered;
    /// with `handlerConnections`, also until a process handler's own connections are done.
    func drain(handlerConnections: Bool = false) async {
        event { $0.drain(now: $1) }
        try? await drained.futureResult.get()
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
            let pids = scheduler.withLock { $0.instanceSnapshots }.filter { $0.phase == "serving" }.compactMap(\.pid)
            if pids.allSatisfy({ HandlerSockets.pendingConnections(of: $0) == 0 }) { return }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Stops every instance (terminate, then kill after the grace period), answers whatever is
    /// still queued and removes the function's snapshot.
    func stop() async {
        event { $0.stop(now: $1) }
        try? await stopped.futureResult.get()
        wakeUps.cancel()
        processWatch.withLock { $0?.cancel() }
        snapshot.withLock { $0 }?.remove()
        forkTemplate.withLock { template in
            defer { template = nil }
            return template
        }?.stop()
        // Its secret files go with the last of its processes.
        if let secrets = launcher.sandbox?.secrets { SecretFiles.remove(secrets) }
        handshake.removeUser(self)
    }

    // MARK: Requests

    /// Takes one request from the gateway. Its promise always gets an outcome.
    func submit(_ invocation: Invocation) {
        var next: DeployedFunction?
        let affinity = affinity()
        let actions = scheduler.withLock { scheduler -> [Scheduler.Action] in
            if scheduler.mode == .draining, let successor = successor.withLock({ $0 }) {
                next = successor
                return []
            }
            return scheduler.submit(invocation, now: .now, affinity: affinity)
        }
        if let next { return next.submit(invocation) }
        perform(actions)
    }

    /// With several home loops: the instances whose answers are read on the loop this request
    /// arrived on (`InstanceLauncher.readerLoop(for:)`).
    private func affinity() -> Scheduler.Affinity? {
        let loops = launcher.homeLoops
        guard loops.count > 1, let here = MultiThreadedEventLoopGroup.currentEventLoop,
            let index = loops.firstIndex(where: { $0 === here })
        else { return nil }
        return Scheduler.Affinity(index: index, of: loops.count)
    }

    /// Set before this generation drains (a deploy replaced it on its port).
    func handOver(to fresh: DeployedFunction) {
        successor.withLock { $0 = fresh }
    }

    /// The orchestrator answered a request with an error of its own (a timeout, a crashed or
    /// misbehaving instance, no instance that can start, a full queue): logged with the request's
    /// id, and, but for a full queue (429s come in floods), kept with the function's output as an
    /// `aether` line, so `aether logs ID --request RID` shows it beside the handler's lines.
    func requestFailed(requestID: String?, summary: String, status: Int, reason: String) {
        var metadata: Logger.Metadata = ["status": "\(status)"]
        if let requestID { metadata["request_id"] = "\(requestID)" }
        guard status != 429 else {
            logger.debug("request refused: \(summary): \(reason)", metadata: metadata)
            return
        }
        logger.warning("request failed: \(summary): \(reason)", metadata: metadata)
        logs.append(
            instance: -1, stream: "aether", text: "request_id=\(requestID ?? "-") \(status) \(summary): \(reason)")
    }

    /// The gateway answered a request 401 (no or a wrong bearer token) as soon as its head
    /// arrived: counted (with no duration), never queued.
    func unauthorized() {
        scheduler.withLock { $0.unauthorized() }
        metrics.invoked(status: 401, duration: .zero)
    }

    /// The gateway would not send a response this instance gave (not valid HTTP).
    func responseRejected(instance: InstanceID, reason: String, status: Int) {
        event { $0.responseRejected(instance: instance, reason: reason, status: status, now: $1) }
    }

    // MARK: InstanceEvents

    func launched(_ instance: InstanceID, pid: pid_t) {
        logger.info("instance started", metadata: ["instance": "\(instance)", "pid": "\(pid)"])
        event { $0.launched(instance: instance, pid: pid, now: $1) }
    }

    func restored(_ instance: InstanceID, pid: pid_t, duration: Duration, attached: Bool, resume: () -> Void) {
        imageRepair.withLock { $0.failures = 0 }
        let actions = scheduler.withLock {
            $0.restored(instance: instance, pid: pid, restoreDuration: duration, attached: attached, now: .now)
        }
        // The copy runs as soon as its request is in its ring; log lines, measurements and the
        // deadline timer follow (they were 0.1-0.3 ms of this thread before it, and the timer
        // woke another thread).
        for action in actions where !action.canWaitForAStart { perform(action) }
        resume()
        let reports = actions.filter(\.onlyReports)
        for action in actions where action.canWaitForAStart && !action.onlyReports { perform(action) }
        if attached, let loop = MultiThreadedEventLoopGroup.currentEventLoop {
            // A pooled start on the request path's loop: its log lines and measurements once its
            // first response has had time to come back (see `InstanceLauncher.takeOn`).
            loop.scheduleTask(in: InstanceLauncher.setUpAfterStart) { self.perform(reports) }
        } else {
            perform(reports)
        }
    }

    func launchFailed(_ instance: InstanceID, error: HandlerError) {
        if case .restoreFailed(_, _, let criu) = error, case .restoreFailed = criu { imageFailed() }
        _ = handles.withLock { $0.removeValue(forKey: instance) }
        event { $0.launchFailed(instance: instance, error: error, now: $1) }
    }

    func exited(_ instance: InstanceID, status: ExitStatus, outOfMemory: Bool) {
        let handle = handles.withLock { $0.removeValue(forKey: instance) }
        let output = startupOutput(of: instance, listenPort: handle?.listenPort)
        let unread = handle?.unreadRequests() ?? []
        event {
            $0.exited(
                instance: instance, status: status, output: output, outOfMemory: outOfMemory, unread: unread, now: $1)
        }
    }

    func controlLine(_ line: String, instance: InstanceID) {
        // Before the scheduler makes it serving: its first request is read as it will be rung.
        if line == InstanceRings.attached { handle(instance)?.reader?.handlerUsesFutex() }
        event { $0.controlLine(line, instance: instance, now: $1) }
    }

    func controlOverflow(instance: InstanceID) {
        event { $0.controlOverflow(instance: instance, now: $1) }
    }

    func responseArrived(instance: InstanceID, requestID: UInt64, response: HandlerResponse) {
        event {
            $0.responseArrived(
                instance: instance, requestID: requestID, status: response.status, response: response, now: $1)
        }
    }

    func malformedResponse(instance: InstanceID, requestID: UInt64?, reason: String) {
        event { $0.malformedResponse(instance: instance, requestID: requestID, reason: reason, now: $1) }
    }

    func responseCorrupted(instance: InstanceID) {
        metrics.crcError()
    }

    func responseRingFailed(instance: InstanceID, reason: String) {
        event { $0.responseRingFailed(instance: instance, reason: reason, now: $1) }
    }

    // MARK: Events in, actions out

    /// Runs one event through the scheduler (under its lock, with the time read there) and
    /// performs what it decided (after the lock).
    private func event(_ body: (inout Scheduler, ContinuousClock.Instant) -> [Scheduler.Action]) {
        let actions = scheduler.withLock { body(&$0, .now) }
        perform(actions)
    }

    private func perform(_ actions: [Scheduler.Action]) {
        // What only reports (log lines, metrics) goes last: a start's "instance ready" line was
        // written to stderr before its first request, on the request path.
        for action in actions where !action.onlyReports { perform(action) }
        for action in actions where action.onlyReports { perform(action) }
    }

    private func perform(_ action: Scheduler.Action) {
        switch action {
        case .launch(let instance, let origin, let forRequest):
            launch(instance, origin: origin, forRequest: forRequest)
        case .attach(let instance):
            guard let handle = handle(instance) else { return }
            if let failure = handle.attach() {
                // It never becomes ready: its startup deadline replaces it.
                logger.warning("cannot send ATTACH", metadata: ["instance": "\(instance)", "reason": "\(failure)"])
            }
        case .steer(let instance):
            steerWhenListening(instance)
        case .writeRequest(let invocation, let requestID, let instance):
            write(invocation, requestID: requestID, to: instance)
        case .complete(let invocation, let outcome):
            invocation.complete(outcome)
        case .signal(let instance, let signal):
            handle(instance)?.signal(signal)
        case .wakeUp(let instant):
            wakeUps.schedule(at: instant) { [weak self] in self?.event { $0.wakeUp(now: $1) } }
        case .log(let entry):
            log(entry)
        case .observe(.queueWait(let duration)):
            metrics.waited(duration)
        case .observe(.started(let kind, let duration)):
            metrics.started(kind, duration: duration)
        case .observe(.restored(let kind, let duration)):
            metrics.restored(kind, duration: duration)
        case .startFinished(let failure):
            started.succeed(failure)
        case .drained:
            drained.succeed()
        case .stopped:
            stopped.succeed()
        }
    }

    private func handle(_ instance: InstanceID) -> InstanceHandle? {
        handles.withLock { $0[instance] }
    }

    private func launch(_ instance: InstanceID, origin: InstanceOrigin, forRequest: Bool) {
        if origin != .spawn, launchWaiting(instance, origin: origin) { return }
        let handle: InstanceHandle
        switch launcher.makeHandle(instance, origin: origin, events: self) {
        case .success(let made): handle = made
        case .failure(let error):
            event { $0.launchFailed(instance: instance, error: error, now: $1) }
            return
        }
        handles.withLock { $0[instance] = handle }
        switch origin {
        case .spawn:
            launcher.spawn(handle)
        case .fork:
            guard let template = forkTemplate.withLock({ $0 }) else {
                launchFailed(
                    instance,
                    error: .snapshotFailed(
                        function: id, detail: "the fork template has ended and is being started again"))
                return
            }
            launcher.fork(handle, from: template, forRequest: forRequest)
        case .restore:
            guard let snapshot = snapshot.withLock({ $0 }) else {
                launchFailed(instance, error: .snapshotFailed(function: id, detail: "no snapshot has been built"))
                return
            }
            launcher.restore(handle, from: snapshot, forRequest: forRequest)
        }
    }

    /// Starts a copy from the warm pool, if one waits: it attached there, so the instance takes
    /// its region. False when none waits (or every one had ended).
    private func launchWaiting(_ instance: InstanceID, origin: InstanceOrigin) -> Bool {
        func next() -> WaitingCopy? {
            origin == .fork
                ? forkTemplate.withLock({ $0 })?.takeWaiting() : snapshot.withLock({ $0 })?.takeWaiting()
        }
        while let waiting = next() {
            guard let rings = waiting.rings,
                case .success(let handle) = launcher.makeHandle(instance, origin: origin, events: self, rings: rings)
            else {
                waiting.kill()
                continue
            }
            handles.withLock { $0[instance] = handle }
            if launcher.startWaiting(handle, copy: waiting, isChild: origin == .restore) { return true }
            _ = handles.withLock { $0.removeValue(forKey: instance) }
        }
        return false
    }

    private func write(_ invocation: Invocation, requestID: UInt64, to instance: InstanceID) {
        guard let handle = handle(instance) else {
            // Gone since the decision: its exit answers the request.
            return
        }
        // Before the write: once the request is in the ring its response may be read at once.
        invocation.trace?.dispatched(to: instance)
        switch handle.write(invocation, requestID: requestID) {
        case .written:
            break
        case .full:
            event { $0.requestNotWritten(instance: instance, requestID: requestID, now: $1) }
        case .failed(let reason):
            event { $0.requestRingFailed(instance: instance, requestID: requestID, reason: reason, now: $1) }
        }
    }

    /// A READY process handler serves once its socket listens on its port; with the eBPF data
    /// plane that socket then takes over the trigger port. A handler written to the seed's
    /// protocol says READY before it binds: until its socket listens, this looks again every
    /// 10 ms (the scheduler's startup deadline ends the wait); then `steered`.
    private func steerWhenListening(_ instance: InstanceID) {
        switch steer(instance) {
        case .steered:
            event { $0.steered(instance: instance, failure: nil, now: $1) }
        case .failed(let reason):
            event { $0.steered(instance: instance, failure: reason, now: $1) }
        case .notListeningYet:
            group.next().scheduleTask(in: .milliseconds(10)) { [weak self] in self?.steerWhenListening(instance) }
        case .gone:
            break
        }
    }

    private enum SteerResult {
        case steered
        case failed(String)
        case notListeningYet
        /// The instance has exited (or never had a process).
        case gone
    }

    /// One map update: new connections to the trigger port go to the handler's socket from now on.
    private func steer(_ instance: InstanceID) -> SteerResult {
        guard let handle = handle(instance), let port = handle.listenPort, let pid = handle.pid else {
            return .gone
        }
        let socket: OwnedDescriptor
        do {
            socket = try HandlerSockets.takeListeningSocket(pid: pid, port: port)
        } catch {
            if error.errno == ENOENT { return .notListeningYet }
            if error.errno == ESRCH { return .gone }
            return .failed("its listening socket could not be taken: \(error)")
        }
        // `dataplane: sockets`: it listens on the trigger port itself; nothing to steer.
        guard let dataplane else { return .steered }
        do {
            try dataplane.steer(
                port: config.triggerPort.rawValue, function: id.rawValue, socket: socket.rawValue, owner: pid,
                kind: .handler)
        } catch {
            return .failed("its socket could not be put in the eBPF socket map: \(error)")
        }
        return .steered
    }

    /// The end of what an instance wrote to stderr, for a start failure.
    private func startupOutput(of instance: InstanceID, listenPort: UInt16?) -> String {
        let lines = logs.tail(200).filter { $0.instance == instance.number && $0.stream == "stderr" }
        var output = lines.suffix(10).map(\.text).joined(separator: "\n")
        if let listenPort, listenPort != config.triggerPort.rawValue, output.contains("Address already in use") {
            // Most likely a handler written for the seed's protocol, binding the trigger port.
            output +=
                "\n(with dataplane: ebpf the orchestrator holds trigger port \(config.triggerPort); a process handler binds AETHER_LISTEN_PORT, here \(listenPort))"
        }
        return output
    }

    private func log(_ entry: SchedulerLogEntry) {
        var metadata = Logger.Metadata()
        if let instance = entry.instance { metadata["instance"] = "\(instance)" }
        for (key, value) in entry.metadata { metadata[key] = "\(value)" }
        let level: Logger.Level =
            switch entry.level {
            case .debug: .debug
            case .info: .info
            case .warning: .warning
            case .error: .error
            }
        logger.log(level: level, "\(entry.message)", metadata: metadata)
    }

    // MARK: Status

    /// The seed's lifecycle state of the function (derived from its instances).
    var lifecycle: FunctionState { scheduler.withLock { $0.lifecycle } }

    func status() -> FunctionStatus {
        let (mode, lifecycle, queueDepth, instances, stats) = scheduler.withLock {
            ($0.mode, $0.lifecycle, $0.queueDepth, $0.instanceSnapshots, $0.stats.summary())
        }
        let handles = handles.withLock { $0 }
        let now = ContinuousClock.now
        return FunctionStatus(
            id: id.rawValue, port: Int(config.triggerPort.rawValue), protocol: config.handlerProtocol.rawValue,
            state: mode.rawValue, lifecycle: lifecycle.rawValue, handler: config.handlerPath, queueDepth: queueDepth,
            maxInstances: config.maxInstances.rawValue, concurrency: config.concurrency.rawValue,
            instances: instances.map { instance in
                let handle = handles[instance.id]
                return InstanceStatus(
                    number: instance.id.number, pid: Int(instance.pid ?? 0), phase: instance.phase,
                    inFlight: instance.inFlight, served: instance.served,
                    uptimeSeconds: Double((now - instance.launchedAt).milliseconds) / 1000,
                    region: handle?.region?.name, memoryBytes: handle?.cgroup.flatMap { memory.usage(of: $0) },
                    origin: instance.origin.rawValue, startupMilliseconds: instance.startupMilliseconds)
            },
            stats: stats,
            snapshot: snapshot.withLock { $0 }.map {
                SnapshotStatus(
                    image: $0.directory, imageBytes: $0.imageBytes, dumpMilliseconds: $0.dumpDuration.milliseconds,
                    restoreBudgetMilliseconds: $0.budget.milliseconds)
            },
            confinement: launcher.sandbox.map { sandbox in
                ConfinementStatus(
                    uid: Int(sandbox.identity.uid), gid: Int(sandbox.identity.gid),
                    network: config.network.rawValue, maxPids: config.maxPIDs.rawValue,
                    cpuLimit: config.cpuLimit?.cores, refusedSyscalls: nil)
            })
    }
}
