import AetherCore
import Foundation
import Testing

@testable import AetherOrchestrator

/// A folder for a virtualenv cache and its requirements files, removed when the test ends.
private final class CacheFolder {
    let path: String

    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("aether-venv-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path + "/state", withIntermediateDirectories: true)
        chmod(path + "/state", 0o700)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ text: String, mode: Int = 0o644) -> String {
        let file = "\(path)/\(name)"
        try! Data(text.utf8).write(to: URL(fileURLWithPath: file))
        try! FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file)
        return file
    }

    var cache: VirtualenvCache { VirtualenvCache(folder: path + "/state/venvs") }

    func entries(_ folder: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: path + "/" + folder).sorted()) ?? []
    }
}

/// The interpreter the tests build virtualenvs with (Debian's, with python3-venv).
private let python = "/usr/bin/python3"

@Suite struct VirtualenvKeyTests {
    @Test func blankLinesCommentsAndLineEndingsDoNotChangeTheKey() {
        let key = VirtualenvKey.make(requirements: Array("idna==3.7\nsix\n".utf8), python: python, version: "3.11.2")
        for variant in [
            "idna==3.7\nsix", "# pins\r\nidna==3.7  \r\n\r\n\t\nsix\t\n", "\n  # indented comment\nidna==3.7\nsix\n",
        ] {
            #expect(
                VirtualenvKey.make(requirements: Array(variant.utf8), python: python, version: "3.11.2") == key,
                "\(variant.debugDescription)")
        }
        #expect(
            VirtualenvKey.normalizedLines(of: Array("a \r\n# c\r\n\r\n  b # trailing\n".utf8)) == [
                "a", "  b # trailing",
            ])
    }

    @Test func requirementsOrderInterpreterAndVersionChangeTheKey() {
        let requirements = Array("idna==3.7\nsix\n".utf8)
        let key = VirtualenvKey.make(requirements: requirements, python: python, version: "3.11.2")
        #expect(key.count == 64)
        let others = [
            VirtualenvKey.make(requirements: Array("six\nidna==3.7\n".utf8), python: python, version: "3.11.2"),
            VirtualenvKey.make(requirements: Array("idna==3.6\nsix\n".utf8), python: python, version: "3.11.2"),
            VirtualenvKey.make(requirements: requirements, python: "/usr/local/bin/python3", version: "3.11.2"),
            VirtualenvKey.make(requirements: requirements, python: python, version: "3.11.7"),
        ]
        #expect(Set(others + [key]).count == 5)
    }
}

/// The image key of a snapshot function `f` running `handler` with `python`, unconfined.
private func imageKey(handler: String, requirements: String?, python: String, sdk: String?) throws -> String {
    let config = FunctionConfig(
        id: try FunctionID("f"), memoryLimit: try MemoryLimit(128), triggerPort: try Port(8080),
        handlerPath: handler, timeout: try FunctionTimeout(1000), snapshot: true, requirements: requirements)
    return ImageKey.make(
        config: config,
        launch: HandlerLaunch(function: config, socketPath: "/run/x.sock", pythonSDK: sdk, python: python),
        sandbox: nil, criuVersion: "4.1.1", pythonSDK: sdk)
}

/// A kept CRIU image is never restored over another virtualenv: the image key covers the
/// virtualenv's marker (its key and its build).
@Suite struct VirtualenvImageKeyTests {
    @Test func theImageKeyFollowsTheVirtualenvsMarker() throws {
        let folder = CacheFolder()
        let handler = folder.write("handler.py", "import aetherless\n")
        let venv = folder.path + "/state/venvs/abc"
        try FileManager.default.createDirectory(atPath: venv + "/bin", withIntermediateDirectories: true)
        folder.write("state/venvs/abc/bin/python", "#!/bin/sh\n", mode: 0o755)
        folder.write("state/venvs/abc/" + VirtualenvCache.marker, "aether virtualenv\nkey abc\nbuilt 1\n")
        let requirements = folder.write("requirements.txt", "idna\n")
        func key() throws -> String {
            try imageKey(handler: handler, requirements: requirements, python: venv + "/bin/python", sdk: nil)
        }
        let first = try key()
        #expect(try key() == first)
        folder.write("state/venvs/abc/" + VirtualenvCache.marker, "aether virtualenv\nkey abc\nbuilt 2\n")
        #expect(try key() != first, "a virtualenv built again gives another image key")
    }
}

/// A kept image maps the Python SDK's C ring module: building it again, or for the first time,
/// gives another image key (criu cannot restore a mapping of a file that changed).
@Suite struct SDKModuleImageKeyTests {
    @Test func theImageKeyFollowsTheRingsCModule() throws {
        let folder = CacheFolder()
        let handler = folder.write("handler.py", "import aetherless\n")
        let sdk = folder.path + "/sdk"
        try FileManager.default.createDirectory(atPath: sdk + "/aetherless", withIntermediateDirectories: true)
        folder.write("sdk/aetherless/ring.py", "# ring\n")
        func key() throws -> String {
            try imageKey(handler: handler, requirements: nil, python: "/usr/bin/python3", sdk: sdk)
        }
        let pure = try key()
        #expect(try key() == pure)
        let module = "sdk/_aetherless_cring.cpython-311-x86_64-linux-gnu.so"
        folder.write(module, "build 1")
        let built = try key()
        #expect(built != pure, "the module built for the first time gives another key")
        folder.write(module, "build 2")
        #expect(try key() != built, "the module built again gives another key")
    }

    /// An image is not restored on a CPU with another instruction set (code in it chose its
    /// variants by CPUID when the template started): the key covers /proc/cpuinfo's flags.
    @Test func theImageKeyNamesTheCPUsInstructionSet() {
        #expect(ImageKey.cpuFeatures.hasPrefix("flags"))
        #expect(ImageKey.cpuFeatures.contains(" sse2"))
    }
}

