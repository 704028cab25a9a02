import AetherCore
import Testing

@testable import AetherOrchestrator

/// `FunctionScheduler`'s instance and function lifecycles, as pure logic: start and its
/// failures, the handshakes (sdk, process handler, eBPF steering, restored copies), drain and
/// stop, and every event that arrives when it no longer makes sense.
@Suite struct FunctionSchedulerLifecycleTests {
    static let function = TestScheduler.Settings.function

    static func violation(_ detail: String, instance: Int = 0) -> HandlerError {
        .protocolViolation(function: function, instance: instance, detail: detail)
    }

    // MARK: Start

    @Test func startReportsOnceEveryFirstInstanceServes() {
        var h = SchedulerHarness(.test(minWarm: 2))
        #expect(h.start() == [.launch(0, .spawn), .wakeUp(at: .seconds(2)), .launch(1, .spawn)])
        #expect(h.phases == [0: "starting", 1: "starting"])
        #expect(h.launched(0) == [])
        #expect(h.line("READY", from: 0).decisions == [.attach(0)])
        #expect(h.phases[0] == "attaching")
        #expect(h.line("ATTACHED", from: 0).decisions == [])
        #expect(h.scheduler.mode == .starting)
        h.advance(to: .milliseconds(300))
        let second = h.serve(1)
        #expect(second.startResults == [nil])
        #expect(second.logs.last?.metadata == ["startup_ms": "300"])
        #expect(h.scheduler.mode == .running)
        #expect(h.instance(1)?.startupMilliseconds == 300)
        #expect(h.instance(1)?.pid == SchedulerHarness.pid(of: 1))
        #expect(h.stats.lastStartupMilliseconds == 300)
    }

    @Test func aSnapshotFunctionWithoutMinWarmIsStartedAtOnce() {
        var h = SchedulerHarness(.test(minWarm: 0, start: .restore))
        #expect(h.start() == [.startFinished(nil)])
        #expect(h.lifecycle == .warmSnapshot)
        #expect(h.scheduler.instances.isEmpty)
    }

    /// A request that came while the snapshot was being built (the function not started yet)
    /// gets a copy as soon as it starts, not a 504 at its timeout (seen with `aether up` on an
    /// empty state folder).
    @Test func aRequestQueuedBeforeTheStartIsServedByIt() {
        var h = SchedulerHarness(.test(minWarm: 0, start: .restore))
        #expect(h.submit(1).decisions.isEmpty)
        #expect(h.start().decisions == [.startFinished(nil), .launch(0, .restore, forRequest: true)])
        let served = h.serve(0)
        #expect(served.contains { if case .write(request: 1, _, instance: 0) = $0 { true } else { false } })
    }

    @Test func aFirstInstanceThatExitsReportsWhatItWrote() {
        var h = SchedulerHarness()
        h.start()
        h.launched(0)
        let output = "Traceback (most recent call last):\nImportError: No module named 'PIL'"
        let exit = h.exited(0, .exited(1), output: output)
        let failure = HandlerError.exitedDuringStartup(
            function: Self.function, instance: 0, status: "exited with status 1", output: output)
        #expect(exit.decisions == [.startFinished(failure)])
        // The shell stops the function: nothing is retried meanwhile.
        #expect(h.advance(by: .seconds(60)).decisions == [])
        #expect(h.scheduler.mode == .starting)
        #expect(h.lifecycle == .uninitialized)
    }

    @Test(arguments: [HandshakeKind.attach, .ready, .readyThenSteer])
    func aFirstInstanceWithoutReadyTimesOut(handshake: HandshakeKind) {
        var h = SchedulerHarness(.test(handshake: handshake))
        h.start()
        h.launched(0)
        #expect(h.advance(to: .milliseconds(1999)).decisions == [])
        let due = h.advance(to: .seconds(2))
        #expect(due.decisions == [.signal(0, .kill)])
        #expect(due.logMessages == ["stopping instance: no READY within startup_timeout_ms 2000"])
        let failure = HandlerError.startupTimedOut(
            function: Self.function, instance: 0, waitedMilliseconds: 2000, awaiting: "READY")
        #expect(h.exited(0, .signalled(9)).startResults == [failure])
    }

