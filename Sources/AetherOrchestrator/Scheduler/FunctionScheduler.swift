import AetherCore

/// The decisions of one function generation, as a value: which instance takes which request,
/// when requests wait, are refused or time out, when instances start, are replaced (with
/// back-off), stop when idle, and how each instance's handshake goes, for spawned and
/// restored instances alike.
///
/// It performs no I/O and reads no clock: every event passes `now` and returns the actions
/// for the shell (`DeployedFunction`) to perform, in order, outside the lock that guards the
/// scheduler. Timers are one wake-up time (`SchedulerAction.wakeUp`): request deadlines,
/// startup deadlines, kill-after-grace, back-off and idle stops all come due in `wakeUp`.
///
/// The instance lifecycle is `InstancePhase`; the function's own is `mode` and, derived from
/// both, the seed's `FunctionState` (`lifecycle`).
///
/// One file on purpose (over 500 lines): the rules are one state machine whose transitions read
/// and write the same private state; split across files it would have to expose that state to
/// the whole module. The parts that need no rules live beside it: `InvocationTable` (the
/// requests held), `InstanceRecord` (the phase enum), `FunctionStats`, `SchedulerTypes`.
struct FunctionScheduler<Request: SchedulableRequest, Response: Sendable>: Sendable {
    typealias Action = SchedulerAction<Request, Response>
    typealias Outcome = InvocationOutcome<Response>

    struct Settings: Sendable, Equatable {
        var function: FunctionID
        var maxQueue: Int
        var maxInstances: Int
        var minWarm: Int
        var concurrency: Int
        var requestTimeout: Duration
        var startupTimeout: Duration
        var idleTimeout: Duration
        var stopGracePeriod: Duration = .seconds(5)
        /// `.restore`: every instance is a copy of the snapshot (built before `start`).
        var start: InstanceOrigin
        var handshake: HandshakeKind
        /// For the OOM message.
        var memoryLimitMegabytes: Int
        /// Requests an instance may hold in its ring beyond `concurrency` once no more
        /// instances can start (`max_instances` are live): they wait there instead of in the
        /// queue, so a handler that finishes one finds the next without sleeping or waiting for
        /// a round trip. It still executes `concurrency` at a time; if it ends, the ones it never
        /// read go back to the queue (`exited(unread:)`).
        var prefetch: Int = 0
        /// `restore_timeout_ms`. A start a request waits for fails over it (`launchFailed`); one
        /// made ahead of demand that took longer is kept, and counted as a latency violation.
        var restoreBudget: Duration = .milliseconds(15)

        var requestTimeoutMilliseconds: Int { Int(requestTimeout.milliseconds) }
    }

    /// Back-off after consecutive start failures or crashes: 0.1 s, doubling, at most 10 s.
    static func backOff(afterFailures failures: Int) -> Duration {
        .milliseconds(min(100 * (1 << min(max(failures, 1) - 1, 7)), 10_000))
    }

    let settings: Settings
    private(set) var mode = FunctionMode.starting
    private(set) var stats = FunctionStats()
    /// Ordered by id, oldest first.
    private(set) var instances: [InstanceRecord] = []

    private var invocations = InvocationTable<Request>()
    private var nextInstance = 0

    private var consecutiveFailures = 0
    private var backOffUntil: SchedulerInstant?
    /// Instances whose serving completes `start` (mode `.starting`).
    private var firstInstances: Set<InstanceID> = []
    private var startReported = false
    /// Whether an instance has ever served (Uninitialized vs Suspended).
    private var hasServed = false
    /// The wake-up the shell was last asked for.
    private var armedWakeUp: SchedulerInstant?
    private var drainReported = false
    private var stopReported = false

    init(settings: Settings) {
        self.settings = settings
    }

    // MARK: Reading

    var queueDepth: Int { invocations.queuedCount }

    /// The seed's lifecycle of the function, derived from its instances.
    var lifecycle: FunctionState {
        if instances.contains(where: { $0.phase.isServing }) { return .running }
        if settings.start.isCopy && mode != .starting { return .warmSnapshot }
        return hasServed ? .suspended : .uninitialized
    }

    var instanceSnapshots: [InstanceSnapshot] {
        instances.map { record in
            InstanceSnapshot(
                id: record.id, pid: record.phase.pid, phase: record.phase.name, origin: record.origin,
                inFlight: record.phase.inFlight.count, served: record.served, launchedAt: record.launchedAt,
                startupMilliseconds: record.startup.map(Self.startupMilliseconds))
        }
    }

    /// Launch to serving, in milliseconds with two decimals.
    static func startupMilliseconds(_ duration: Duration) -> Double {
        (duration.milliseconds * 100).rounded() / 100
    }

    private var liveInstanceCount: Int { instances.count { !$0.phase.isStopping } }
    private var servingCount: Int { instances.count { $0.phase.isServing } }
    private var isIdle: Bool { invocations.isEmpty }

