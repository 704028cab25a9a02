import AetherCore
import Foundation
import Testing

@testable import AetherOrchestrator

/// A folder with handler files, removed when the test ends.
private final class StateFolder {
    let path: String

    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("aether-state-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ text: String) -> String {
        let file = "\(path)/\(name)"
        try! Data(text.utf8).write(to: URL(fileURLWithPath: file))
        return file
    }

    var entries: [String] { (try? FileManager.default.contentsOfDirectory(atPath: path).sorted()) ?? [] }
}

private func function(_ id: String, port: UInt16, handler: String, timeout: Int = 30_000) throws -> FunctionConfig {
    FunctionConfig(
        id: try FunctionID(id), memoryLimit: try MemoryLimit(128), triggerPort: try Port(port), handlerPath: handler,
        timeout: try FunctionTimeout(timeout))
}

@Suite struct DesiredStateTests {
    @Test func storedStateRoundTrips() throws {
        let handlers = StateFolder()
        let state = StateFolder()
        let a = handlers.write("a.py", "print('a')\n")
        let b = handlers.write("b é.py", "print('b')\n")
        let config = AetherConfig(
            orchestrator: OrchestratorConfig(stateDirectory: state.path),
            functions: [try function("a", port: 8080, handler: a), try function("b", port: 8081, handler: b)])
        let hashes: [FunctionID: String?] = [
            try FunctionID("a"): try SHA256.hex(ofFile: a), try FunctionID("b"): nil,
        ]
        let desired = DesiredState.initial(
            config: config, file: "/etc/aether/first\nfile ☃.yaml", hashes: hashes, at: "2025-01-02T03:04:05Z")
        let store = DesiredStateStore(folder: state.path + "/nested/state")
        #expect(try store.load() == nil)
        try store.save(desired)
        #expect(try store.load() == desired)
        #expect(try store.load()?.record(of: FunctionID("a"))?.handlerSha256 == hashes[try FunctionID("a")] ?? nil)
        // One file, ours, private, and nothing else left behind.
        #expect((try FileManager.default.contentsOfDirectory(atPath: store.folder)) == ["desired.yaml"])
        let attributes = try FileManager.default.attributesOfItem(atPath: store.path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let text = try String(contentsOfFile: store.path, encoding: .utf8)
        #expect(text.hasPrefix(DesiredStateStore.marker))
        // The stored file is a configuration the loader reads as it is (`aether validate` it).
        #expect(try ConfigLoader.load(path: store.path) == config)
    }

    @Test func deployAndRemoveFollowTheFunctions() throws {
        let handlers = StateFolder()
        let a = handlers.write("a.py", "")
        let b = handlers.write("b.py", "")
        let c = handlers.write("c.py", "")
        let config = AetherConfig(functions: [
            try function("a", port: 1, handler: a), try function("b", port: 2, handler: b),
        ])
        let initial = DesiredState.initial(config: config, file: "/up.yaml", hashes: [:], at: "T0")
        let changedB = try function("b", port: 2, handler: b, timeout: 5)
        let next = initial.deploying(
            [changedB, try function("c", port: 3, handler: c), try function("a", port: 1, handler: a)],
            changed: [try FunctionID("b"), try FunctionID("c")], hashes: [try FunctionID("c"): "cc"], from: "/v2.yaml",
            change: "aether deploy /v2.yaml", at: "T1")
        #expect(next.config.functions.map(\.id.rawValue) == ["a", "b", "c"])
        #expect(next.config.functions[1] == changedB)
        #expect(next.records.map(\.source) == ["/up.yaml", "/v2.yaml", "/v2.yaml"])
        #expect(next.records.map(\.deployedAt) == ["T0", "T1", "T1"])
        #expect(next.records[2].handlerSha256 == "cc")
        #expect(next.sources == ["/up.yaml", "/v2.yaml"])
        #expect(next.change == "aether deploy /v2.yaml" && next.savedAt == "T1")
        let removed = next.removing(try FunctionID("b"), at: "T2")
        #expect(removed.config.functions.map(\.id.rawValue) == ["a", "c"])
        #expect(removed.records.map(\.id) == ["a", "c"])
        #expect(removed.change == "aether rm b")
    }

    @Test func writesAtomicallyAndTouchesOnlyItsOwnFiles() throws {
        let state = StateFolder()
        let handler = state.write("h.py", "")
        let store = DesiredStateStore(folder: state.path)
        let first = DesiredState.initial(
            config: AetherConfig(functions: [try function("a", port: 1, handler: handler)]), file: "/1.yaml",
            hashes: [:], at: "T0")
        // A temporary file a killed writer left (its PID is gone), one of a live writer, and
        // somebody else's file.
        state.write(".desired.yaml.tmp-999999999", "half written")
        state.write(".desired.yaml.tmp-1", "pid 1 is alive")
        state.write("notes.txt", "mine")
        try store.save(first)
        #expect(state.entries == [".desired.yaml.tmp-1", "desired.yaml", "h.py", "notes.txt"])
        #expect(try String(contentsOfFile: state.path + "/notes.txt", encoding: .utf8) == "mine")
        let second = first.removing(try FunctionID("a"), at: "T1")
        try store.save(second)
        #expect(try store.load() == second)
    }

    @Test func aFileItDidNotWriteIsNeitherReadNorReplaced() throws {
        let state = StateFolder()
        let path = state.write("desired.yaml", "functions: []\n")
        let store = DesiredStateStore(folder: state.path)
        #expect(throws: DesiredStateError.self) { try store.load() }
        #expect(throws: DesiredStateError.self) { try store.prepareFolder() }
        #expect(throws: DesiredStateError.self) {
            try store.save(DesiredState.initial(config: AetherConfig(functions: []), file: "/x", hashes: [:], at: "T"))
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "functions: []\n")
    }

    @Test func aDamagedRecordIsReported() throws {
        let state = StateFolder()
        state.write("desired.yaml", DesiredStateStore.marker + "\n# aether-record: {not json\nfunctions: []\n")
        #expect {
            try DesiredStateStore(folder: state.path).load()
        } throws: { error in
            guard case .damagedRecord = error as? DesiredStateError else { return false }
            return true
        }
    }

    @Test func recordLineIsASCII() {
        #expect(DesiredStateStore.asciiJSON("{\"a\":\"é😀\"}") == "{\"a\":\"\\u00e9\\ud83d\\ude00\"}")
    }
}