    @Test func aFirstInstanceWithoutAttachedTimesOut() {
        var h = SchedulerHarness()
        h.start()
        h.launched(0)
        h.advance(to: .seconds(1))
        h.line("READY", from: 0)
        #expect(h.advance(to: .seconds(2)).decisions == [.signal(0, .kill)])
        let failure = HandlerError.startupTimedOut(
            function: Self.function, instance: 0, waitedMilliseconds: 2000, awaiting: "ATTACHED")
        #expect(h.exited(0, .signalled(9)).startResults == [failure])
    }

    @Test func aLaunchThatTakesPastTheStartupTimeoutIsKilledWhenItReports() {
        var h = SchedulerHarness()
        h.start()
        // No PID yet: nothing to signal.
        #expect(h.advance(to: .seconds(2)).decisions == [])
        #expect(h.phases == [0: "stopping"])
        #expect(h.launched(0).decisions == [.signal(0, .kill)])
        #expect(h.launched(0) == [])
        let failure = HandlerError.startupTimedOut(
            function: Self.function, instance: 0, waitedMilliseconds: 2000, awaiting: "READY")
        #expect(h.exited(0, .signalled(9)).startResults == [failure])
    }

    static let startupViolations: [([String], String)] = [
        (["ERROR cannot import handler"], "it reported: cannot import handler"),
        (["HELLO"], #"it sent "HELLO" while READY was expected"#),
        (["ATTACHED"], #"it sent "ATTACHED" while READY was expected"#),
        (["READY", "READY"], #"it sent "READY" while ATTACHED was expected"#),
        (["READY", "ERROR region not found"], "it reported: region not found"),
    ]

    @Test(arguments: startupViolations)
    func aProtocolViolationDuringStartupFailsTheStart(lines: [String], detail: String) {
        var h = SchedulerHarness()
        h.start()
        h.launched(0)
        var last: [Act] = []
        for line in lines { last = h.line(line, from: 0) }
        #expect(last.decisions == [.signal(0, .kill)])
        #expect(last.logMessages == ["stopping instance: protocol violation: \(detail)"])
        // Whatever else it says now is not listened to.
        #expect(h.line("ATTACHED", from: 0) == [])
        #expect(h.exited(0, .signalled(9)).startResults == [Self.violation(detail)])
    }

    @Test func anOverlongControlLineFailsTheStart() {
        var h = SchedulerHarness()
        h.start()
        h.launched(0)
        #expect(h.controlOverflow(0).decisions == [.signal(0, .kill)])
        let detail = "it sent a line longer than 4096 bytes on AETHER_SOCKET"
        #expect(h.exited(0, .signalled(9)).startResults == [Self.violation(detail)])
    }

    @Test func aLaunchFailureFailsTheStart() {
        var h = SchedulerHarness(.test(start: .restore))
        #expect(h.start().decisions == [.launch(0, .restore)])
        let failure = HandlerError.restoreFailed(
            function: Self.function, instance: 0,
            error: .latencyViolation(actual: .milliseconds(75), limit: .milliseconds(50)))
        let failed = h.launchFailed(0, failure)
        #expect(failed.decisions == [.startFinished(failure)])
        #expect(failed.logMessages == ["\(failure)"])
        #expect(h.stats.restoreFailures == 1)
        #expect(h.stats.latencyViolations == 1)
        #expect(h.scheduler.instances.isEmpty)

        var spawned = SchedulerHarness()
        spawned.start()
        let spawnFailure = HandlerError.spawnFailed(
            function: Self.function, program: "python3", reason: "No such file or directory")
        #expect(spawned.launchFailed(0, spawnFailure).decisions == [.startFinished(spawnFailure)])
        #expect(spawned.stats.restoreFailures == 0)
    }

    // MARK: Handshakes

    @Test func aProcessHandlerServesOnReady() {
        var h = SchedulerHarness(.test(handshake: .ready))
        h.start()
        h.launched(0)
        #expect(h.line("READY", from: 0).decisions == [.startFinished(nil)])
        #expect(h.phases == [0: "serving"])
        #expect(h.submit(1).writes == [.write(request: 1, requestID: 1, instance: 0)])
    }

    @Test func anEbpfProcessHandlerIsSteeredBeforeItServes() {
        var h = SchedulerHarness(.test(handshake: .readyThenSteer))
        h.start()
        h.launched(0)
        #expect(h.line("READY", from: 0).decisions == [.steer(0)])
        #expect(h.phases == [0: "starting"])
        // While it is steered nothing else is expected of it.
        #expect(h.steered(0).decisions == [.startFinished(nil)])
        #expect(h.phases == [0: "serving"])
        #expect(h.steered(0) == [])
    }

    @Test func aFailedSteerFailsTheStart() {
        var h = SchedulerHarness(.test(handshake: .readyThenSteer))
        h.start()
        h.launched(0)
        #expect(h.steered(0) == [])
        h.line("READY", from: 0)
        let reason = "it sent READY without listening on AETHER_LISTEN_PORT 41000"
        #expect(h.steered(0, failure: reason).decisions == [.signal(0, .kill)])
        #expect(h.exited(0, .signalled(9)).startResults == [Self.violation(reason)])
    }

    @Test func aLineDuringSteeringIsAViolation() {
        var h = SchedulerHarness(.test(handshake: .readyThenSteer))
        h.start()
        h.launched(0)
        h.line("READY", from: 0)
        #expect(h.line("READY", from: 0).decisions == [.signal(0, .kill)])
        #expect(h.steered(0) == [])
        let detail = #"it sent "READY" while nothing was expected"#
        #expect(h.exited(0, .signalled(9)).startResults == [Self.violation(detail)])
    }

    @Test func aRestoredCopyAttachesThenServes() {
        var h = SchedulerHarness(.test(start: .restore))
        #expect(h.start().decisions == [.launch(0, .restore)])
        h.advance(to: .milliseconds(30))
        let restored = h.restored(0, restore: .milliseconds(25))
        #expect(restored.decisions == [])
        #expect(restored.logMessages == ["instance restored"])
        #expect(h.phases == [0: "attaching"])
        #expect(h.stats.restores == 1)
        h.advance(to: .milliseconds(40))
        #expect(h.line("ATTACHED", from: 0).decisions == [.startFinished(nil)])
        #expect(h.instance(0)?.startupMilliseconds == 40)
        #expect(h.instance(0)?.origin == .restore)
        #expect(h.lifecycle == .running)
    }

    @Test func aCopyFromTheWarmPoolAttachedThereAndServesAtOnce() {
        var h = SchedulerHarness(.test(start: .restore))
        #expect(h.start().decisions == [.launch(0, .restore)])
        let restored = h.restored(0, attached: true)
        #expect(restored.decisions == [.startFinished(nil)])
        #expect(h.phases == [0: "serving"])
        #expect(h.stats.restores == 1)
        // Its ATTACHED was said in the pool: another one breaks the protocol.
        #expect(h.line("ATTACHED", from: 0).decisions == [.signal(0, .kill)])
    }

    @Test func aRestoredCopyHasTheStartupTimeoutFromItsRestoreToAttach() {
        var h = SchedulerHarness(.test(start: .restore))
        h.start()
        h.advance(to: .milliseconds(1500))
        h.restored(0)
        #expect(h.advance(to: .milliseconds(3499)).decisions == [])
        #expect(h.advance(to: .milliseconds(3500)).decisions == [.signal(0, .kill)])
        let failure = HandlerError.startupTimedOut(
            function: Self.function, instance: 0, waitedMilliseconds: 2000, awaiting: "ATTACHED")
        #expect(h.exited(0, .signalled(9)).startResults == [failure])
    }

    @Test func aRestoredCopyThatNeverReportsTimesOutAwaitingAttached() {
        var h = SchedulerHarness(.test(start: .restore))
        h.start()
        #expect(h.advance(to: .seconds(2)).decisions == [])
        // Killed once criu reports it; a failed restore ends it without a process.
        #expect(h.restored(0).decisions == [.signal(0, .kill)])
        let failure = HandlerError.startupTimedOut(
            function: Self.function, instance: 0, waitedMilliseconds: 2000, awaiting: "ATTACHED")
        #expect(h.exited(0, .signalled(9)).startResults == [failure])
    }

    @Test func aRestoredCopySendingReadyBreaksTheProtocol() {
        var h = SchedulerHarness(.test(start: .restore))
        h.start()
        h.restored(0)
        #expect(h.line("READY", from: 0).decisions == [.signal(0, .kill)])
        let detail = #"it sent "READY" while ATTACHED was expected"#
        #expect(h.exited(0, .signalled(9)).startResults == [Self.violation(detail)])
    }

    @Test(arguments: [HandshakeKind.ready, .readyThenSteer])
    func aRestoredProcessHandlerServesAtOnce(handshake: HandshakeKind) {
        var h = SchedulerHarness(.test(start: .restore, handshake: handshake))
        h.start()
        #expect(h.restored(0).decisions == [.startFinished(nil)])
        #expect(h.phases == [0: "serving"])
    }

    @Test func restoredIsIgnoredForASpawnedInstance() {
        var h = SchedulerHarness()
        h.start()
        #expect(h.restored(0) == [])
        #expect(h.phases == [0: "starting"])
        #expect(h.stats.restores == 0)
        h.serve(0)
    }

    // MARK: Lines before the launch is reported

    @Test func readyBeforeLaunchedIsReplayed() {
        var h = SchedulerHarness()
        h.start()
        #expect(h.line("READY", from: 0) == [])
        #expect(h.launched(0).decisions == [.attach(0)])
        #expect(h.line("ATTACHED", from: 0).decisions == [.startFinished(nil)])
    }

    @Test func aProcessHandlersReadyBeforeLaunchedIsReplayed() {
        var h = SchedulerHarness(.test(handshake: .ready))
        h.start()
        h.line("READY", from: 0)
        #expect(h.launched(0).decisions == [.startFinished(nil)])
        #expect(h.phases == [0: "serving"])
    }

    @Test func attachedBeforeRestoredIsReplayed() {
        var h = SchedulerHarness(.test(start: .restore))
        h.start()
        #expect(h.line("ATTACHED", from: 0) == [])
        #expect(h.restored(0).decisions == [.startFinished(nil)])
    }

    @Test func anErrorBeforeLaunchedKillsOnceThePIDIsKnown() {
        var h = SchedulerHarness()
        h.start()
        h.line("ERROR boom", from: 0)
        #expect(h.launched(0).decisions == [.signal(0, .kill)])
        #expect(h.exited(0, .signalled(9)).startResults == [Self.violation("it reported: boom")])
    }

    @Test func tooManyLinesBeforeLaunchedAreAViolation() {
        var h = SchedulerHarness()
        h.start()
        for _ in 0..<16 { #expect(h.line("PING", from: 0) == []) }
        #expect(h.line("PING", from: 0).decisions == [])
        #expect(h.phases == [0: "stopping"])
        #expect(h.launched(0).decisions == [.signal(0, .kill)])
        let detail = #"it sent "PING" while nothing was expected"#
        #expect(h.exited(0, .signalled(9)).startResults == [Self.violation(detail)])
    }

    // MARK: Serving

    static let linesWhileServing: [(String, String)] = [
        ("READY", #"it sent "READY" while nothing was expected"#),
        ("ATTACHED", #"it sent "ATTACHED" while nothing was expected"#),
        ("ERROR out of memory", "it reported: out of memory"),
        ("hello", #"it sent "hello" while nothing was expected"#),
    ]

    @Test(arguments: linesWhileServing)
    func anyLineWhileServingIsAViolation(line: String, detail: String) {
        var h = SchedulerHarness()
        h.startServing()
        h.submit(1)
        let violation = h.line(line, from: 0)
        #expect(violation.decisions == [.signal(0, .kill)])
        #expect(violation.logMessages == ["stopping instance: protocol violation: \(detail)"])
        #expect(h.submit(2).decisions == [.launch(1, .spawn, forRequest: true)])
        let cause = "\(ExitStatus.signalled(9)) (protocol violation: \(detail))"
        let exit = h.exited(0, .signalled(9))
        #expect(exit.decisions == [.complete(request: 1, .instanceFailed(instance: 0, cause: cause))])
        #expect(exit.logs.map(\.level) == [.error])
        #expect(h.serve(1).writes == [.write(request: 2, requestID: 1, instance: 1)])
    }

    // MARK: Drain and stop

    @Test func drainFinishesWhatIsInFlightAndTakesNothingNew() {
        var h = SchedulerHarness(.test(concurrency: 2))
        h.startServing()
        h.submit(1, 2)
        #expect(h.drain() == [])
        #expect(h.scheduler.mode == .draining)
        #expect(h.submit(3).decisions == [.complete(request: 3, .notAccepting(.draining))])
        #expect(h.answer(1).decisions == [.complete(request: 1, .response("ok 1", instance: 0, coldStart: nil))])
        #expect(
            h.answer(2).decisions == [.complete(request: 2, .response("ok 2", instance: 0, coldStart: nil)), .drained])
        #expect(h.drain() == [])
        #expect(h.stats.errors == 1)
        // Draining does not stop idle instances: the shell stops them.
        #expect(h.advance(by: .seconds(60)).decisions == [])
    }

    @Test func drainFinishesTheQueueToo() {
        var h = SchedulerHarness(.test(maxInstances: 1))
        h.startServing()
        h.submit(1, 2)
        h.drain()
        #expect(h.answer(1).decisions.first == .write(request: 2, requestID: 2, instance: 0))
        #expect(h.answer(2).decisions.last == .drained)
    }

    @Test func drainWhenIdleIsImmediate() {
        var h = SchedulerHarness()
        h.startServing()
        #expect(h.drain() == [.drained])
    }

    @Test func stopTerminatesKillsAfterTheGracePeriodAndReportsTheLastExit() {
        var h = SchedulerHarness(.test(maxInstances: 2, minWarm: 2, requestTimeout: .seconds(60)))
        h.startServing()
        h.submit(1, 2, 3)
        h.advance(to: .seconds(3))
        let stop = h.stop()
        #expect(
            stop.decisions == [
                .complete(request: 3, .notAccepting(.stopped)), .signal(0, .terminate), .signal(1, .terminate),
            ])
        #expect(stop.wakeUps == [.seconds(8)])
        #expect(h.submit(4).decisions == [.complete(request: 4, .notAccepting(.stopped))])

        // Instance 0 finishes its request and exits within the grace period.
        h.advance(to: .seconds(4))
        #expect(h.answer(1).decisions == [.complete(request: 1, .response("ok 1", instance: 0, coldStart: nil))])
        let first = h.exited(0)
        #expect(first.decisions == [])
        #expect(first.logMessages == ["instance stopped"])

        // Instance 1 does not: killed at the end of the grace period, its request fails.
        #expect(h.advance(to: .milliseconds(7999)).decisions == [])
        let grace = h.advance(to: .seconds(8))
        #expect(grace.decisions == [.signal(1, .kill)])
        #expect(grace.logMessages == ["instance did not stop within 5 s; killing it"])
        #expect(
            h.exited(1, .signalled(9)).decisions == [
                .complete(request: 2, .instanceFailed(instance: 1, cause: "\(ExitStatus.signalled(9))")), .stopped,
            ])
        #expect(h.stop() == [])
        #expect(h.scheduler.mode == .stopped)
        #expect(h.lifecycle == .suspended)
    }

    @Test func stopWhileLaunchingKillsOnceLaunched() {
        var h = SchedulerHarness()
        h.start()
        #expect(h.stop() == [])
        #expect(h.launched(0).decisions == [.signal(0, .kill)])
        #expect(h.exited(0, .signalled(9)).decisions == [.stopped])
    }

    @Test func stopWhileRestoringKillsOnceRestoredOrEndsWithTheFailure() {
        var h = SchedulerHarness(.test(minWarm: 2, start: .restore))
        h.start()
        h.stop()
        #expect(h.restored(0).decisions == [.signal(0, .kill)])
        let failure = HandlerError.restoreFailed(
            function: Self.function, instance: 1, error: .restoreFailed(image: "/snap", log: "cut off"))
        #expect(h.launchFailed(1, failure).decisions == [])
        #expect(h.exited(0, .signalled(9)).decisions == [.stopped])
        #expect(h.stats.restores == 1)
        #expect(h.stats.restoreFailures == 1)
    }

    @Test func stopWithNothingRunningIsImmediate() {
        var h = SchedulerHarness(.test(minWarm: 0, start: .restore))
        h.start()
        #expect(h.stop() == [.stopped])
        #expect(h.lifecycle == .warmSnapshot)
    }

    @Test func stopEndsABackOff() {
        var h = SchedulerHarness()
        h.startServing()
        h.exited(0, .signalled(11))
        #expect(h.stop() == [.stopped])
        #expect(h.advance(by: .seconds(1)).decisions == [])
    }

    // MARK: Stale and unexpected events

    @Test func eventsForUnknownInstancesChangeNothing() {
        var h = SchedulerHarness(.test(concurrency: 2))
        h.startServing()
        h.submit(1)
        let before = h.scheduler.instanceSnapshots
        let stranger = InstanceID(42)
        var acts: [Act] = []
        acts += h.launched(42)
        acts += h.restored(42)
        acts += h.line("READY", from: 42)
        acts += h.controlOverflow(42)
        acts += h.steered(42)
        acts += h.steered(42, failure: "no socket")
        acts += h.respond(instance: 42, requestID: 1)
        acts += h.malformed(instance: 42, requestID: 1, reason: "x")
        acts += h.exited(42, .signalled(9))
        acts += h.launchFailed(42, .spawnFailed(function: Self.function, program: "x", reason: "y"))
        acts += h.event { $0.requestNotWritten(instance: stranger, requestID: 1, now: $1) }
        acts += h.event { $0.requestRingFailed(instance: stranger, requestID: 1, reason: "x", now: $1) }
        acts += h.event { $0.responseRingFailed(instance: stranger, reason: "x", now: $1) }
        acts += h.event { $0.responseRejected(instance: stranger, reason: "x", status: 502, now: $1) }
        // Request ids the instance does not hold.
        acts += h.event { $0.requestNotWritten(instance: InstanceID(0), requestID: 9, now: $1) }
        #expect(acts == [])
        #expect(h.scheduler.instanceSnapshots == before)
        #expect(h.answer(1).completed == [1])
    }

    @Test func anExitIsHandledOnce() {
        var h = SchedulerHarness(.test(maxInstances: 2, minWarm: 2))
        h.startServing()
        h.submit(1)
        h.advance(by: .milliseconds(500))
        #expect(h.exited(0, .signalled(11)).completed == [1])
        #expect(h.exited(0, .signalled(11)) == [])
        #expect(h.stats.crashes == 1)
        #expect(h.stats.invocations == 1)
    }

    @Test func launchedAndHandshakeLinesTwiceAreHandled() {
        var h = SchedulerHarness()
        h.start()
        h.launched(0)
        #expect(h.launched(0) == [])
        h.line("READY", from: 0)
        #expect(h.launched(0) == [])
        #expect(h.phases == [0: "attaching"])
        #expect(h.restored(0) == [])
        h.line("ATTACHED", from: 0)
        #expect(h.launched(0) == [])
        #expect(h.phases == [0: "serving"])
    }

    @Test func aWakeUpWithNothingDueDoesNothing() {
        var h = SchedulerHarness(.test(requestTimeout: .seconds(5)))
        h.startServing()
        h.submit(1)
        let before = h.scheduler.instanceSnapshots
        for offset in [0, 100, 4999] {
            h.advance(to: .milliseconds(offset))
            #expect(h.wakeUp().decisions == [])
        }
        #expect(h.scheduler.instanceSnapshots == before)
        #expect(h.answer(1).completed == [1])
    }

    @Test func linesFromAStoppingInstanceAreIgnored() {
        var h = SchedulerHarness(.test(minWarm: 0))
        h.startServing()
        h.advance(to: .seconds(10))
        #expect(h.phases == [0: "stopping"])
        #expect(h.line("hello", from: 0) == [])
        #expect(h.steered(0) == [])
        // Killed after the grace period, and only then.
        #expect(h.advance(to: .seconds(15)).decisions == [.signal(0, .kill)])
        #expect(h.advance(to: .seconds(30)).decisions == [])
    }

    // MARK: The seed lifecycle

    @Test func aSpawnedFunctionsLifecycleFollowsTheSeed() {
        var h = SchedulerHarness(
            .test(maxQueue: 10, maxInstances: 2, minWarm: 0, requestTimeout: .seconds(1), idleTimeout: .seconds(10)))
        #expect(h.lifecycle == .uninitialized)
        h.startServing()
        h.submit(1)
        h.answer(1)
        // Idle: scaled to zero.
        h.advance(to: .seconds(20))
        h.exited(0)
        #expect(h.lifecycle == .suspended)
        // Two requests start two instances; one times out, the other crashes.
        h.submit(2, 3)
        h.serve(1)
        h.serve(2)
        h.advance(to: .milliseconds(20_500))
        h.answer(3)
        h.advance(to: .seconds(21))
        h.exited(1, .signalled(9))
        #expect(h.lifecycle == .running)
        h.exited(2, .signalled(11))
        // A start that fails while a request waits.
        h.submit(4)
        h.launched(3)
        #expect(h.exited(3, .exited(1)).outcome(of: 4) != nil)
        #expect(h.lifecycle == .suspended)
        h.submit(5)
        h.serve(4)
        h.answer(5)
        h.drain()
        h.stop()
        h.exited(4)
        #expect(h.lifecycles == [.uninitialized, .running, .suspended, .running, .suspended, .running, .suspended])
        #expect(h.stats.invocations == 5)
        #expect(h.stats.timeouts == 1)
    }

    @Test func aSnapshotFunctionsLifecycleFollowsTheSeed() {
        var h = SchedulerHarness(.test(maxQueue: 10, maxInstances: 2, minWarm: 1, start: .restore))
        h.startServing()
        h.submit(1, 2)
        h.serve(1)
        h.answer(1)
        h.answer(2)
        // Idle copies stop down to min_warm; then the last one crashes.
        h.advance(to: .seconds(11))
        h.exited(1)
        h.exited(0, .signalled(11))
        #expect(h.lifecycle == .warmSnapshot)
        // Its replacement fails to restore, the next one serves.
        h.advance(by: .milliseconds(100))
        h.launchFailed(
            2, .restoreFailed(function: Self.function, instance: 2, error: .restoreFailed(image: "x", log: "y")))
        h.advance(by: .milliseconds(200))
        h.serve(3)
        h.stop()
        #expect(h.lifecycle == .warmSnapshot)
        h.exited(3)
        #expect(h.lifecycles == [.uninitialized, .running, .warmSnapshot, .running, .warmSnapshot])

        var scaledToZero = SchedulerHarness(.test(minWarm: 0, start: .restore))
        scaledToZero.startServing()
        scaledToZero.submit(1)
        scaledToZero.serve(0)
        scaledToZero.answer(1)
        scaledToZero.advance(by: .seconds(10))
        scaledToZero.exited(0)
        scaledToZero.submit(2)
        scaledToZero.serve(1)
        #expect(scaledToZero.lifecycles == [.uninitialized, .warmSnapshot, .running, .warmSnapshot, .running])
    }
}