    // MARK: Start, drain, stop

    /// Launches the first instances: `min_warm` of them (at least one for a spawned function,
    /// which proves the handler starts; a snapshot build already did). `.startFinished` follows.
    mutating func start(now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        let first = settings.start.isCopy ? settings.minWarm : max(1, settings.minWarm)
        for _ in 0..<first { firstInstances.insert(launch(forRequest: false, now: now, &actions)) }
        reportStartIfDone(&actions)
        // Requests that came while the function was being readied (its snapshot being built)
        // were queued with no launch (`scaleUp` waits for `.running`): with no first instance to
        // serve them, they get instances now instead of waiting out their timeout.
        scaleUp(now: now, &actions)
        return actions
    }

    /// Takes nothing new; `.drained` once nothing is queued or in flight.
    mutating func drain(now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        if mode == .starting || mode == .running { mode = .draining }
        reportDrainedIfIdle(&actions)
        return actions
    }

    /// Stops every instance (terminate, kill after the grace period) and answers whatever is
    /// queued; `.stopped` once every instance has exited.
    mutating func stop(now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        mode = .stopped
        backOffUntil = nil
        for id in invocations.dequeueAll() {
            complete(id, .notAccepting(.stopped), now: now, &actions)
        }
        for index in instances.indices {
            stopInstance(at: index, .terminate, reason: nil, now: now, &actions)
        }
        reportStoppedIfDone(&actions)
        armEarliestDeadline(now: now, &actions)
        return actions
    }

    // MARK: Requests

    /// A request the gateway answered 401 (`auth:`): an invocation, not an error, never queued.
    mutating func unauthorized() {
        stats.unauthorized += 1
        stats.record(isError: false, latency: .zero)
    }

    /// Instances a request would rather go to: those whose answers are read on the event loop
    /// it arrived on (instance number modulo `of` is `index`; Gateway, "Home loops"), so its
    /// answer is written without a hop to another loop's thread.
    struct Affinity: Equatable, Sendable {
        var index: Int
        var of: Int

        func prefers(_ instance: InstanceID) -> Bool { of > 0 && Self.loop(of: instance, among: of) == index }

        /// Which of `loops` home loops reads `instance`'s answers (`InstanceLauncher.readerLoop`).
        static func loop(of instance: InstanceID, among loops: Int) -> Int { instance.number % loops }
    }

    /// Takes a request: to the least-loaded serving instance with room (or, `affinity`, one it
    /// prefers, unless that one is loaded more than `concurrency` beyond the least), else into
    /// the queue (starting instances for it), else refused (`queueFull`).
    mutating func submit(_ request: Request, now: SchedulerInstant, affinity: Affinity? = nil) -> [Action] {
        var actions: [Action] = []
        guard mode == .running || mode == .starting else {
            stats.record(isError: true, latency: .zero)
            actions.append(.complete(request, .notAccepting(mode)))
            return actions
        }
        let available = invocations.queuedCount == 0 ? availableInstance(affinity: affinity) : nil
        // `max_queue` counts every request waiting: in the queue, or prefetched into a ring.
        let waiting = invocations.queuedCount + prefetchedCount
        if available == nil && waiting >= settings.maxQueue {
            stats.rejected += 1
            stats.record(isError: false, latency: .zero)
            actions.append(.complete(request, .queueFull(busyInstances: liveInstanceCount, queued: waiting)))
            return actions
        }
        let deadline = now + settings.requestTimeout
        let id = invocations.add(request, arrived: now, deadline: deadline)
        if let available {
            dispatch(id, to: available, now: now, &actions)
        } else {
            invocations.enqueue(id)
            scaleUp(now: now, &actions)
        }
        arm(deadline, &actions)
        return actions
    }

