import Testing

@testable import AetherCore

@Suite struct FunctionRegistryTests {
    static func function(_ id: String, port: Int) throws -> FunctionConfig {
        FunctionConfig(
            id: try FunctionID(id), memoryLimit: try MemoryLimit(128), triggerPort: try Port(exactly: port),
            handlerPath: "/bin/true", timeout: try FunctionTimeout(1000))
    }

    @Test func registerLookUpAndUnregister() throws {
        let registry = FunctionRegistry()
        try registry.register(Self.function("b", port: 8081))
        try registry.register(Self.function("a", port: 8080))
        #expect(registry.all.map(\.id.rawValue) == ["a", "b"])
        #expect(registry.entry(try FunctionID("a"))?.state == .uninitialized)
        #expect(registry.entry(onPort: try Port(exactly: 8081))?.id.rawValue == "b")
        let removed = try registry.unregister(try FunctionID("a"))
        #expect(removed.config.triggerPort.rawValue == 8080)
        #expect(registry.count == 1)
    }

    @Test func duplicateIDAndPortAreRejected() throws {
        let registry = FunctionRegistry()
        try registry.register(Self.function("a", port: 8080))
        #expect(throws: RegistryError.duplicateFunction(try FunctionID("a"))) {
            try registry.register(Self.function("a", port: 9000))
        }
        #expect(throws: RegistryError.portInUse(try Port(exactly: 8080), by: try FunctionID("a"))) {
            try registry.register(Self.function("b", port: 8080))
        }
        #expect(registry.count == 1)
    }

    @Test func unknownFunctionIsTyped() throws {
        let registry = FunctionRegistry()
        let id = try FunctionID("ghost")
        #expect(throws: RegistryError.unknownFunction(id)) { try registry.unregister(id) }
        #expect(throws: RegistryError.unknownFunction(id)) { try registry.transition(id, to: .running) }
    }

    @Test func transitionsFollowTheStateMachine() throws {
        let registry = FunctionRegistry()
        let id = try FunctionID("a")
        try registry.register(Self.function("a", port: 8080))
        #expect(try registry.transition(id, to: .warmSnapshot) == .uninitialized)
        #expect(try registry.transition(id, to: .running) == .warmSnapshot)
        #expect(
            throws: RegistryError.illegalTransition(
                StateTransitionError(function: id, from: .running, to: .uninitialized))
        ) {
            try registry.transition(id, to: .uninitialized)
        }
        #expect(registry.entry(id)?.state == .running)
    }

    @Test func concurrentRegistrationsAllLand() async throws {
        let registry = FunctionRegistry()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<500 {
                group.addTask { try registry.register(Self.function("f\(index)", port: 10_000 + index)) }
            }
            try await group.waitForAll()
        }
        #expect(registry.count == 500)
        #expect(Set(registry.all.map(\.config.triggerPort.rawValue)).count == 500)
    }

    /// Many tasks race to claim the same id or port: the check and the insert are one critical
    /// section, so exactly one wins each race.
    @Test func racingRegistrationsHaveOneWinner() async throws {
        let registry = FunctionRegistry()
        let winners = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<200 {
                group.addTask {
                    // Half race for the id "same", the other half for port 7000.
                    let config =
                        index.isMultiple(of: 2)
                        ? try! Self.function("same", port: 20_000 + index) : try! Self.function("p\(index)", port: 7000)
                    return (try? registry.register(config)) != nil
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(winners == 2)
        #expect(registry.count == 2)
    }

    /// Concurrent Uninitialized -> Running: the first succeeds, every later one is an illegal
    /// Running -> Running, never a lost update.
    @Test func racingTransitionsHaveOneWinner() async throws {
        let registry = FunctionRegistry()
        let id = try FunctionID("a")
        try registry.register(Self.function("a", port: 8080))
        let successes = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<100 {
                group.addTask { (try? registry.transition(id, to: .running)) != nil }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(successes == 1)
        #expect(registry.entry(id)?.state == .running)
    }

    /// Readers and writers at once: every snapshot a reader takes is internally consistent.
    @Test func readersSeeConsistentSnapshotsDuringWrites() async throws {
        let registry = FunctionRegistry()
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<200 {
                group.addTask { try? registry.register(Self.function("f\(index)", port: 30_000 + index)) }
                group.addTask {
                    let all = registry.all
                    #expect(Set(all.map(\.id)).count == all.count)
                    #expect(all == all.sorted { $0.id < $1.id })
                }
            }
        }
        #expect(registry.count == 200)
    }
}