/// The cache against a real interpreter, without network: what pip can do from nothing.
@Suite(.serialized) struct VirtualenvCacheTests {
    @Test func anInterpreterThatCannotMakeVirtualenvsIsNamed() throws {
        let folder = CacheFolder()
        let fake = folder.write(
            "python", "#!/bin/sh\necho 'No module named ensurepip' >&2\nexit 1\n", mode: 0o755)
        let requirements = folder.write("requirements.txt", "idna\n")
        let error = #expect(throws: VirtualenvError.self) {
            try folder.cache.prepare(
                function: try FunctionID("f"), requirements: requirements, python: fake, progress: { _ in })
        }
        guard case .interpreterUnusable(let named, let output)? = error else {
            Issue.record("\(String(describing: error))")
            return
        }
        #expect(named == fake && output.contains("No module named ensurepip"))
        #expect(String(describing: error!).contains("apt-get install python3-venv"))
        if case .success = VirtualenvCache.probe(python: "/nonexistent/python3") { Issue.record("probe succeeded") }
        #expect(folder.entries("state").isEmpty, "nothing made for an unusable interpreter")
    }

    @Test func aFailedInstallReportsPipAndLeavesNothing() throws {
        guard access(python, X_OK) == 0, case .success = VirtualenvCache.probe(python: python) else { return }
        let folder = CacheFolder()
        // A local path that is not there: pip fails without asking any index.
        let requirements = folder.write("requirements.txt", "./no-such-project-aetherless\n")
        var lines: [String] = []
        let error = #expect(throws: VirtualenvError.self) {
            try folder.cache.prepare(
                function: try FunctionID("broken"), requirements: requirements, python: python,
                progress: { lines.append($0) })
        }
        guard case .installFailed(let function, let named, let status, let output)? = error else {
            Issue.record("\(String(describing: error))")
            return
        }
        #expect(function.rawValue == "broken" && named == requirements && status == "exited with status 1")
        #expect(output.contains("no-such-project-aetherless"), "\(output)")
        #expect(lines.contains { $0.hasPrefix("making a virtualenv with") }, "progress lines: \(lines)")
        #expect(folder.entries("state/venvs").isEmpty, "the failed build was removed")
    }

    @Test func buildsOnceThenReusesAndRefusesForeignFolders() throws {
        guard access(python, X_OK) == 0, case .success(let interpreter) = VirtualenvCache.probe(python: python) else {
            return
        }
        let folder = CacheFolder()
        let requirements = folder.write("requirements.txt", "# nothing to install\n")
        let id = try FunctionID("empty")
        let (built, wasBuilt) = try folder.cache.prepare(
            function: id, requirements: requirements, python: python, progress: { _ in })
        #expect(wasBuilt)
        #expect(built.folder == folder.path + "/state/venvs/" + built.key)
        #expect(
            built.key
                == VirtualenvKey.make(
                    requirements: Array("# nothing to install\n".utf8), python: interpreter.path,
                    version: interpreter.version))
        #expect(access(built.python, X_OK) == 0)
        #expect(folder.entries("state/venvs") == [built.key], "no build folder left")
        var status = stat()
        stat(folder.path + "/state", &status)
        #expect(status.st_mode & 0o777 == 0o711, "the state folder: passable, not listable")
        stat(built.folder, &status)
        #expect(status.st_mode & 0o777 == 0o755)
        // bin/'s scripts name the final folder, not the build folder.
        let pip = try String(contentsOfFile: built.folder + "/bin/pip", encoding: .utf8)
        // (pip writes a /bin/sh trampoline when the path is too long for a #! line.)
        #expect(pip.contains("\(built.folder)/bin/python") && !pip.contains(".build-"), "\(pip.prefix(300))")

        let (again, builtAgain) = try folder.cache.prepare(
            function: id, requirements: requirements, python: python, progress: { Issue.record("rebuilt: \($0)") })
        #expect(again == built && !builtAgain)

        // A folder at a key's place that aether did not make is never used nor removed.
        let other = folder.write("other.txt", "idna==3.7\n")
        let foreignKey = VirtualenvKey.make(
            requirements: Array("idna==3.7\n".utf8), python: interpreter.path, version: interpreter.version)
        try FileManager.default.createDirectory(
            atPath: folder.path + "/state/venvs/" + foreignKey + "/bin", withIntermediateDirectories: true)
        let error = #expect(throws: VirtualenvError.self) {
            try folder.cache.prepare(function: id, requirements: other, python: python, progress: { _ in })
        }
        guard case .folderUnavailable(let path, let reason)? = error else {
            Issue.record("\(String(describing: error))")
            return
        }
        #expect(path.hasSuffix(foreignKey) && reason.contains(".aether-venv"))
        #expect(FileManager.default.fileExists(atPath: folder.path + "/state/venvs/" + foreignKey + "/bin"))
    }

    @Test func errorsSayWhatFailed() throws {
        let install = VirtualenvError.installFailed(
            function: try FunctionID("api"), requirements: "/srv/api/requirements.txt", status: "exited with status 1",
            output: "ERROR: No matching distribution found for nope==9")
        #expect(
            install.description
                == "the virtualenv of function api could not be built from /srv/api/requirements.txt: pip install exited with status 1; its output ends:\nERROR: No matching distribution found for nope==9"
        )
        #expect(
            VirtualenvError.folderUnavailable(path: "/var/lib/aetherless/venvs", reason: "Permission denied")
                .description
                == "cannot use the virtualenv folder /var/lib/aetherless/venvs: Permission denied")
    }
}
