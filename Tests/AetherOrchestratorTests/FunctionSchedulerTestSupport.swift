import AetherCore
import Testing

@testable import AetherOrchestrator

/// What `FunctionScheduler`'s tests need: a request type, settings with defaults, a test clock
/// and a harness that plays the shell (no processes, no rings, no timers: every event is a call
/// and every action a value to compare).

/// A request as the scheduler carries it: a number, named `GET /r<number>` in logs.
struct TestRequest: SchedulableRequest, Hashable {
    let number: Int
    var summary: String { "GET /r\(number)" }
}

typealias TestScheduler = FunctionScheduler<TestRequest, String>

/// How an instance's process ended (Swift Testing has an `ExitStatus` of its own).
typealias ExitStatus = AetherOrchestrator.ExitStatus

extension FunctionScheduler.Settings {
    static var function: FunctionID { try! FunctionID("thumbnail") }

    /// Small numbers, so that every limit is reached in a few steps.
    static func test(
        maxQueue: Int = 4, maxInstances: Int = 3, minWarm: Int = 1, concurrency: Int = 1,
        requestTimeout: Duration = .seconds(1), startupTimeout: Duration = .seconds(2),
        idleTimeout: Duration = .seconds(10), start: InstanceOrigin = .spawn, handshake: HandshakeKind = .attach,
        memoryLimitMegabytes: Int = 128, prefetch: Int = 0, restoreBudget: Duration = .milliseconds(50)
    ) -> Self {
        Self(
            function: function, maxQueue: maxQueue, maxInstances: maxInstances, minWarm: minWarm,
            concurrency: concurrency, requestTimeout: requestTimeout, startupTimeout: startupTimeout,
            idleTimeout: idleTimeout, start: start, handshake: handshake, memoryLimitMegabytes: memoryLimitMegabytes,
            prefetch: prefetch, restoreBudget: restoreBudget)
    }
}

/// Time for the tests: a base `ContinuousClock.now` plus an offset the test moves forward.
struct TestClock {
    let base = ContinuousClock.now
    var elapsed: Duration = .zero

    var now: ContinuousClock.Instant { base + elapsed }

    func offset(of instant: ContinuousClock.Instant) -> Duration { instant - base }
}

/// How a request ended, comparable (instances as numbers).
enum Outcome: Equatable {
    case response(String, instance: Int, coldStart: ColdStart?)
    case queueFull(busyInstances: Int, queued: Int)
    case timedOut(afterMilliseconds: Int)
    case instanceFailed(instance: Int, cause: String)
    case malformedResponse(instance: Int, reason: String)
    case notAccepting(FunctionMode)
    case unavailable(HandlerError)

    init(_ outcome: InvocationOutcome<String>) {
        switch outcome {
        case .response(let body, let instance, let coldStart):
            self = .response(body, instance: instance.number, coldStart: coldStart)
        case .queueFull(let busy, let queued): self = .queueFull(busyInstances: busy, queued: queued)
        case .timedOut(let milliseconds): self = .timedOut(afterMilliseconds: milliseconds)
        case .instanceFailed(let instance, let cause): self = .instanceFailed(instance: instance.number, cause: cause)
        case .malformedResponse(let instance, let reason):
            self = .malformedResponse(instance: instance.number, reason: reason)
        case .notAccepting(let mode): self = .notAccepting(mode)
        case .unavailable(let error): self = .unavailable(error)
        }
    }
}

/// A `SchedulerAction`, comparable: instances and requests as numbers, wake-ups as offsets from
/// the test clock's base.
enum Act: Equatable {
    /// `forRequest`: a request waits for the start (`SchedulerAction.launch`).
    case launch(Int, InstanceOrigin, forRequest: Bool = false)
    case attach(Int)
    case steer(Int)
    case write(request: Int, requestID: UInt64, instance: Int)
    case complete(request: Int, Outcome)
    case signal(Int, StopSignal)
    case wakeUp(at: Duration)
    case log(SchedulerLogEntry)
    case observe(SchedulerObservation)
    case startFinished(HandlerError?)
    case drained
    case stopped

