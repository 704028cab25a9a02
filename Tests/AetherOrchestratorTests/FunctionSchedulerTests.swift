import AetherCore
import Testing

@testable import AetherOrchestrator

/// `FunctionScheduler`'s request side, as pure logic: admission, dispatch, the queue, timeouts,
/// crashes, back-off and scaling. No processes: the harness plays the shell.
@Suite struct FunctionSchedulerTests {
    static let function = TestScheduler.Settings.function

    // MARK: Admission and dispatch

    @Test func requestsGoToTheLeastLoadedInstanceThenWaitInArrivalOrder() {
        var h = SchedulerHarness(.test(maxInstances: 2, minWarm: 2, concurrency: 2, requestTimeout: .seconds(60)))
        h.startServing()
        #expect(h.submit(1).writes == [.write(request: 1, requestID: 1, instance: 0)])
        #expect(h.submit(2).writes == [.write(request: 2, requestID: 1, instance: 1)])
        #expect(h.submit(3).writes == [.write(request: 3, requestID: 2, instance: 0)])
        #expect(h.submit(4).writes == [.write(request: 4, requestID: 2, instance: 1)])
        // Both instances hold `concurrency` requests and max_instances are running: they wait.
        #expect(h.submit(5, 6).decisions == [])
        #expect(h.scheduler.queueDepth == 2)

        // First come, first served, on whichever instance has room; the next request goes into
        // the ring before the answer is handed on, so the handler works while it is written out.
        #expect(
            h.answer(2).decisions == [
                .write(request: 5, requestID: 3, instance: 1),
                .complete(request: 2, .response("ok 2", instance: 1, coldStart: nil)),
            ])
        #expect(
            h.answer(1).decisions == [
                .write(request: 6, requestID: 3, instance: 0),
                .complete(request: 1, .response("ok 1", instance: 0, coldStart: nil)),
            ])
        #expect(h.scheduler.queueDepth == 0)

        // Instance 0 empties, instance 1 still has r5: the next request goes to 0.
        h.answer(3)
        h.answer(6)
        h.answer(4)
        #expect(h.submit(7).writes == [.write(request: 7, requestID: 4, instance: 0)])
        #expect(h.stats.invocations == 5)
        #expect(h.stats.errors == 0)
    }

    /// A request arriving on an event loop goes to an instance whose answers are read on that
    /// loop, unless that one is loaded more than `concurrency` beyond the least-loaded.
    @Test func aRequestPrefersAnInstanceOnItsLoopWithinOneConcurrencyOfTheLeastLoaded() {
        var h = SchedulerHarness(
            .test(maxQueue: 16, maxInstances: 2, minWarm: 2, requestTimeout: .seconds(60), prefetch: 4))
        h.startServing()
        let second = TestScheduler.Affinity(index: 1, of: 2)
        #expect(h.submit(1, affinity: second).writes == [.write(request: 1, requestID: 1, instance: 1)])
        // One more than the least-loaded (concurrency 1): still preferred.
        #expect(h.submit(2, affinity: second).writes == [.write(request: 2, requestID: 2, instance: 1)])
        // Two more: the least-loaded takes it.
        #expect(h.submit(3, affinity: second).writes == [.write(request: 3, requestID: 1, instance: 0)])
        // Without a preference: the least-loaded, the first of equals.
        #expect(h.submit(4).writes == [.write(request: 4, requestID: 2, instance: 0)])
        let first = TestScheduler.Affinity(index: 0, of: 2)
        #expect(h.submit(5, affinity: first).writes == [.write(request: 5, requestID: 3, instance: 0)])
    }

    @Test func requestIDsAreUniquePerInstance() {
        var h = SchedulerHarness(.test(maxQueue: 100, maxInstances: 2, minWarm: 2, concurrency: 3))
        h.startServing()
        var written: [Int: [UInt64]] = [:]
        func record(_ acts: [Act]) {
            for case .write(_, let id, let instance) in acts { written[instance, default: []].append(id) }
        }
        for request in 1...60 {
            record(h.submit(request))
            if request % 4 == 0 {
                // Answers out of order (newest and oldest in flight): ids are never reused.
                let inFlight = h.placements.keys.sorted()
                record(h.answer(inFlight.last!))
                record(h.answer(inFlight.first!))
            }
        }
        #expect(written.keys.sorted() == [0, 1])
        for ids in written.values {
            #expect(Set(ids).count == ids.count)
            #expect(ids == ids.sorted())
        }
    }

    @Test func aFullQueueRefusesWithTheCounts() {
        var h = SchedulerHarness(.test(maxQueue: 2, maxInstances: 1, concurrency: 1))
        h.startServing()
        h.submit(1, 2, 3)
        #expect(h.scheduler.queueDepth == 2)
        #expect(h.submit(4).decisions == [.complete(request: 4, .queueFull(busyInstances: 1, queued: 2))])
        #expect(h.stats.rejected == 1)
        #expect(h.stats.errors == 0)
        #expect(h.scheduler.queueDepth == 2)

        // Room again once one is answered.
        h.answer(1)
        #expect(h.submit(5).decisions == [])
        #expect(h.scheduler.queueDepth == 2)
        #expect(h.outcomes[2] == nil && h.outcomes[3] == nil)
    }

    @Test func maxInstancesIsNeverExceeded() {
        var h = SchedulerHarness(.test(maxQueue: 10, maxInstances: 2, concurrency: 1, requestTimeout: .seconds(60)))
        h.startServing()
        // One serving (busy), then one more for the waiting requests, and no further.
        #expect(h.submit(1, 2, 3, 4, 5).launches == [1])
        h.serve(1)
        #expect(h.placements[2]?.instance == 1)
        for request in [1, 2, 3, 4] { #expect(h.answer(request).launches == []) }
        #expect(h.scheduler.instances.count == 2)
    }

    // MARK: Timeouts

    @Test func aRequestOverItsTimeoutIsAnsweredAndItsInstanceKilledThenReplaced() {
        var h = SchedulerHarness(.test(concurrency: 2))
        h.startServing()
        h.advance(to: .milliseconds(500))
        #expect(h.submit(1).wakeUps == [.milliseconds(1500)])
        h.advance(to: .seconds(1))
        h.submit(2)

        let due = h.advance(to: .milliseconds(1500))
        #expect(due.decisions == [.signal(0, .kill), .complete(request: 1, .timedOut(afterMilliseconds: 1000))])
        #expect(due.logMessages.contains("stopping instance: request GET /r1 ran over timeout_ms 1000"))
        #expect(h.phases == [0: "stopping"])
        #expect(h.stats.timeouts == 1)

        // Its other request fails with it; a replacement starts at once (a kill is no crash).
        let exit = h.exited(0, .signalled(9))
        let cause = "\(ExitStatus.signalled(9)) (request GET /r1 ran over timeout_ms 1000)"
        #expect(
            exit.decisions == [.complete(request: 2, .instanceFailed(instance: 0, cause: cause)), .launch(1, .spawn)])
        #expect(exit.logMessages.contains("instance \(cause)"))
        #expect(h.stats.crashes == 0)
        h.serve(1)
        #expect(h.submit(3).writes == [.write(request: 3, requestID: 1, instance: 1)])
    }

    @Test func queuedRequestsTimeOutInTheQueue() {
        var h = SchedulerHarness(.test(maxInstances: 1, concurrency: 1))
        h.startServing()
        h.submit(1, 2)
        // r1 in flight (its instance is killed), r2 still queued: both answered at their deadline.
        #expect(
            h.advance(to: .seconds(1)).decisions == [
                .signal(0, .kill),
                .complete(request: 1, .timedOut(afterMilliseconds: 1000)),
                .complete(request: 2, .timedOut(afterMilliseconds: 1000)),
            ])
        #expect(h.stats.timeouts == 2)
        #expect(h.scheduler.queueDepth == 0)
    }

    @Test func aRequestWaitingForAStartingInstanceTimesOutWithoutKillingIt() {
        var h = SchedulerHarness(.test(minWarm: 0, start: .restore))
        h.startServing()
        #expect(h.submit(1).launches == [0])
        #expect(h.advance(to: .seconds(1)).decisions == [.complete(request: 1, .timedOut(afterMilliseconds: 1000))])
        #expect(h.phases == [0: "starting"])
        // The copy still serves the next request.
        h.submit(2)
        h.serve(0)
        #expect(h.placements[2]?.instance == 0)
    }

    // MARK: Crashes

    @Test func aCrashFailsItsRequestsAndItIsReplacedAfterBackOff() {
        var h = SchedulerHarness(.test(concurrency: 2))
        h.startServing()
        h.advance(to: .seconds(3))
        h.submit(1, 2)
        let crash = h.exited(0, .signalled(11))
        let failed = Outcome.instanceFailed(instance: 0, cause: "\(ExitStatus.signalled(11))")
        #expect(crash.decisions == [.complete(request: 1, failed), .complete(request: 2, failed)])
        #expect(crash.logMessages.contains("instance \(ExitStatus.signalled(11))"))
        #expect(crash.logMessages.contains("restarting instance in 100 ms after 1 failure(s)"))
        #expect(crash.wakeUps == [.milliseconds(3100)])
        #expect(h.stats.crashes == 1)
        #expect(h.stats.errors == 2)
        #expect(h.advance(to: .milliseconds(3100)).launches == [1])
    }

    // MARK: Prefetch

    @Test func prefetchedRequestsWaitInTheRingOnlyOnceNoMoreInstancesCanStart() {
        // One instance at most: two more requests than `concurrency` go into its ring.
        var h = SchedulerHarness(.test(maxQueue: 8, maxInstances: 1, prefetch: 2))
        h.startServing()
        #expect(h.submit(1, 2, 3, 4).writes.count == 3)
        #expect(h.placements[4] == nil, "the fourth waits in the queue")
        #expect(h.answer(1).writes == [.write(request: 4, requestID: 4, instance: 0)])

        // Room to scale: the second request starts an instance instead of waiting in a ring.
        var scaling = SchedulerHarness(.test(maxQueue: 8, maxInstances: 2, prefetch: 2))
        scaling.startServing()
        let acts = scaling.submit(1, 2)
        #expect(acts.writes == [.write(request: 1, requestID: 1, instance: 0)])
        #expect(acts.launches == [1])
    }

    @Test func prefetchedRequestsCountAgainstMaxQueue() {
        // They wait as queued ones do: max_queue 1 admits one beyond the executing request.
        var h = SchedulerHarness(.test(maxQueue: 1, maxInstances: 1, prefetch: 2))
        h.startServing()
        #expect(h.submit(1, 2).writes.count == 2)
        h.submit(3)
        #expect(h.outcomes[3] == .queueFull(busyInstances: 1, queued: 1))
    }

    @Test func requestsAnInstanceNeverReadGoToAnotherWhenItDies() {
        // Killed while executing 1 with 2 and 3 still in its ring: 1 fails (it may have run),
        // 2 and 3 are served by the replacement, in order, none lost, none run twice.
        var h = SchedulerHarness(.test(maxQueue: 8, maxInstances: 1, prefetch: 2))
        h.startServing()
        h.advance(to: .milliseconds(100))
        #expect(h.submit(1, 2, 3).writes.count == 3)
        let crash = h.exited(0, .signalled(9), unread: [2, 3])
        #expect(crash.completed == [1])
        #expect(h.outcomes[1] == .instanceFailed(instance: 0, cause: "\(ExitStatus.signalled(9))"))
        #expect(h.outcomes[2] == nil && h.outcomes[3] == nil)
        let replaced = h.advance(to: .milliseconds(200))
        #expect(replaced.launches == [1])
        let served = h.serve(1)
        #expect(
            served.writes == [
                .write(request: 2, requestID: 1, instance: 1), .write(request: 3, requestID: 2, instance: 1),
            ])
        h.answer(2)
        h.answer(3)
        for request in [2, 3] {
            guard case .response(let body, let instance, _) = h.outcomes[request] else {
                Issue.record("request \(request): \(String(describing: h.outcomes[request]))")
                continue
            }
            #expect(body == "ok \(request)" && instance == 1)
        }
    }

    @Test func anInstanceKilledForBreakingTheProtocolIsReplacedAfterBackOff() {
        // Like a crash: a handler that misbehaves as soon as it serves is not restarted in a
        // tight loop.
        var h = SchedulerHarness(.test(minWarm: 1))
        h.startServing()
        h.advance(to: .seconds(1))
        #expect(h.line("HELLO", from: 0).signals == [.signal(0, .kill)])
        let exit = h.exited(0, .signalled(9))
        #expect(exit.launches == [])
        #expect(exit.logMessages.contains("restarting instance in 100 ms after 1 failure(s)"))
        #expect(h.advance(to: .milliseconds(1100)).launches == [1])
    }

    @Test func anOutOfMemoryKillNamesTheLimit() {
        var h = SchedulerHarness(.test(memoryLimitMegabytes: 64))
        h.startServing()
        h.submit(1)
        let exit = h.exited(0, .signalled(9), outOfMemory: true)
        let cause = "\(ExitStatus.signalled(9)) (the kernel's OOM killer stopped it at memory_limit_mb 64)"
        #expect(exit.outcome(of: 1) == .instanceFailed(instance: 0, cause: cause))
        #expect(exit.logs.first { $0.level == .error }?.message == "instance \(cause)")
    }

    // MARK: Back-off

    @Test func consecutiveStartFailuresBackOffDoublingToTenSeconds() {
        var h = SchedulerHarness(.test(startupTimeout: .seconds(30)))
        h.startServing()
        h.advance(to: .seconds(1))
        var failure = h.exited(0, .signalled(11))
        var instance = 0
        let delays: [Duration] = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000].map { .milliseconds($0) }
        for (count, delay) in delays.enumerated() {
            let failedAt = h.elapsed
            #expect(failure.wakeUps.contains(failedAt + delay), "failure \(count + 1)")
            #expect(
                failure.logMessages.contains(
                    "restarting instance in \(Int(delay.milliseconds)) ms after \(count + 1) failure(s)"))
            #expect(failure.launches == [])
            // Nothing starts before the back-off ends, even on an early wake-up.
            #expect(h.advance(to: failedAt + delay - .milliseconds(1)).launches == [])
            #expect(h.wakeUp().launches == [])
            instance += 1
            #expect(h.advance(to: failedAt + delay).launches == [instance], "failure \(count + 1)")
            h.advance(by: .milliseconds(50))
            h.launched(instance)
            failure = h.exited(instance, .exited(1), output: "ImportError: no module named 'PIL'")
        }
        #expect(failure.wakeUps.contains(h.elapsed + .seconds(10)))

        // An instance that serves resets the count: the next crash waits 100 ms again.
        h.advance(by: .seconds(10))
        h.serve(instance + 1)
        h.advance(by: .seconds(1))
        let crash = h.exited(instance + 1, .signalled(11))
        #expect(crash.logMessages.contains("restarting instance in 100 ms after 1 failure(s)"))
        #expect(crash.wakeUps == [h.elapsed + .milliseconds(100)])
    }

    @Test func requestsDuringBackOffWaitForItsEnd() {
        var h = SchedulerHarness(.test(requestTimeout: .seconds(5)))
        h.startServing()
        h.exited(0, .signalled(11))
        #expect(h.submit(1, 2).decisions == [])
        let resumed = h.advance(to: .milliseconds(100))
        #expect(resumed.launches == [1])
        h.advance(to: .milliseconds(150))
        let served = h.serve(1)
        let coldStart = ColdStart(origin: .spawn, milliseconds: 50, restoreMilliseconds: nil)
        #expect(served.writes == [.write(request: 1, requestID: 1, instance: 1)])
        #expect(
            h.answer(1).decisions == [
                .write(request: 2, requestID: 2, instance: 1),
                .complete(request: 1, .response("ok 1", instance: 1, coldStart: coldStart)),
            ])
    }

    @Test func startFailuresAnswerWaitingRequestsWithUnavailable() {
        var h = SchedulerHarness(.test(minWarm: 0))
        h.startServing()
        h.advance(to: .seconds(10))
        h.exited(0)
        #expect(h.scheduler.instances.isEmpty)

        #expect(h.submit(1, 2).launches == [1, 2])
        h.launched(1)
        h.launched(2)
        // Instance 2 may still serve them.
        let first = h.exited(1, .exited(1), output: "Traceback")
        #expect(first.completed == [])
        let failure = HandlerError.exitedDuringStartup(
            function: Self.function, instance: 2, status: "exited with status 1", output: "ImportError: PIL")
        let last = h.exited(2, .exited(1), output: "ImportError: PIL")
        #expect(
            last.decisions == [
                .complete(request: 1, .unavailable(failure)), .complete(request: 2, .unavailable(failure)),
            ]
        )
        // Nothing is waiting and min_warm is 0: no replacement.
        #expect(h.advance(by: .seconds(20)).launches == [])
        #expect(h.stats.errors == 2)
    }

    @Test func aRestoreFailureCountsAsRestoreFailureAndLatencyViolation() {
        var h = SchedulerHarness(.test(minWarm: 0, start: .restore))
        h.startServing()
        #expect(h.submit(1).launches == [0])
        let violation = HandlerError.restoreFailed(
            function: Self.function, instance: 0,
            error: .latencyViolation(actual: .milliseconds(80), limit: .milliseconds(50)))
        let failed = h.launchFailed(0, violation)
        #expect(failed.decisions == [.complete(request: 1, .unavailable(violation))])
        #expect(failed.logs.map(\.level) == [.error])
        #expect(h.stats.restoreFailures == 1)
        #expect(h.stats.latencyViolations == 1)
        #expect(h.stats.restores == 0)
        #expect(h.scheduler.instances.isEmpty)
    }

    // MARK: Scaling

    /// Only a start a request waits for is held to the restore budget: `min_warm` at start and
    /// a replacement when nothing is queued are made ahead of demand.
    @Test func onlyStartsThatARequestWaitsForAreForARequest() {
        var h = SchedulerHarness(.test(maxInstances: 1, minWarm: 1, start: .restore))
        #expect(h.start().decisions == [.launch(0, .restore, forRequest: false)])
        // Slower than the budget: kept (no request waited), counted, and said.
        let slow = h.restored(0, restore: .milliseconds(80))
        #expect(h.stats.latencyViolations == 1)
        #expect(
            slow.logMessages.contains(
                "restore took 80 ms, over the 50 ms restore budget (restore_timeout_ms), for a start no request waited for: kept (a request waiting for a start this slow gets 503)"
            ))
        h.line("ATTACHED", from: 0)
        // Idle: its replacement after a crash (once the back-off is over) is ahead of demand too.
        #expect(h.exited(0, .signalled(9)).launches == [])
        #expect(h.advance(by: .milliseconds(100)).decisions == [.launch(1, .restore, forRequest: false)])
        h.restored(1)
        h.line("ATTACHED", from: 1)
        // A crash while a request waits: the replacement is for the request.
        h.submit(1)
        h.submit(2)
        let crash = h.exited(1, .signalled(9)).decisions + h.advance(by: .milliseconds(200)).decisions
        #expect(crash.filter { $0.isLaunch } == [.launch(2, .restore, forRequest: true)])

        // Scaled to zero, a request's start is for it.
        var zero = SchedulerHarness(.test(minWarm: 0, start: .restore))
        zero.startServing()
        #expect(zero.submit(1).decisions == [.launch(0, .restore, forRequest: true)])
    }

    @Test func queuedRequestsStartOneInstancePerRequestUpToMaxInstances() {
        var h = SchedulerHarness(.test(maxQueue: 10, maxInstances: 3, minWarm: 0, start: .restore))
        h.startServing()
        #expect(h.lifecycle == .warmSnapshot)
        let burst = h.submit(1, 2, 3, 4, 5)
        #expect(
            burst.decisions == [
                .launch(0, .restore, forRequest: true), .launch(1, .restore, forRequest: true),
                .launch(2, .restore, forRequest: true),
            ])
        #expect(h.scheduler.queueDepth == 5)

        h.advance(to: .milliseconds(30))
        for instance in 0..<3 { h.restored(instance, restore: .milliseconds(20)) }
        h.advance(to: .milliseconds(50))
        let coldStart = ColdStart(origin: .restore, milliseconds: 50, restoreMilliseconds: 20)
        for instance in 0..<3 {
            #expect(h.line("ATTACHED", from: instance).writes.count == 1)
        }
        #expect(h.instance(0)?.startupMilliseconds == 50)
        #expect(h.answer(1).outcome(of: 1) == .response("ok 1", instance: 0, coldStart: coldStart))
        // r4 waited for the start too, on whichever instance took it.
        #expect(h.answer(4).outcome(of: 4) == .response("ok 4", instance: 0, coldStart: coldStart))
        h.answer(2)
        h.answer(3)
        h.answer(5)
        // Arrived after the instances were serving: no cold start.
        h.submit(6)
        #expect(h.answer(6).outcome(of: 6) == .response("ok 6", instance: 0, coldStart: nil))
        #expect(h.stats.restoreColdStarts == 5)
        #expect(h.stats.spawnColdStarts == 0)
        #expect(h.stats.restores == 3)
    }

    @Test func idleInstancesStopNewestFirstDownToMinWarm() {
        var h = SchedulerHarness(.test(maxQueue: 10, requestTimeout: .seconds(60), idleTimeout: .seconds(10)))
        h.startServing()
        #expect(h.submit(1, 2, 3).launches == [1, 2])
        h.serve(1)
        h.serve(2)
        h.advance(to: .seconds(1))
        for request in [1, 2, 3] { h.answer(request) }

        #expect(h.advance(to: .milliseconds(10_999)).decisions == [])
        let idle = h.advance(to: .seconds(11))
        #expect(idle.decisions == [.signal(2, .terminate), .signal(1, .terminate)])
        #expect(idle.logMessages == ["stopping idle instance", "stopping idle instance"])
        #expect(h.phases == [0: "serving", 1: "stopping", 2: "stopping"])
        #expect(h.exited(2).decisions == [])
        #expect(h.exited(1).logMessages == ["instance stopped"])
        // min_warm stays.
        #expect(h.advance(by: .seconds(100)).decisions == [])
        #expect(h.phases == [0: "serving"])
    }

    @Test func instancesWithRequestsInFlightAreNotIdle() {
        var h = SchedulerHarness(.test(maxQueue: 10, requestTimeout: .seconds(60), idleTimeout: .seconds(10)))
        h.startServing()
        h.submit(1, 2, 3)
        h.serve(1)
        h.serve(2)
        h.advance(to: .seconds(1))
        h.answer(1)
        h.answer(2)
        // r3 keeps instance 2 busy: the older, idle ones go, down to min_warm serving.
        #expect(h.advance(to: .seconds(11)).decisions == [.signal(1, .terminate), .signal(0, .terminate)])
        #expect(h.phases == [0: "stopping", 1: "stopping", 2: "serving"])
        #expect(h.answer(3).outcome(of: 3) == .response("ok 3", instance: 2, coldStart: nil))
    }

    @Test func minWarmZeroScalesToZeroAndBackUp() {
        var h = SchedulerHarness(.test(minWarm: 0, idleTimeout: .seconds(10)))
        h.startServing()
        #expect(h.lifecycle == .running)
        #expect(h.advance(to: .seconds(10)).decisions == [.signal(0, .terminate)])
        h.exited(0)
        #expect(h.scheduler.instances.isEmpty)
        #expect(h.lifecycle == .suspended)

        h.advance(to: .seconds(20))
        #expect(h.submit(1).decisions == [.launch(1, .spawn, forRequest: true)])
        h.advance(to: .milliseconds(20_100))
        h.serve(1)
        let coldStart = ColdStart(origin: .spawn, milliseconds: 100, restoreMilliseconds: nil)
        #expect(h.answer(1).outcome(of: 1) == .response("ok 1", instance: 1, coldStart: coldStart))
        #expect(h.lifecycle == .running)
        #expect(h.stats.spawnColdStarts == 1)
        #expect(h.advance(to: .milliseconds(30_099)).decisions == [])
        #expect(h.advance(to: .milliseconds(30_100)).decisions == [.signal(1, .terminate)])
    }

    // MARK: Rings

    @Test func aRequestTheRingHadNoRoomForGoesBackFirstInTheQueue() {
        var h = SchedulerHarness(.test(maxInstances: 2, minWarm: 2, concurrency: 2, requestTimeout: .seconds(60)))
        h.startServing()
        h.submit(1, 2, 3, 4, 5, 6)
        #expect(h.placements[3]?.instance == 0)
        #expect(h.placements[3]?.requestID == 2)
        // r3 did not fit in instance 0's ring: it waits ahead of r5 and r6, and instance 0 gets
        // nothing more until it answers.
        #expect(h.ringFull(3).decisions == [])
        #expect(h.scheduler.queueDepth == 3)
        #expect(h.answer(2).writes == [.write(request: 3, requestID: 3, instance: 1)])
        #expect(h.answer(4).writes == [.write(request: 5, requestID: 4, instance: 1)])
        #expect(h.answer(1).writes == [.write(request: 6, requestID: 3, instance: 0)])
    }

    // MARK: Measurements for the metrics

    @Test func queueWaitIsObservedOnceAtTheFirstDispatchEvenWhenTheRingWasFull() {
        var h = SchedulerHarness(.test(maxInstances: 1, minWarm: 1, concurrency: 1, requestTimeout: .seconds(60)))
        h.startServing()
        // Straight to the instance: no wait.
        #expect(h.submit(1).observations == [.queueWait(.zero)])
        // r2 waits 30 ms for r1's answer.
        #expect(h.submit(2).observations == [])
        h.advance(by: .milliseconds(30))
        #expect(h.answer(1).observations == [.queueWait(.milliseconds(30))])
        // Its ring had no room: it is queued again and written again, but not counted twice.
        let again = h.ringFull(2)
        #expect(again.writes == [.write(request: 2, requestID: 3, instance: 0)])
        #expect(again.observations == [])
        #expect(h.submit(3).observations == [])
        h.advance(by: .milliseconds(5))
        #expect(h.answer(2).observations == [.queueWait(.milliseconds(5))])
        #expect(h.stats.invocations == 2)
    }

    @Test func startsAndRestoresAreObservedByKind() {
        var spawned = SchedulerHarness()
        spawned.start()
        spawned.advance(by: .milliseconds(40))
        #expect(spawned.serve(0).observations == [.started(.spawn, .milliseconds(40))])
        #expect(spawned.stats.summary().starts.map(\.kind) == ["spawn"])
        #expect(spawned.stats.summary().starts.first?.p50Milliseconds == 40)

        var restored = SchedulerHarness(.test(start: .restore))
        restored.start()
        restored.advance(by: .milliseconds(12))
        let acts = restored.serve(0)
        #expect(
            acts.observations == [
                .restored(.restore, .milliseconds(20)), .started(.restore, .milliseconds(12)),
            ])
        #expect(restored.stats.summary().starts.first?.count == 1)
    }

    @Test func aRingFullReportAfterTheInstanceAnsweredEverythingDoesNotStrandIt() {
        // The shell writes outside the lock: the response to r1 can be handled before the report
        // that r2 did not fit. Nothing is left in flight to clear the ring-full mark then.
        var h = SchedulerHarness(.test(maxInstances: 1, concurrency: 2, requestTimeout: .seconds(5)))
        h.startServing()
        h.submit(1, 2)
        h.answer(1)
        #expect(h.ringFull(2).writes == [.write(request: 2, requestID: 3, instance: 0)])
        #expect(h.answer(2).outcome(of: 2) == .response("ok 2", instance: 0, coldStart: nil))
        #expect(h.submit(3).writes == [.write(request: 3, requestID: 4, instance: 0)])
    }

    @Test func aFailedRequestRingKillsTheInstanceAndTheRequestWaitsForAnother() {
        var h = SchedulerHarness(.test(requestTimeout: .seconds(5)))
        h.startServing()
        h.submit(1)
        let failed = h.requestRingFailed(1, reason: "ring poisoned")
        #expect(failed.decisions == [.signal(0, .kill)])
        #expect(failed.logMessages == ["stopping instance: its request ring failed: ring poisoned"])
        #expect(h.scheduler.queueDepth == 1)
        // A poisoned ring is the handler's fault: replaced after the back-off, like a crash; the
        // request waits for the new instance.
        #expect(h.exited(0, .signalled(9)).launches == [])
        #expect(h.advance(by: .milliseconds(100)).launches == [1])
        #expect(h.serve(1).writes == [.write(request: 1, requestID: 1, instance: 1)])
    }

    @Test func aMalformedResponseAnswersItsRequestAndKillsTheInstance() {
        var h = SchedulerHarness(.test(concurrency: 2))
        h.startServing()
        h.submit(1, 2)
        let malformed = h.malformed(instance: 0, requestID: 1, reason: "bad checksum")
        #expect(
            malformed.decisions == [
                .signal(0, .kill), .complete(request: 1, .malformedResponse(instance: 0, reason: "bad checksum")),
            ])
        let cause = "\(ExitStatus.signalled(9)) (it wrote a malformed response: bad checksum)"
        #expect(h.exited(0, .signalled(9)).outcome(of: 2) == .instanceFailed(instance: 0, cause: cause))
    }

    @Test func aRejectedResponseOrAFailedResponseRingKillsTheInstance() {
        var h = SchedulerHarness(.test(maxInstances: 2, minWarm: 2))
        h.startServing()
        h.submit(1, 2)
        h.answer(1)
        let rejected = h.event {
            $0.responseRejected(instance: InstanceID(0), reason: "invalid header name", status: 200, now: $1)
        }
        #expect(rejected.decisions == [.signal(0, .kill)])
        #expect(h.stats.errors == 1)
        let ringFailed = h.event { $0.responseRingFailed(instance: InstanceID(1), reason: "corrupted record", now: $1) }
        #expect(ringFailed.decisions == [.signal(1, .kill)])
        let cause = "\(ExitStatus.signalled(9)) (corrupted record)"
        #expect(h.exited(1, .signalled(9)).outcome(of: 2) == .instanceFailed(instance: 1, cause: cause))
    }

    @Test func staleResponsesAreDropped() {
        var h = SchedulerHarness(.test(maxInstances: 1))
        h.startServing()
        h.submit(1)
        h.advance(to: .seconds(1))
        // r1 timed out; its answer comes later, from an instance that is being killed.
        let late = h.respond(instance: 0, requestID: 1)
        #expect(late.decisions == [])
        #expect(
            late.logs == [
                SchedulerLogEntry(
                    level: .debug, message: "late response dropped", instance: InstanceID(0),
                    metadata: ["request": "1"])
            ])
        // An id never written, and an instance that is gone.
        #expect(h.respond(instance: 0, requestID: 99).decisions == [])
        h.exited(0, .signalled(9))
        #expect(h.respond(instance: 0, requestID: 1) == [])
        #expect(h.respond(instance: 7, requestID: 1) == [])
        #expect(h.stats.invocations == 1)
    }
}
