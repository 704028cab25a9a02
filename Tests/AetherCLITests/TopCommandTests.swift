import Foundation
import Testing

/// `aether top` without an orchestrator: its usage errors and the control socket's error.
/// (The live view itself runs against a real orchestrator in tests/integration/test_top.py.)
@Suite struct TopCommandTests {
    @Test func everySubcommandIsListedInTheHelp() throws {
        let help = try AetherBinary.run(["--help"])
        #expect(help.status == 0)
        for command in [
            "validate", "up", "dev", "wait", "deploy", "versions", "rollback", "rm", "list", "stats", "top", "logs",
            "restart", "down",
            "doctor",
            "secret",
        ] {
            #expect(help.stdout.contains("\n  \(command) "), "\(command) missing from --help")
        }
    }

    @Test func intervalAndCountAreChecked() throws {
        let interval = try AetherBinary.run(["top", "--interval", "0.01"])
        #expect(interval.status == 64)
        #expect(interval.stderr.contains("--interval must be between 0.1 and 3600 seconds, not 0.01"))
        let count = try AetherBinary.run(["top", "--count", "0"])
        #expect(count.status == 64)
        #expect(count.stderr.contains("--count must be at least 1, not 0"))
    }

    @Test func noOrchestratorIsOneLineAndExitStatus1() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("aether-top-\(getpid())").path
        let result = try AetherBinary.run(["top", "--count", "1", "--socket", folder + "/none.sock"])
        #expect(result.status == 1)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.hasPrefix("aether top: "))
        #expect(result.stderr.split(separator: "\n").count == 1)
    }
}
