import Testing

@testable import AetherOrchestrator
@testable import aether

/// `aether top`'s model as pure logic: rates from successive documents, sorting, keys, screens.
@Suite struct TopModelTests {
    static func function(
        _ id: String, invocations: Int, errors: Int = 0, queue: Int = 0, p99: Double? = nil,
        instances: [(phase: String, inFlight: Int)] = [("serving", 0)]
    ) -> FunctionStatus {
        FunctionStatus(
            id: id, port: 8080, protocol: "sdk", state: "running", lifecycle: "Running", handler: "h.py",
            queueDepth: queue, maxInstances: 4, concurrency: 1,
            instances: instances.enumerated().map { number, instance in
                InstanceStatus(
                    number: number, pid: 100 + number, phase: instance.phase, inFlight: instance.inFlight, served: 0,
                    uptimeSeconds: 1, region: nil, memoryBytes: nil, origin: "spawn", startupMilliseconds: 40)
            },
            stats: StatsSummary(
                invocations: invocations, errors: errors, timeouts: 0, rejected: 0, unauthorized: 0, crashes: 0,
                p50Milliseconds: p99.map { $0 / 2 }, p95Milliseconds: nil, p99Milliseconds: p99, window: invocations,
                lastStartupMilliseconds: nil, restores: 0, restoreFailures: 0, latencyViolations: 0,
                restoreP50Milliseconds: nil, restoreP99Milliseconds: nil, spawnColdStarts: 0, restoreColdStarts: 0,
                starts: [StartStats(kind: "spawn", count: instances.count, p50Milliseconds: 40, p99Milliseconds: 41)]),
            snapshot: nil, confinement: nil)
    }

    static func status(_ functions: [FunctionStatus]) -> OrchestratorStatus {
        OrchestratorStatus(
            ready: true, version: "0", pid: 1, configFile: "a.yaml", stateFile: "s", controlSocket: "c",
            listenAddress: "127.0.0.1", uptimeSeconds: 5, functions: functions, dataplane: "sockets", ebpf: nil,
            warmPool: nil)
    }

    /// `model.press(key)` (a mutating call cannot go inside `#expect`).
    func press(_ model: inout TopModel, _ key: TopModel.Key) -> Bool {
        model.press(key)
    }

    @Test func ratesComeFromTheDifferenceOfTwoDocuments() {
        var model = TopModel()
        model.update(Self.status([Self.function("a", invocations: 100)]), seconds: 10)
        #expect(model.rows.first?.requestsPerSecond == nil)
        model.update(Self.status([Self.function("a", invocations: 350)]), seconds: 10.5)
        #expect(model.rows.first?.requestsPerSecond == 500)
        // A redeploy starts the counters again: no rate rather than a negative one.
        model.update(Self.status([Self.function("a", invocations: 3)]), seconds: 11)
        #expect(model.rows.first?.requestsPerSecond == nil)
    }

    @Test func instancesAreBusyIdleOrStarting() {
        var model = TopModel()
        let function = Self.function(
            "a", invocations: 0,
            instances: [("serving", 2), ("serving", 0), ("starting", 0), ("attaching", 0), ("stopping", 1)])
        model.update(Self.status([function]), seconds: 0)
        let row = model.rows[0]
        #expect([row.busy, row.idle, row.starting] == [1, 1, 2])
    }

    @Test func keysSortSelectAndOpen() {
        var model = TopModel()
        model.update(
            Self.status([
                Self.function("alpha", invocations: 0, errors: 1, p99: 3),
                Self.function("beta", invocations: 0, errors: 5, p99: 1),
            ]), seconds: 0)
        #expect(model.sortedRows.map(\.id) == ["alpha", "beta"])
        #expect(press(&model, .sort(.errors)))
        #expect(model.sortedRows.map(\.id) == ["beta", "alpha"])
        #expect(press(&model, .nextSort))
        #expect(model.sort == .queue)
        #expect(press(&model, .previousColumn))
        #expect(model.sort == .errors)
        #expect(press(&model, .sort(.p99)))
        #expect(model.sortedRows.map(\.id) == ["alpha", "beta"])
        // The cursor follows the function, not the row number.
        #expect(model.selected == "alpha")
        #expect(press(&model, .down))
        #expect(press(&model, .down))
        #expect(model.selected == "beta")
        #expect(press(&model, .open))
        #expect(model.opened == "beta")
        let screen = model.screen(width: 200, height: 40, clock: "12:00:00")
        #expect(screen[0] == "aether top  12:00:00  function beta: instances")
        #expect(screen.contains { $0.hasPrefix("INSTANCE") })
        #expect(press(&model, .back))
        #expect(model.opened == nil)
        #expect(press(&model, .letter("a")))
        #expect(model.opened == "alpha")
        #expect(!press(&model, .quit))
    }

    @Test func theScreenIsCutToTheTerminal() {
        var model = TopModel()
        model.update(Self.status((0..<30).map { Self.function("fn\($0)", invocations: 0) }), seconds: 0)
        let screen = model.screen(width: 20, height: 10, clock: "12:00:00")
        #expect(screen.count == 10)
        #expect(screen.allSatisfy { $0.count <= 20 })
        #expect(screen[3].hasPrefix("  FUNCTION*"))
    }

    @Test func plainLinesAreKeyValueFields() {
        var model = TopModel()
        model.update(Self.status([Self.function("a", invocations: 10, p99: 2.5)]), seconds: 0)
        model.update(Self.status([Self.function("a", invocations: 20, p99: 2.5)]), seconds: 2)
        #expect(
            model.plainLines(clock: "12:00:00") == [
                "12:00:00 function=a lifecycle=Running busy=0 idle=1 starting=0 req_s=5.0 invocations=20 "
                    + "p50_ms=1.25 p99_ms=2.50 queue=0 errors=0 timeouts=0 starts=spawn:1 steered=- packets=- dropped=-"
            ])
    }

    @Test func keysFromTerminalBytes() {
        let esc: UInt8 = 0x1B
        #expect(Aether.Top.keys([esc, 0x5B, 0x41, esc, 0x5B, 0x42]) == [.up, .down])
        #expect(Aether.Top.keys([esc, 0x5B, 0x43, esc, 0x5B, 0x44]) == [.nextColumn, .previousColumn])
        #expect(Aether.Top.keys([esc]) == [.back])
        #expect(Aether.Top.keys(Array("q3s\ri".utf8)) == [.quit, .sort(.p99), .nextSort, .open, .open])
        #expect(Aether.Top.keys(Array("x".utf8)) == [.letter("x")])
    }

    @Test func decimals() {
        #expect(TopModel.decimal(1016.25, places: 1) == "1016.3")
        #expect(TopModel.decimal(0.4, places: 2) == "0.40")
        #expect(TopModel.decimal(0, places: 1) == "0.0")
        #expect(TopModel.milliseconds(12.34) == "12.3")
    }
}
