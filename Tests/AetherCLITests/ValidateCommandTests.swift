import Foundation
import Testing

@Suite struct ValidateCommandTests {
    @Test func exampleConfigIsValidAndListed() throws {
        let result = try AetherBinary.run(["validate", "examples/aetherless.yaml"], in: AetherBinary.repositoryRoot)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("examples/aetherless.yaml: valid, ") == true)
        #expect(
            lines.dropFirst().first?.split(separator: " ", omittingEmptySubsequences: true) == [
                "ID", "PORT", "MEMORY", "TIMEOUT", "PROTOCOL", "HANDLER",
            ])
        #expect(result.stdout.contains("process-hello"))
        #expect(result.stdout.contains("8083"))
        #expect(
            lines.last == "data plane: ebpf, no XDP; trigger ports on 127.0.0.1; python: /usr/bin/python3")
        #expect(result.stderr.isEmpty)
    }

    @Test func everyProblemIsPrintedWithPositionAndExitIsOne() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aether-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("print(1)\n".utf8).write(to: dir.appendingPathComponent("h.py"))
        let config = """
            functions:
              - id: ok
                trigger_port: 8080
                handler_path: h.py
              - id: Bad
                trigger_port: 8080
                handler_path: nowhere.py
                timeout_ms: -5
                retries: 3
            """
        try Data(config.utf8).write(to: dir.appendingPathComponent("bad.yaml"))
        let result = try AetherBinary.run(["validate", "bad.yaml"], in: dir.path)
        #expect(result.status == 1)
        #expect(result.stdout.isEmpty, "nothing is listed for an invalid file")
        let lines = result.stderr.split(separator: "\n").map(String.init)
        #expect(
            lines == [
                "bad.yaml:5:9: error: functions[1].id: expected 1 to 63 characters of a-z, 0-9, '_' or '-', "
                    + "starting with a letter or digit, found \"Bad\"",
                "bad.yaml:6:19: error: functions[1].trigger_port: expected a port no other function uses "
                    + "(8080 is taken by function ok at line 3), found 8080",
                "bad.yaml:7:19: error: functions[1].handler_path: expected an existing handler program, "
                    + "found \(dir.resolvingSymlinksInPath().path)/nowhere.py: No such file or directory",
                "bad.yaml:8:17: error: functions[1].timeout_ms: expected an integer in 1...900000 ms, found -5",
                "bad.yaml:9:5: error: functions[1].retries: expected one of the keys id, memory_limit_mb, "
                    + "trigger_port, handler_path, timeout_ms, environment, protocol, max_instances, concurrency, "
                    + "max_queue, max_body_bytes, startup_timeout_ms, snapshot, min_warm, idle_timeout_ms, "
                    + "user, network, max_pids, cpu_limit, secrets, auth, asgi, wsgi, requirements, "
                    + "found unknown key `retries`",
                "bad.yaml: 5 problems; nothing was started",
            ])
    }

    /// `requirements:` needs an interpreter that can make virtualenvs: validate checks it (no
    /// network) and names the functions.
    @Test func requirementsNeedAnInterpreterWithVenv() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aether-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("print(1)\n".utf8).write(to: dir.appendingPathComponent("h.py"))
        try Data("idna==3.7\n".utf8).write(to: dir.appendingPathComponent("requirements.txt"))
        let fake = dir.appendingPathComponent("python")
        try Data("#!/bin/sh\necho 'No module named ensurepip' >&2\nexit 1\n".utf8).write(to: fake)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake.path)
        let function =
            "functions:\n  - {id: api, trigger_port: 8080, handler_path: h.py, requirements: requirements.txt}\n"
        try Data(("orchestrator: {python: \(fake.path)}\n" + function).utf8).write(
            to: dir.appendingPathComponent("bad.yaml"))
        let result = try AetherBinary.run(["validate", "bad.yaml"], in: dir.path)
        #expect(result.status == 1)
        #expect(
            result.stderr.hasPrefix(
                "bad.yaml: error: requirements of api: the Python interpreter \(fake.path) cannot make virtualenvs"),
            "\(result.stderr)")
        #expect(result.stderr.contains("No module named ensurepip"))

        guard access("/usr/bin/python3", X_OK) == 0 else { return }
        try Data(("orchestrator: {python: /usr/bin/python3}\n" + function).utf8).write(
            to: dir.appendingPathComponent("good.yaml"))
        let good = try AetherBinary.run(["validate", "good.yaml"], in: dir.path)
        #expect(good.status == 0, "\(good.stderr)")
    }

    @Test func unreadableFileIsAClearError() throws {
        let result = try AetherBinary.run(["validate", "/nonexistent/aetherless.yaml"])
        #expect(result.status == 1)
        #expect(
            result.stderr
                == "error: cannot read configuration file /nonexistent/aetherless.yaml: No such file or directory\n")
    }

    @Test func binaryFileIsAClearError() throws {
        let result = try AetherBinary.run(["validate", "/bin/sh"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("/bin/sh:1:"))
        #expect(result.stderr.contains("expected UTF-8 text"))
    }

    @Test func versionAndHelp() throws {
        let version = try AetherBinary.run(["--version"])
        #expect(version.status == 0)
        #expect(version.stdout == "0.1.0\n")
        let help = try AetherBinary.run(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("validate"))
    }

    @Test func missingFileArgumentIsAUsageError() throws {
        let result = try AetherBinary.run(["validate"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("Missing expected argument '<file>'"))
    }
}