    init(_ action: TestScheduler.Action, clock: TestClock) {
        switch action {
        case .launch(let instance, let origin, let forRequest):
            self = .launch(instance.number, origin, forRequest: forRequest)
        case .attach(let instance): self = .attach(instance.number)
        case .steer(let instance): self = .steer(instance.number)
        case .writeRequest(let request, let requestID, let instance):
            self = .write(request: request.number, requestID: requestID, instance: instance.number)
        case .complete(let request, let outcome): self = .complete(request: request.number, Outcome(outcome))
        case .signal(let instance, let signal): self = .signal(instance.number, signal)
        case .wakeUp(let instant): self = .wakeUp(at: clock.offset(of: instant))
        case .log(let entry): self = .log(entry)
        case .observe(let observation): self = .observe(observation)
        case .startFinished(let failure): self = .startFinished(failure)
        case .drained: self = .drained
        case .stopped: self = .stopped
        }
    }
}

extension Act {
    var isLaunch: Bool {
        if case .launch = self { return true }
        return false
    }
}

/// Actions of one kind, out of what an event returned.
extension [Act] {
    /// Everything but log lines, wake-ups and measurements: what the shell does to processes and
    /// requests.
    var decisions: [Act] {
        filter {
            switch $0 {
            case .log, .wakeUp, .observe: false
            default: true
            }
        }
    }

    /// Instance numbers launched.
    var launches: [Int] {
        compactMap {
            if case .launch(let instance, _, _) = $0 { return instance }
            return nil
        }
    }

    var writes: [Act] {
        filter {
            if case .write = $0 { return true }
            return false
        }
    }

    /// Request numbers completed, in order.
    var completed: [Int] {
        compactMap {
            if case .complete(let request, _) = $0 { return request }
            return nil
        }
    }

    /// The outcome of one request, if this event completed it.
    func outcome(of request: Int) -> Outcome? {
        for case .complete(let number, let outcome) in self where number == request { return outcome }
        return nil
    }

    var signals: [Act] {
        filter {
            if case .signal = $0 { return true }
            return false
        }
    }

    var wakeUps: [Duration] {
        compactMap {
            if case .wakeUp(let at) = $0 { return at }
            return nil
        }
    }

    var logs: [SchedulerLogEntry] {
        compactMap {
            if case .log(let entry) = $0 { return entry }
            return nil
        }
    }

    var logMessages: [String] { logs.map(\.message) }

    /// The measurements for the metrics.
    var observations: [SchedulerObservation] {
        compactMap {
            if case .observe(let observation) = $0 { return observation }
            return nil
        }
    }

    var startResults: [HandlerError?] {
        compactMap {
            if case .startFinished(let failure) = $0 { return .some(failure) }
            return nil
        }
    }
}

/// Plays the shell around a `FunctionScheduler`: passes events with the test clock's time, keeps
/// the one pending wake-up the shell's timer would (the earliest asked for) and fires it when
/// the clock passes it, and remembers where each request was written so a test can answer it.
///
/// After every event it checks what must always hold: the seed lifecycle moves only along
/// `FunctionState.canTransition`, `max_instances` and `concurrency` are respected, no request
/// gets two outcomes, no wake-up is asked for in the past, and the pending wake-up comes no later
/// than any deadline (a request's, a starting instance's, a kill after the grace period).
struct SchedulerHarness {
    private(set) var scheduler: TestScheduler
    private(set) var clock = TestClock()
    /// The shell's timer: the earliest wake-up asked for and not yet fired.
    private(set) var pendingWakeUp: Duration?
    /// The seed lifecycle after each event that changed it.
    private(set) var lifecycles: [FunctionState]
    /// Where each request was last written: instance and request id.
    private(set) var placements: [Int: (instance: Int, requestID: UInt64)] = [:]
    private(set) var outcomes: [Int: Outcome] = [:]
    /// Requests taken and not answered yet -> their deadline.
    private var deadlines: [Int: Duration] = [:]

    init(_ settings: TestScheduler.Settings = .test()) {
        scheduler = TestScheduler(settings: settings)
        lifecycles = [scheduler.lifecycle]
    }

    var settings: TestScheduler.Settings { scheduler.settings }
    var elapsed: Duration { clock.elapsed }
    var lifecycle: FunctionState { scheduler.lifecycle }
    var stats: FunctionStats { scheduler.stats }

    /// Instance number -> phase name (`starting`, `attaching`, `serving`, `stopping`).
    var phases: [Int: String] {
        Dictionary(uniqueKeysWithValues: scheduler.instanceSnapshots.map { ($0.id.number, $0.phase) })
    }

    func instance(_ number: Int) -> InstanceSnapshot? {
        scheduler.instanceSnapshots.first { $0.id.number == number }
    }

