import Testing

@testable import AetherCore

/// `ConfigError.withoutContents()`: what `aether deploy` prints for a file that is not a
/// configuration holds nothing of its text; a configuration with mistakes is reported whole.
@Suite struct ConfigErrorRedactionTests {
    private static let secret = "sk-live-9f8e7d6c5b4a"

    private func error(_ text: String) -> ConfigError? {
        do {
            _ = try ConfigLoader.parse(bytes: Array(text.utf8), file: "f.yaml", baseDirectory: "/")
            return nil
        } catch {
            return error
        }
    }

    @Test(arguments: [
        ("TOKEN=\(secret)\n", "not a YAML mapping"),
        ("- \(secret)\n", "not a YAML mapping"),
        ("a: [\(secret)\n", "not well-formed YAML"),
        ("\(secret): 1\n\(secret): 2\n", "not well-formed YAML"),
        ("# \(secret)\n", "an empty document"),
        ("{\"private_key\": \"\(secret)\", \"\(secret)\": 1}", "a mapping without a `functions` list"),
        ("password: \(secret)\norchestrator: {}\n", "a mapping without a `functions` list"),
    ])
    func filesThatAreNotConfigurationsShowNothing(_ text: String, _ reason: String) throws {
        let original = try #require(error(text))
        let redacted = original.withoutContents()
        guard case .notAConfiguration(let path, _, _, let found) = redacted else {
            Issue.record("expected .notAConfiguration, got \(redacted)")
            return
        }
        #expect(path == "f.yaml" && found.hasPrefix(reason), "\(found)")
        #expect(!redacted.description.contains(Self.secret))
        #expect(!redacted.description.contains("sk-live"))
    }

    @Test func binaryContentShowsNothing() throws {
        let bytes = Array("functions:\n".utf8) + [0] + Array(Self.secret.utf8)
        do {
            _ = try ConfigLoader.parse(bytes: bytes, file: "f.yaml", baseDirectory: "/")
            Issue.record("binary content was accepted")
        } catch {
            #expect(
                error.withoutContents()
                    == .notAConfiguration(path: "f.yaml", line: 2, column: 1, reason: "not UTF-8 text"))
        }
    }

    @Test func configurationsWithMistakesAreReportedWhole() throws {
        let text = "functions:\n  - {id: Bad, trigger_port: 80, handler_path: /nonexistent.py}\n"
        let original = try #require(error(text))
        #expect(original.withoutContents() == original)
        let unknownOnly = try #require(error("orchestrator: {}\nfunctions: []\ncolour: blue\n"))
        #expect(unknownOnly.withoutContents() == unknownOnly)
        #expect(ConfigError.unreadable(path: "p", reason: "r").withoutContents() == .unreadable(path: "p", reason: "r"))
    }
}
