import AetherCore
import Foundation
import Testing

@testable import AetherOrchestrator

/// A folder removed when the test ends.
private final class Folder {
    let path: String

    init() {
        path =
            FileManager.default.temporaryDirectory.appendingPathComponent("aether-versions-\(UUID().uuidString)")
            .path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ text: String) -> String {
        let file = "\(path)/\(name)"
        try! Data(text.utf8).write(to: URL(fileURLWithPath: file))
        return file
    }
}

@Suite struct VersionStoreTests {
    private func function(_ handler: String, value: String = "1") throws -> FunctionConfig {
        FunctionConfig(
            id: try FunctionID("fn"), memoryLimit: try MemoryLimit(128), triggerPort: try Port(8080),
            handlerPath: handler, timeout: try FunctionTimeout(30_000), environment: ["V": value])
    }

    @Test func aVersionKeepsItsCodeAndRunsFromItsCopyOnceTheFilesChange() throws {
        let code = Folder()
        let state = Folder()
        let handler = code.write("app.py", "VALUE = 1\n")
        code.write("helper.py", "NAME = 'one'\n")
        let store = VersionStore(folder: state.path + "/versions", keep: 10)
        let first = try store.record(
            try function(handler), hash: "h1", change: "aether up -c /a.yaml", source: "/a.yaml", at: "T1",
            settings: OrchestratorConfig())
        #expect(first.number == 1 && first.handlerPath == handler)

        let one = try store.version(1, of: FunctionID("fn"))
        #expect(one.record == first)
        #expect(one.config.handlerPath.hasPrefix(state.path + "/versions/fn/code/\(first.code)/"))
        #expect(try String(contentsOfFile: one.config.handlerPath, encoding: .utf8) == "VALUE = 1\n")
        // While the files are its code, it runs from them; the same config with other paths is it.
        #expect(one.runnable().handlerPath == handler)
        #expect(one.isSame(as: try function(handler)))
        #expect(!one.isSame(as: try function(handler, value: "2")))

        code.write("helper.py", "NAME = 'two'\n")
        #expect(!one.isSame(as: try function(handler)), "a module beside the handler is part of its code")
        #expect(one.runnable() == one.config, "the files changed: it runs from its copy")
        #expect(
            try String(
                contentsOfFile: one.config.handlerPath.replacingOccurrences(of: "app.py", with: "helper.py"),
                encoding: .utf8)
                == "NAME = 'one'\n")

        let second = try store.record(
            try function(handler), hash: "h2", change: "aether deploy /a.yaml", source: "/a.yaml", at: "T2",
            settings: OrchestratorConfig())
        #expect(second.number == 2 && second.code != first.code)
        #expect(store.records(of: try FunctionID("fn")).map(\.number) == [1, 2])
        #expect(throws: VersionError.unknownVersion(function: "fn", number: 3, kept: [1, 2])) {
            try store.version(3, of: FunctionID("fn"))
        }
    }

    @Test func onlyTheNewestVersionsAndTheirCodeAreKept() throws {
        let code = Folder()
        let state = Folder()
        let handler = code.write("app.py", "0")
        let store = VersionStore(folder: state.path + "/versions", keep: 2)
        for value in 1...4 {
            code.write("app.py", String(value))
            try store.record(
                try function(handler), hash: nil, change: "deploy", source: "/a.yaml", at: "T\(value)",
                settings: OrchestratorConfig())
        }
        let id = try FunctionID("fn")
        #expect(store.records(of: id).map(\.number) == [3, 4])
        let copies = try FileManager.default.contentsOfDirectory(atPath: state.path + "/versions/fn/code")
        #expect(Set(copies) == Set(store.records(of: id).map(\.code)))
        store.forget(4, of: id)
        #expect(store.records(of: id).map(\.number) == [3])
        store.remove(id)
        #expect(!FileManager.default.fileExists(atPath: state.path + "/versions/fn"))
    }

    @Test func aDamagedVersionFileIsAnErrorNamingIt() throws {
        let code = Folder()
        let state = Folder()
        let handler = code.write("app.py", "0")
        let store = VersionStore(folder: state.path + "/versions", keep: 2)
        try store.record(
            try function(handler), hash: nil, change: "deploy", source: "/a.yaml", at: "T",
            settings: OrchestratorConfig())
        let path = state.path + "/versions/fn/1.yaml"
        try Data("not a version\n".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: VersionError.damaged(path: path, reason: "it lacks the \"\(VersionStore.marker)\" first line"))
        {
            try store.version(1, of: FunctionID("fn"))
        }
    }
}