    static func pid(of instance: Int) -> Int32 { Int32(1000 + instance) }

    // MARK: Events

    /// Runs one event at the current time and checks the invariants.
    @discardableResult
    mutating func event(_ body: (inout TestScheduler, ContinuousClock.Instant) -> [TestScheduler.Action]) -> [Act] {
        let acts = body(&scheduler, clock.now).map { Act($0, clock: clock) }
        for act in acts {
            switch act {
            case .wakeUp(let at):
                #expect(at >= clock.elapsed, "wake-up asked for in the past: \(at) at \(clock.elapsed)")
                if pendingWakeUp.map({ at < $0 }) ?? true { pendingWakeUp = at }
            case .write(let request, let requestID, let instance):
                placements[request] = (instance, requestID)
            case .complete(let request, let outcome):
                #expect(outcomes[request] == nil, "request \(request) completed twice: \(outcome)")
                outcomes[request] = outcome
                placements[request] = nil
                deadlines[request] = nil
            default:
                break
            }
        }
        checkInvariants()
        return acts
    }

    private mutating func checkInvariants() {
        let lifecycle = scheduler.lifecycle
        if let last = lifecycles.last, last != lifecycle {
            #expect(last.canTransition(to: lifecycle), "lifecycle went from \(last) to \(lifecycle)")
            lifecycles.append(lifecycle)
        }
        let records = scheduler.instances
        #expect(records.count { !$0.phase.isStopping } <= settings.maxInstances)
        for record in records where record.phase.isServing {
            #expect(record.phase.inFlight.count <= settings.concurrency + settings.prefetch)
        }
        // Every deadline has a wake-up at or before it.
        var due = Array(deadlines.values)
        for record in records {
            switch record.phase {
            case .launching(let launching): due.append(clock.offset(of: launching.deadline))
            case .handshaking(let handshake): due.append(clock.offset(of: handshake.deadline))
            case .stopping(let stopping): if let killAt = stopping.killAt { due.append(clock.offset(of: killAt)) }
            case .serving: break
            }
        }
        if let earliest = due.min() {
            #expect(
                pendingWakeUp.map { $0 <= earliest } ?? false,
                "deadline at \(earliest) but the wake-up is at \(String(describing: pendingWakeUp))")
        }
    }

    @discardableResult
    mutating func start() -> [Act] { event { $0.start(now: $1) } }

    @discardableResult
    mutating func drain() -> [Act] { event { $0.drain(now: $1) } }

    @discardableResult
    mutating func stop() -> [Act] { event { $0.stop(now: $1) } }

    @discardableResult
    mutating func submit(_ numbers: Int..., affinity: TestScheduler.Affinity? = nil) -> [Act] {
        numbers.flatMap { number in
            let acts = event { $0.submit(TestRequest(number: number), now: $1, affinity: affinity) }
            if outcomes[number] == nil { deadlines[number] = clock.elapsed + settings.requestTimeout }
            return acts
        }
    }

    @discardableResult
    mutating func launched(_ instance: Int) -> [Act] {
        event { $0.launched(instance: InstanceID(instance), pid: Self.pid(of: instance), now: $1) }
    }

    @discardableResult
    mutating func restored(_ instance: Int, restore: Duration = .milliseconds(20), attached: Bool = false) -> [Act] {
        event {
            $0.restored(
                instance: InstanceID(instance), pid: Self.pid(of: instance), restoreDuration: restore,
                attached: attached, now: $1)
        }
    }

    @discardableResult
    mutating func launchFailed(_ instance: Int, _ error: HandlerError) -> [Act] {
        event { $0.launchFailed(instance: InstanceID(instance), error: error, now: $1) }
    }

    @discardableResult
    mutating func line(_ text: String, from instance: Int) -> [Act] {
        event { $0.controlLine(text, instance: InstanceID(instance), now: $1) }
    }

    @discardableResult
    mutating func controlOverflow(_ instance: Int) -> [Act] {
        event { $0.controlOverflow(instance: InstanceID(instance), now: $1) }
    }

    @discardableResult
    mutating func steered(_ instance: Int, failure: String? = nil) -> [Act] {
        event { $0.steered(instance: InstanceID(instance), failure: failure, now: $1) }
    }

    /// The handler answers a request where it was last written (body `ok <number>`).
    @discardableResult
    mutating func answer(
        _ request: Int, status: Int = 200, sourceLocation: SourceLocation = #_sourceLocation
    )
        -> [Act]
    {
        guard let placement = placements[request] else {
            Issue.record("request \(request) is not in flight", sourceLocation: sourceLocation)
            return []
        }
        return respond(instance: placement.instance, requestID: placement.requestID, status: status, "ok \(request)")
    }

    @discardableResult
    mutating func respond(instance: Int, requestID: UInt64, status: Int = 200, _ body: String = "late") -> [Act] {
        event {
            $0.responseArrived(
                instance: InstanceID(instance), requestID: requestID, status: status, response: body, now: $1)
        }
    }

    /// The shell found the instance's request ring full when it wrote the request.
    @discardableResult
    mutating func ringFull(_ request: Int) -> [Act] {
        guard let placement = placements[request] else { return [] }
        return event {
            $0.requestNotWritten(instance: InstanceID(placement.instance), requestID: placement.requestID, now: $1)
        }
    }

    @discardableResult
    mutating func requestRingFailed(_ request: Int, reason: String) -> [Act] {
        guard let placement = placements[request] else { return [] }
        return event {
            $0.requestRingFailed(
                instance: InstanceID(placement.instance), requestID: placement.requestID, reason: reason, now: $1)
        }
    }

    @discardableResult
    mutating func malformed(instance: Int, requestID: UInt64?, reason: String) -> [Act] {
        event { $0.malformedResponse(instance: InstanceID(instance), requestID: requestID, reason: reason, now: $1) }
    }

    @discardableResult
    /// `unread`: requests (by number) written to its ring that it never read.
    mutating func exited(
        _ instance: Int, _ status: ExitStatus = .exited(0), output: String = "", outOfMemory: Bool = false,
        unread: [Int] = []
    ) -> [Act] {
        let requestIDs = Set(unread.compactMap { placements[$0]?.requestID })
        return event {
            $0.exited(
                instance: InstanceID(instance), status: status, output: output, outOfMemory: outOfMemory,
                unread: requestIDs, now: $1)
        }
    }

    /// A wake-up now, whether or not one is due (an early wake-up must be harmless).
    @discardableResult
    mutating func wakeUp() -> [Act] { event { $0.wakeUp(now: $1) } }

    /// Moves the clock forward, firing the pending wake-up at its time whenever it comes due.
    @discardableResult
    mutating func advance(to offset: Duration) -> [Act] {
        var acts: [Act] = []
        var fired = 0
        while let due = pendingWakeUp, due <= offset {
            fired += 1
            if fired > 100 {
                Issue.record("the scheduler keeps asking for a wake-up at \(due)")
                break
            }
            pendingWakeUp = nil
            clock.elapsed = max(clock.elapsed, due)
            acts += wakeUp()
        }
        clock.elapsed = max(clock.elapsed, offset)
        return acts
    }

    @discardableResult
    mutating func advance(by duration: Duration) -> [Act] { advance(to: clock.elapsed + duration) }

    // MARK: Whole steps

    /// Drives a launched instance to serving with the handshake its settings name: launched,
    /// READY, ATTACH, ATTACHED (sdk); READY (process handler); READY, steer, steered (eBPF); for
    /// a restored copy: restored, then ATTACHED. Returns every action on the way.
    @discardableResult
    mutating func serve(_ instance: Int, sourceLocation: SourceLocation = #_sourceLocation) -> [Act] {
        var acts: [Act] = []
        switch settings.start {
        case .spawn:
            acts += launched(instance)
            let ready = line("READY", from: instance)
            acts += ready
            switch settings.handshake {
            case .attach:
                #expect(ready.decisions.first == .attach(instance), sourceLocation: sourceLocation)
                acts += line("ATTACHED", from: instance)
            case .ready:
                break
            case .readyThenSteer:
                #expect(ready.decisions.first == .steer(instance), sourceLocation: sourceLocation)
                acts += steered(instance)
            }
        case .restore, .fork:
            acts += restored(instance)
            if settings.handshake == .attach { acts += line("ATTACHED", from: instance) }
        }
        #expect(phases[instance] == "serving", sourceLocation: sourceLocation)
        return acts
    }

    /// `start`, then every first instance served.
    @discardableResult
    mutating func startServing(sourceLocation: SourceLocation = #_sourceLocation) -> [Act] {
        var acts = start()
        for instance in acts.launches { acts += serve(instance, sourceLocation: sourceLocation) }
        #expect(acts.startResults == [nil], sourceLocation: sourceLocation)
        return acts
    }
}
