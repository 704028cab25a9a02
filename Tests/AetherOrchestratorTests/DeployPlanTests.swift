import AetherCore
import FoundationEssentials
import Testing

@testable import AetherOrchestrator

/// `aether deploy`'s decisions: what is added, replaced (and how) or kept, and in which order
/// the new generations start.
@Suite struct DeployPlanTests {
    private func function(
        _ id: String, port: UInt16, handler: String = "/h.py", protocol kind: FunctionConfig.HandlerProtocol = .sdk,
        timeout: Int = 30_000
    ) throws -> FunctionConfig {
        FunctionConfig(
            id: try FunctionID(id), memoryLimit: try MemoryLimit(128), triggerPort: try Port(port),
            handlerPath: handler,
            timeout: try FunctionTimeout(timeout), handlerProtocol: kind,
            maxInstances: kind == .process ? .one : .standard)
    }

    private func running(_ functions: [FunctionConfig], hash: String? = "h1") -> [FunctionID: DeployPlan.Running] {
        Dictionary(uniqueKeysWithValues: functions.map { ($0.id, DeployPlan.Running(config: $0, handlerHash: hash)) })
    }

    private func hashes(_ functions: [FunctionConfig], _ hash: String? = "h1") -> [FunctionID: String?] {
        Dictionary(uniqueKeysWithValues: functions.map { ($0.id, hash) })
    }

    @Test func keepsAddsAndReplaces() throws {
        let same = try function("same", port: 1)
        let edited = try function("edited", port: 2)
        let retimed = try function("retimed", port: 3)
        let fresh = try function("fresh", port: 4)
        let file = [same, edited, try function("retimed", port: 3, timeout: 5), fresh]
        var now = hashes(file)
        now[edited.id] = "h2"
        let plan = DeployPlan(
            file: file, hashes: now, running: running([same, edited, retimed]), force: false, ebpf: true)
        #expect(plan.steps.map(\.action) == [.keep, .replaceBeside, .replaceBeside, .add])
        #expect(
            plan.result
                == DeployResult(
                    added: ["fresh"], replaced: ["edited", "retimed"], unchanged: ["same"], handlerChanged: ["edited"]))
        #expect(plan.changed == [edited.id, retimed.id, fresh.id])
    }

    @Test func forceReplacesTheUnchanged() throws {
        let same = try function("same", port: 1)
        let plan = DeployPlan(file: [same], hashes: hashes([same]), running: running([same]), force: true, ebpf: true)
        #expect(plan.steps.map(\.action) == [.replaceBeside])
        #expect(plan.result.handlerChanged == [])
    }

    @Test func replacingReplacesOnlyTheNamedUnchanged() throws {
        // `aether dev`: a module beside an unchanged handler was edited.
        let edited = try function("edited", port: 1)
        let other = try function("other", port: 2)
        let plan = DeployPlan(
            file: [edited, other], hashes: hashes([edited, other]), running: running([edited, other]), force: false,
            replacing: [edited.id], ebpf: true)
        #expect(plan.steps.map(\.action) == [.replaceBeside, .keep])
    }

    @Test func aDeployRequestWithoutReplacingStillDecodes() throws {
        // What an aether from before `dev` sends.
        let old = try JSONDecoder().decode(
            DeployRequest.self, from: Data(#"{"configFile": "/a.yaml", "force": true}"#.utf8))
        #expect((old.configFile, old.force, old.replacing) == ("/a.yaml", true, []))
        let new = try JSONDecoder().decode(
            DeployRequest.self,
            from: JSONEncoder().encode(DeployRequest(configFile: "/b", force: false, replacing: ["x"])))
        #expect(new.replacing == ["x"])
    }

    @Test func anUnreadableHandlerCountsAsChanged() throws {
        let same = try function("same", port: 1)
        let plan = DeployPlan(file: [same], hashes: [same.id: nil], running: running([same]), force: false, ebpf: true)
        #expect(plan.steps.map(\.action) == [.replaceBeside])
        #expect(plan.steps[0].handlerChanged)
    }

    @Test func whatMustStopFirst() throws {
        let sdk = try function("sdk", port: 1)
        let process = try function("process", port: 2, protocol: .process)
        let file = [
            try function("sdk", port: 1, protocol: .process),
            try function("process", port: 2, protocol: .process, timeout: 9),
        ]
        let ebpf = DeployPlan(
            file: file, hashes: hashes(file), running: running([sdk, process]), force: false, ebpf: true)
        // The protocol changes: the port moves between the gateway and a handler.
        #expect(ebpf.steps.map(\.action) == [.replaceStoppingFirst, .replaceBeside])
        let sockets = DeployPlan(
            file: file, hashes: hashes(file), running: running([sdk, process]), force: false, ebpf: false)
        // Without eBPF a process handler binds the trigger port itself.
        #expect(sockets.steps.map(\.action) == [.replaceStoppingFirst, .replaceStoppingFirst])
    }

    @Test func startOrderTakesTrafficAndStopsThingsLast() throws {
        let oldProcess = try function("p", port: 1, protocol: .process)
        let oldSDK = try function("s", port: 2)
        let oldSwitching = try function("x", port: 3)
        let kept = try function("k", port: 4)
        let file = [
            try function("x", port: 3, protocol: .process),  // stops first
            try function("p", port: 1, protocol: .process, timeout: 9),  // beside, takes its port at READY
            try function("new", port: 5),  // added
            kept,
            try function("s", port: 2, timeout: 9),  // beside, routed at the commit
        ]
        let plan = DeployPlan(
            file: file, hashes: hashes(file), running: running([oldProcess, oldSDK, oldSwitching, kept]), force: false,
            ebpf: true)
        #expect(plan.startOrder.map(\.id.rawValue) == ["new", "s", "p", "x"])
        #expect(plan.result.replaced == ["x", "p", "s"])
    }
}