    /// The instance's request ring had no room: the request goes back to the front of the
    /// queue and the instance gets nothing more until it answers something. If it has nothing
    /// left in flight, it answered everything while the request was being written (the shell
    /// writes outside the lock), so its ring has room again: no answer would clear the mark.
    mutating func requestNotWritten(instance: InstanceID, requestID: UInt64, now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance), let id = takeInFlight(requestID, at: index) else { return actions }
        instances[index].withServing { $0.ringFull = !$0.inFlight.isEmpty }
        invocations.requeueFirst(id)
        pump(now: now, &actions)
        return actions
    }

    /// Writing into the instance's request ring failed (poisoned by the handler): the request is
    /// queued again and the instance killed.
    mutating func requestRingFailed(
        instance: InstanceID, requestID: UInt64, reason: String, now: SchedulerInstant
    ) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance) else { return actions }
        if let id = takeInFlight(requestID, at: index) { invocations.requeueFirst(id) }
        stopInstance(at: index, .kill, reason: "its request ring failed: \(reason)", fault: true, now: now, &actions)
        pump(now: now, &actions)
        return actions
    }

    /// A response from the instance's ring, decoded. `status` is for the statistics.
    mutating func responseArrived(
        instance: InstanceID, requestID: UInt64, status: Int, response: Response, now: SchedulerInstant
    ) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance) else { return actions }
        guard let id = takeInFlight(requestID, at: index) else {
            // Its request already timed out and was answered.
            actions.append(
                .log(
                    SchedulerLogEntry(
                        level: .debug, message: "late response dropped", instance: instance,
                        metadata: ["request": "\(requestID)"])))
            return actions
        }
        instances[index].served += 1
        let idle = instances[index].withServing { serving in
            serving.ringFull = false
            serving.lastActive = now
            return serving.inFlight.isEmpty
        }
        if idle == true && mode == .running { arm(now + settings.idleTimeout, &actions) }
        // The next queued request goes into the ring before this answer is handed on: the
        // handler works on it while the gateway writes this one out.
        pump(now: now, &actions)
        let coldStart = invocations[id]?.coldStart
        complete(
            id, .response(response, instance: instance, coldStart: coldStart), isError: status >= 500, now: now,
            &actions)
        return actions
    }

    /// The instance wrote a message that breaks the protocol: the request it names (if any)
    /// gets `malformedResponse`, the instance is killed.
    mutating func malformedResponse(
        instance: InstanceID, requestID: UInt64?, reason: String, now: SchedulerInstant
    ) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance) else { return actions }
        stopInstance(
            at: index, .kill, reason: "it wrote a malformed response: \(reason)", fault: true, now: now, &actions)
        if let requestID, let id = takeInFlight(requestID, at: index) {
            complete(id, .malformedResponse(instance: instance, reason: reason), now: now, &actions)
        }
        return actions
    }

    /// The gateway refused a response the instance gave (e.g. a header that is not valid HTTP)
    /// and answered 502 instead: the instance is killed, and the answer counted as an error.
    mutating func responseRejected(
        instance: InstanceID, reason: String, status: Int, now: SchedulerInstant
    ) -> [Action] {
        var actions: [Action] = []
        if status < 500 { stats.errors += 1 }
        guard let index = index(of: instance) else { return actions }
        stopInstance(at: index, .kill, reason: reason, fault: true, now: now, &actions)
        return actions
    }

    /// A process handler left `count` requests unanswered past `timeout_ms` (the shell answered
    /// them 504 on their connections): like an sdk instance over its timeout, it is killed and
    /// replaced.
    mutating func processRequestsTimedOut(instance: InstanceID, count: Int, now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance), count > 0 else { return actions }
        stats.timeouts += count
        stats.errors += count
        stopInstance(
            at: index, .kill,
            reason: "\(count) request(s) ran over timeout_ms \(settings.requestTimeoutMilliseconds) (answered 504)",
            now: now, &actions)
        return actions
    }

    /// The response ring cannot be read any more (corrupted or poisoned): the instance is killed;
    /// its requests get `instanceFailed` when it exits.
    mutating func responseRingFailed(instance: InstanceID, reason: String, now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance) else { return actions }
        stopInstance(at: index, .kill, reason: reason, fault: true, now: now, &actions)
        return actions
    }

    // MARK: Instances: launch and handshake

    /// A spawned process is running (its control lines may already have arrived).
    mutating func launched(instance: InstanceID, pid: Int32, now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance) else { return actions }
        switch instances[index].phase {
        case .launching(let launching):
            instances[index].phase = .handshaking(
                .init(pid: pid, step: .awaitingReady, deadline: launching.deadline))
            for line in launching.earlyLines {
                handleControlLine(line, at: index, now: now, &actions)
            }
        case .stopping(var stopping) where stopping.pid == nil:
            // Stopped while it was being launched.
            stopping.pid = pid
            stopping.killAt = nil
            instances[index].phase = .stopping(stopping)
            actions.append(.signal(instance, .kill))
        default:
            break
        }
        return actions
    }

    /// criu restored a copy (or one was forked); its ATTACH was queued on its control
    /// connection before the restore, so it goes straight to awaiting ATTACHED. A copy from the
    /// warm pool (`attached`) said ATTACHED before it was stopped there: it serves at once.
    mutating func restored(
        instance: InstanceID, pid: Int32, restoreDuration: Duration, attached: Bool = false, now: SchedulerInstant
    ) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance), instances[index].origin.isCopy else { return actions }
        switch instances[index].phase {
        case .launching(let launching):
            stats.recordRestore(restoreDuration)
            actions.append(.observe(.restored(instances[index].origin, restoreDuration)))
            instances[index].restore = restoreDuration
            actions.append(
                .log(
                    SchedulerLogEntry(
                        level: .info,
                        message: instances[index].origin == .fork ? "instance forked" : "instance restored",
                        instance: instance,
                        metadata: [
                            "pid": "\(pid)",
                            instances[index].origin == .fork
                                ? "fork_ms" : "restore_ms": "\(restoreDuration.milliseconds)",
                        ])))
            if restoreDuration > settings.restoreBudget {
                // Only a start no request waits for gets here over the budget (one a request
                // waits for fails instead): the operator learns it, the copy is kept.
                stats.latencyViolations += 1
                let violation = CriuError.latencyViolation(actual: restoreDuration, limit: settings.restoreBudget)
                actions.append(
                    .log(
                        SchedulerLogEntry(
                            level: .warning,
                            message:
                                "\(violation), for a start no request waited for: kept (a request waiting for a start this slow gets 503)",
                            instance: instance)))
            }
            if attached {
                becomeServing(at: index, pid: pid, now: now, &actions)
                for line in launching.earlyLines { handleControlLine(line, at: index, now: now, &actions) }
            } else if settings.handshake == .attach {
                instances[index].phase = .handshaking(
                    .init(pid: pid, step: .awaitingAttached, deadline: now + settings.startupTimeout))
                for line in launching.earlyLines { handleControlLine(line, at: index, now: now, &actions) }
            } else {
                becomeServing(at: index, pid: pid, now: now, &actions)
            }
        case .stopping(var stopping) where stopping.pid == nil:
            stats.recordRestore(restoreDuration)
            actions.append(.observe(.restored(instances[index].origin, restoreDuration)))
            stopping.pid = pid
            stopping.killAt = nil
            instances[index].phase = .stopping(stopping)
            actions.append(.signal(instance, .kill))
        default:
            break
        }
        return actions
    }

    /// The instance could not be started at all (spawn or restore failed, no cgroup, no
    /// shared memory). Counts as a start failure; there is no process to wait for.
    mutating func launchFailed(instance: InstanceID, error: HandlerError, now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance) else { return actions }
        if case .restoreFailed(_, _, let criu) = error {
            stats.restoreFailures += 1
            if case .latencyViolation = criu { stats.latencyViolations += 1 }
        }
        actions.append(.log(SchedulerLogEntry(level: .error, message: "\(error)", instance: instance)))
        var stopping = InstancePhase.Stopping(
            pid: nil, inFlight: [:], killAt: nil, reason: nil, startupFailure: error, wasServing: false)
        if case .stopping(let current) = instances[index].phase {
            stopping.reason = current.reason
        }
        instances[index].phase = .stopping(stopping)
        removeExited(at: index, status: .notStarted, output: "", outOfMemory: false, now: now, &actions)
        return actions
    }

    /// One line from the instance's control connection.
    mutating func controlLine(_ line: String, instance: InstanceID, now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance) else { return actions }
        handleControlLine(line, at: index, now: now, &actions)
        return actions
    }

    /// The control connection sent more than a line's worth without a newline.
    mutating func controlOverflow(instance: InstanceID, now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance) else { return actions }
        violation("it sent a line longer than 4096 bytes on AETHER_SOCKET", at: index, now: now, &actions)
        return actions
    }

    /// The trigger port was steered to the process handler's socket (nil), or could not be.
    mutating func steered(instance: InstanceID, failure: String?, now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance), case .handshaking(let handshake) = instances[index].phase,
            handshake.step == .steering
        else { return actions }
        if let failure {
            violation(failure, at: index, now: now, &actions)
        } else {
            becomeServing(at: index, pid: handshake.pid, now: now, &actions)
        }
        return actions
    }

    private mutating func handleControlLine(
        _ line: String, at index: Int, now: SchedulerInstant, _ actions: inout [Action]
    ) {
        let id = instances[index].id
        switch instances[index].phase {
        case .launching(var launching) where launching.earlyLines.count < 16:
            // Spoke before the shell reported the spawn or restore: replayed then.
            launching.earlyLines.append(line)
            instances[index].phase = .launching(launching)
        case .handshaking(var handshake) where line == "READY" && handshake.step == .awaitingReady:
            switch settings.handshake {
            case .attach:
                handshake.step = .awaitingAttached
                instances[index].phase = .handshaking(handshake)
                actions.append(.attach(id))
            case .readyThenSteer:
                handshake.step = .steering
                instances[index].phase = .handshaking(handshake)
                actions.append(.steer(id))
            case .ready:
                becomeServing(at: index, pid: handshake.pid, now: now, &actions)
            }
        // "ATTACHED bell": it rings the response ring's eventfd; "ATTACHED": the futex (a runtime
        // from before the bell; the shell's reader adapts, ResponseReader).
        case .handshaking(let handshake)
        where (line == "ATTACHED" || line == "ATTACHED bell") && handshake.step == .awaitingAttached:
            becomeServing(at: index, pid: handshake.pid, now: now, &actions)
        case .stopping:
            break
        case .launching, .handshaking, .serving:
            // (launching: more lines than any handshake has, before the launch was reported)
            let expected: String
            if case .handshaking(let handshake) = instances[index].phase, handshake.step != .steering {
                expected = handshake.step.awaiting
            } else {
                expected = "nothing"
            }
            let detail =
                line.hasPrefix("ERROR ")
                ? "it reported: \(line.dropFirst(6))"
                : "it sent \(JSONText.printable(line)) while \(expected) was expected"
            violation(detail, at: index, now: now, &actions)
        }
    }

    private mutating func violation(_ detail: String, at index: Int, now: SchedulerInstant, _ actions: inout [Action]) {
        let failure = HandlerError.protocolViolation(
            function: settings.function, instance: instances[index].id.number, detail: detail)
        stopInstance(
            at: index, .kill, reason: "protocol violation: \(detail)", startupFailure: failure, fault: true, now: now,
            &actions)
    }

    private mutating func becomeServing(at index: Int, pid: Int32, now: SchedulerInstant, _ actions: inout [Action]) {
        let startup = now - instances[index].launchedAt
        instances[index].startup = startup
        instances[index].phase = .serving(.init(pid: pid, lastActive: now, readyAt: now))
        consecutiveFailures = 0
        hasServed = true
        let milliseconds = Self.startupMilliseconds(startup)
        stats.lastStartupMilliseconds = milliseconds
        stats.recordStart(instances[index].origin, startup)
        actions.append(.observe(.started(instances[index].origin, startup)))
        actions.append(
            .log(
                SchedulerLogEntry(
                    level: .info, message: "instance ready", instance: instances[index].id,
                    metadata: ["startup_ms": "\(Int(milliseconds.rounded()))"])))
        if firstInstances.remove(instances[index].id) != nil { reportStartIfDone(&actions) }
        if mode == .running { arm(now + settings.idleTimeout, &actions) }
        pump(now: now, &actions)
    }

    private mutating func reportStartIfDone(_ actions: inout [Action]) {
        guard mode == .starting, !startReported, firstInstances.isEmpty else { return }
        startReported = true
        mode = .running
        actions.append(.startFinished(nil))
    }

    // MARK: Instances: exit

    /// The instance's process has been reaped. `output` is the end of its stderr (for a start
    /// failure); `outOfMemory` whether its cgroup saw an OOM kill.
    /// `unread`: request ids written to its ring that it never read (prefetched): they go back
    /// to the front of the queue, in order, for another instance; the rest of its in-flight
    /// requests fail (502).
    mutating func exited(
        instance: InstanceID, status: ExitStatus, output: String, outOfMemory: Bool, unread: Set<UInt64> = [],
        now: SchedulerInstant
    ) -> [Action] {
        var actions: [Action] = []
        guard let index = index(of: instance) else { return actions }
        removeExited(
            at: index, status: status, output: output, outOfMemory: outOfMemory, unread: unread, now: now, &actions)
        return actions
    }

    private mutating func removeExited(
        at index: Int, status: ExitStatus, output: String, outOfMemory: Bool, unread: Set<UInt64> = [],
        now: SchedulerInstant, _ actions: inout [Action]
    ) {
        let record = instances.remove(at: index)
        let id = record.id
        var reason: String?
        var startupFailure: HandlerError?
        let expected: Bool
        let wasServing: Bool
        var fault = false
        switch record.phase {
        case .stopping(let stopping):
            expected = true
            fault = stopping.fault
            wasServing = stopping.wasServing
            reason = stopping.reason
            startupFailure = stopping.startupFailure
        case .serving:
            expected = false
            wasServing = true
        case .launching, .handshaking:
            expected = false
            wasServing = false
        }
        if outOfMemory {
            reason = "the kernel's OOM killer stopped it at memory_limit_mb \(settings.memoryLimitMegabytes)"
        }
        let cause = "\(status)" + (reason.map { " (\($0))" } ?? "")
        // Newest first, each to the front: the oldest ends up first in the queue.
        for requestID in record.phase.inFlight.keys.sorted().reversed() where unread.contains(requestID) {
            if let invocation = record.phase.inFlight[requestID] { invocations.requeueFirst(invocation) }
        }
        for requestID in record.phase.inFlight.keys.sorted() where !unread.contains(requestID) {
            if let invocation = record.phase.inFlight[requestID] {
                complete(invocation, .instanceFailed(instance: id, cause: cause), now: now, &actions)
            }
        }
        if !wasServing {
            let error =
                startupFailure
                ?? .exitedDuringStartup(
                    function: settings.function, instance: id.number, status: status.description, output: output)
            consecutiveFailures += 1
            // Only once no instance is left that may still take them (serving or starting).
            if !instances.contains(where: { $0.phase.isServing || $0.phase.isStarting }) {
                for waiting in invocations.dequeueAll() {
                    complete(waiting, .unavailable(error), now: now, &actions)
                }
            }
            if firstInstances.contains(id) && mode == .starting && !startReported {
                startReported = true
                actions.append(.startFinished(error))
            }
        } else if !expected || fault {
            consecutiveFailures += 1
        }
        firstInstances.remove(id)
        if status != .notStarted && (!expected || reason != nil) {
            if !expected { stats.crashes += 1 }
            actions.append(
                .log(
                    SchedulerLogEntry(
                        level: .error, message: "instance \(cause)", instance: id,
                        metadata: record.phase.pid.map { ["pid": "\($0)"] } ?? [:])))
        } else if status != .notStarted {
            actions.append(.log(SchedulerLogEntry(level: .info, message: "instance stopped", instance: id)))
        }
        reportStoppedIfDone(&actions)
        replaceIfNeeded(afterBackOff: false, now: now, &actions)
        pump(now: now, &actions)
    }

    // MARK: Time

    /// Whatever came due: request timeouts, startup timeouts, kills after the grace period, the
    /// end of a back-off, idle instances. Then asks for the next wake-up.
    mutating func wakeUp(now: SchedulerInstant) -> [Action] {
        var actions: [Action] = []
        armedWakeUp = nil
        for id in invocations.expired(at: now) { timeOut(id, now: now, &actions) }
        var index = 0
        while index < instances.count {
            let before = instances.count
            expireInstanceDeadline(at: index, now: now, &actions)
            if instances.count == before { index += 1 }
        }
        if let until = backOffUntil, until <= now {
            backOffUntil = nil
            replaceIfNeeded(afterBackOff: true, now: now, &actions)
        }
        stopIdleInstances(now: now, &actions)
        armEarliestDeadline(now: now, &actions)
        return actions
    }

    private mutating func timeOut(_ id: InvocationID, now: SchedulerInstant, _ actions: inout [Action]) {
        guard let record = invocations[id] else { return }
        if invocations.unqueue(id) {
            stats.timeouts += 1
            complete(id, .timedOut(afterMilliseconds: settings.requestTimeoutMilliseconds), now: now, &actions)
            return
        }
        if let placement = record.placement, let index = index(of: placement.instance),
            takeInFlight(placement.requestID, at: index) != nil
        {
            stats.timeouts += 1
            stopInstance(
                at: index, .kill,
                reason: "request \(record.request.summary) ran over timeout_ms \(settings.requestTimeoutMilliseconds)",
                now: now, &actions)
            complete(id, .timedOut(afterMilliseconds: settings.requestTimeoutMilliseconds), now: now, &actions)
        }
    }

    private mutating func expireInstanceDeadline(at index: Int, now: SchedulerInstant, _ actions: inout [Action]) {
        let waited = Int(settings.startupTimeout.milliseconds)
        switch instances[index].phase {
        case .launching(let launching) where launching.deadline <= now:
            let awaiting = instances[index].origin.isCopy ? "ATTACHED" : "READY"
            startupTimedOut(at: index, awaiting: awaiting, waited: waited, now: now, &actions)
        case .handshaking(let handshake) where handshake.deadline <= now && handshake.step == .steering:
            // READY came, but no socket listens on the port the handler was given.
            let failure = HandlerError.notListening(
                function: settings.function, instance: instances[index].id.number, waitedMilliseconds: waited)
            stopInstance(
                at: index, .kill, reason: "READY but no listening socket within startup_timeout_ms \(waited)",
                startupFailure: failure, now: now, &actions)
        case .handshaking(let handshake) where handshake.deadline <= now:
            startupTimedOut(at: index, awaiting: handshake.step.awaiting, waited: waited, now: now, &actions)
        case .stopping(var stopping):
            guard let killAt = stopping.killAt, killAt <= now else { return }
            stopping.killAt = nil
            instances[index].phase = .stopping(stopping)
            actions.append(
                .log(
                    SchedulerLogEntry(
                        level: .warning, message: "instance did not stop within 5 s; killing it",
                        instance: instances[index].id)))
            actions.append(.signal(instances[index].id, .kill))
        default:
            break
        }
    }

    private mutating func startupTimedOut(
        at index: Int, awaiting: String, waited: Int, now: SchedulerInstant, _ actions: inout [Action]
    ) {
        let failure = HandlerError.startupTimedOut(
            function: settings.function, instance: instances[index].id.number, waitedMilliseconds: waited,
            awaiting: awaiting)
        stopInstance(
            at: index, .kill, reason: "no \(awaiting) within startup_timeout_ms \(waited)", startupFailure: failure,
            now: now, &actions)
    }

    /// Stops instances idle for `idle_timeout_ms`, newest first, keeping `min_warm`
    /// (0 = scale to zero).
    private mutating func stopIdleInstances(now: SchedulerInstant, _ actions: inout [Action]) {
        guard mode == .running, invocations.queuedCount == 0 else { return }
        var serving = servingCount
        for index in instances.indices.reversed() where serving > settings.minWarm {
            guard case .serving(let state) = instances[index].phase, state.inFlight.isEmpty,
                now - state.lastActive >= settings.idleTimeout
            else { continue }
            actions.append(
                .log(SchedulerLogEntry(level: .info, message: "stopping idle instance", instance: instances[index].id)))
            stopInstance(at: index, .terminate, reason: nil, now: now, &actions)
            serving -= 1
        }
    }

    /// Asks for a wake-up at `deadline` unless an earlier one is already asked for.
    private mutating func arm(_ deadline: SchedulerInstant, _ actions: inout [Action]) {
        if let armed = armedWakeUp, armed <= deadline { return }
        armedWakeUp = deadline
        actions.append(.wakeUp(at: deadline))
    }

    private mutating func armEarliestDeadline(now: SchedulerInstant, _ actions: inout [Action]) {
        var earliest = invocations.earliestDeadline
        func consider(_ candidate: SchedulerInstant?) {
            guard let candidate else { return }
            if earliest == nil || candidate < earliest! { earliest = candidate }
        }
        consider(backOffUntil)
        let idleStopsPossible = mode == .running && invocations.queuedCount == 0 && servingCount > settings.minWarm
        for record in instances {
            switch record.phase {
            case .launching(let launching): consider(launching.deadline)
            case .handshaking(let handshake): consider(handshake.deadline)
            case .stopping(let stopping): consider(stopping.killAt)
            case .serving(let serving):
                if idleStopsPossible && serving.inFlight.isEmpty { consider(serving.lastActive + settings.idleTimeout) }
            }
        }
        if let earliest { arm(max(earliest, now), &actions) }
    }

    // MARK: Dispatch and scaling

    /// Requests written to rings beyond their instance's `concurrency`: waiting there, not
    /// executing.
    private var prefetchedCount: Int {
        instances.reduce(0) { total, record in
            guard case .serving(let serving) = record.phase else { return total }
            return total + max(0, serving.inFlight.count - settings.concurrency)
        }
    }

    /// The least-loaded serving instance with room for one more request: `concurrency`, plus
    /// `prefetch` once no more instances can start (so load first spreads and scales up) and
    /// while fewer than `max_queue` requests wait in rings.
    private func availableInstance(affinity: Affinity? = nil) -> Int? {
        let prefetching =
            liveInstanceCount >= settings.maxInstances && prefetchedCount < settings.maxQueue ? settings.prefetch : 0
        let room = settings.concurrency + prefetching
        var best: (index: Int, load: Int)?
        var preferred: (index: Int, load: Int)?
        for index in instances.indices {
            guard case .serving(let serving) = instances[index].phase, !serving.ringFull,
                serving.inFlight.count < room
            else { continue }
            let load = serving.inFlight.count
            if best == nil || load < best!.load { best = (index, load) }
            if let affinity, affinity.prefers(instances[index].id), preferred == nil || load < preferred!.load {
                preferred = (index, load)
            }
        }
        if let preferred, let best, preferred.load <= best.load + settings.concurrency { return preferred.index }
        return best?.index
    }

    private mutating func dispatch(_ id: InvocationID, to index: Int, now: SchedulerInstant, _ actions: inout [Action])
    {
        guard let record = invocations[id] else { return }
        let requestID = instances[index].nextRequestID
        let readyAt = instances[index].withServing { serving in
            serving.inFlight[requestID] = id
            serving.lastActive = now
            return serving.readyAt
        }
        guard let readyAt else { return }
        instances[index].nextRequestID += 1
        var coldStart: ColdStart?
        if readyAt > record.arrived, let startup = instances[index].startup {
            coldStart = ColdStart(
                origin: instances[index].origin, milliseconds: Self.startupMilliseconds(startup),
                restoreMilliseconds: instances[index].restore?.milliseconds)
        }
        // Once per request: one put back in the queue (its ring was full) is not counted again.
        if invocations.place(id, on: instances[index].id, requestID: requestID, coldStart: coldStart) {
            actions.append(.observe(.queueWait(now - record.arrived)))
        }
        actions.append(.writeRequest(record.request, requestID: requestID, instance: instances[index].id))
    }

    /// Hands queued requests to instances with room.
    private mutating func pump(now: SchedulerInstant, _ actions: inout [Action]) {
        while invocations.queuedCount > 0, let index = availableInstance(), let id = invocations.dequeue() {
            dispatch(id, to: index, now: now, &actions)
        }
        reportDrainedIfIdle(&actions)
    }

    /// One new instance per waiting request that no starting instance will take, up to
    /// `max_instances`: 20 requests against zero instances start several at once.
    private mutating func scaleUp(now: SchedulerInstant, _ actions: inout [Action]) {
        guard mode == .running, backOffUntil == nil else { return }
        let live = liveInstanceCount
        let starting = instances.count { $0.phase.isStarting }
        let wanted = min(settings.maxInstances, live - starting + invocations.queuedCount)
        for _ in 0..<max(0, wanted - live) { _ = launch(forRequest: true, now: now, &actions) }
    }

    /// Keeps `min_warm` instances (and one per waiting request, up to `max_instances`) running;
    /// after failures, waits out the back-off first. Draining, only what the queue needs.
    private mutating func replaceIfNeeded(afterBackOff: Bool, now: SchedulerInstant, _ actions: inout [Action]) {
        guard mode == .running || mode == .draining, backOffUntil == nil else { return }
        let live = liveInstanceCount
        let wanted =
            mode == .running
            ? max(settings.minWarm, min(invocations.queuedCount, settings.maxInstances))
            : (invocations.queuedCount == 0 ? 0 : 1)
        guard live < wanted else { return }
        if consecutiveFailures == 0 || afterBackOff {
            _ = launch(forRequest: invocations.queuedCount > 0, now: now, &actions)
            return
        }
        let delay = Self.backOff(afterFailures: consecutiveFailures)
        backOffUntil = now + delay
        actions.append(
            .log(
                SchedulerLogEntry(
                    level: .warning,
                    message:
                        "restarting instance in \(Int(delay.milliseconds)) ms after \(consecutiveFailures) failure(s)"))
        )
        arm(now + delay, &actions)
    }

    private mutating func launch(forRequest: Bool, now: SchedulerInstant, _ actions: inout [Action]) -> InstanceID {
        let id = InstanceID(nextInstance)
        nextInstance += 1
        let deadline = now + settings.startupTimeout
        instances.append(
            InstanceRecord(
                id: id, origin: settings.start, launchedAt: now, phase: .launching(.init(deadline: deadline))))
        actions.append(.launch(id, settings.start, forRequest: forRequest))
        arm(deadline, &actions)
        return id
    }

    // MARK: Helpers

    private func index(of instance: InstanceID) -> Int? {
        instances.firstIndex { $0.id == instance }
    }

    /// Removes a request from the instance's in-flight map; the invocation it carried.
    private mutating func takeInFlight(_ requestID: UInt64, at index: Int) -> InvocationID? {
        let taken: InvocationID??
        switch instances[index].phase {
        case .serving: taken = instances[index].withServing { $0.inFlight.removeValue(forKey: requestID) }
        case .stopping: taken = instances[index].withStopping { $0.inFlight.removeValue(forKey: requestID) }
        case .launching, .handshaking: taken = nil
        }
        guard case .some(.some(let id)) = taken else { return nil }
        invocations.unplace(id)
        return id
    }

    /// Moves an instance to `stopping` and signals it; an instance already stopping is only
    /// killed harder. `reason` is logged now and reported with its exit.
    /// `fault`: it is stopped for breaking the protocol (not for being slow or idle): like a
    /// crash, its exit counts towards the back-off, so a handler that misbehaves at once is not
    /// restarted in a tight loop.
    private mutating func stopInstance(
        at index: Int, _ signal: StopSignal, reason: String?, startupFailure: HandlerError? = nil, fault: Bool = false,
        now: SchedulerInstant, _ actions: inout [Action]
    ) {
        let id = instances[index].id
        let phase = instances[index].phase
        if case .stopping(var stopping) = phase {
            if signal == .kill && stopping.pid != nil {
                stopping.killAt = nil
                instances[index].phase = .stopping(stopping)
                actions.append(.signal(id, .kill))
            }
            return
        }
        var stopping = InstancePhase.Stopping(
            pid: phase.pid, inFlight: phase.inFlight, killAt: nil, reason: reason, startupFailure: startupFailure,
            wasServing: phase.isServing, fault: fault)
        if signal == .terminate && phase.pid != nil {
            stopping.killAt = now + settings.stopGracePeriod
            arm(now + settings.stopGracePeriod, &actions)
        }
        instances[index].phase = .stopping(stopping)
        if let reason {
            actions.append(
                .log(SchedulerLogEntry(level: .warning, message: "stopping instance: \(reason)", instance: id)))
        }
        // Without a PID a launch is still running: `launched`/`restored` kill it.
        if phase.pid != nil { actions.append(.signal(id, signal)) }
    }

    private mutating func complete(
        _ id: InvocationID, _ outcome: Outcome, isError: Bool? = nil, now: SchedulerInstant,
        _ actions: inout [Action]
    ) {
        guard let record = invocations.remove(id) else { return }
        stats.record(isError: isError ?? outcome.isError, latency: now - record.arrived)
        switch record.coldStart?.origin {
        case .spawn: stats.spawnColdStarts += 1
        case .restore, .fork: stats.restoreColdStarts += 1
        case nil: break
        }
        actions.append(.complete(record.request, outcome))
        reportDrainedIfIdle(&actions)
    }

    private mutating func reportStoppedIfDone(_ actions: inout [Action]) {
        guard mode == .stopped, instances.isEmpty, !stopReported else { return }
        stopReported = true
        actions.append(.stopped)
    }

    private mutating func reportDrainedIfIdle(_ actions: inout [Action]) {
        guard mode == .draining, isIdle, !drainReported else { return }
        drainReported = true
        actions.append(.drained)
    }

}
