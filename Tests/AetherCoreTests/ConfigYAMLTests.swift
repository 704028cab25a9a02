import Foundation
import Testing

@testable import AetherCore

/// `ConfigYAML` writes the deployed state: whatever it writes, `ConfigLoader` must read back
/// into an equal configuration.
@Suite struct ConfigYAMLTests {
    /// Renders, parses the text with the loader, and returns what it read.
    private func roundTrip(_ config: AetherConfig, header: [String] = []) throws -> (AetherConfig, String) {
        let text = ConfigYAML.render(config, header: header)
        let read = try ConfigLoader.parse(bytes: Array(text.utf8), file: "state.yaml", baseDirectory: "/")
        return (read, text)
    }

    @Test func everySettingSurvivesTheRoundTrip() throws {
        let dir = TemporaryDirectory()
        let python = dir.write("handler.py", "print('hi')\n")
        let program = dir.write("bin-handler", "#!/bin/sh\n", executable: true)
        let requirements = dir.write("requirements \"pinned\".txt", "idna==3.7\n")
        let config = AetherConfig(
            orchestrator: OrchestratorConfig(
                shmBufferSize: try ShmBufferSize(1_048_576), warmPoolSize: try WarmPoolSize(7),
                restoreTimeout: try RestoreTimeout(40), snapshotDirectory: "/dev/shm/custom images",
                controlSocket: "/run/aether test/aether.sock", listenAddress: "0.0.0.0",
                clientTimeout: try ClientTimeout(1234), criuPath: "/opt/criu/bin/criu", metricsPort: try Port(9464),
                otlpEndpoint: try OTLPEndpoint(text: "http://[::1]:4318/otlp"),
                dataplane: .ebpf, xdpInterface: "veth-a", xdpMode: .native, python: "python3",
                stateDirectory: "/var/lib/aether state"),
            functions: [
                FunctionConfig(
                    id: try FunctionID("snap"), memoryLimit: try MemoryLimit(256), triggerPort: try Port(8080),
                    handlerPath: python, timeout: try FunctionTimeout(1500),
                    environment: [
                        "GREETING": "hi \"there\"\\", "EMPTY": "", "PORT": "9000", "MULTI": "line one\nline two\ttab",
                        "UNICODE": "héllo ☃ 😀", "CONTROL": "bell\u{07} nul\u{0} del\u{7F} nel\u{85} bom\u{FEFF}",
                        "YAMLISH": "- [a, b]: {c: d} # not a comment", "TRUE": "true", "NULL": "null",
                    ],
                    handlerProtocol: .sdk, maxInstances: try InstanceLimit(4), concurrency: try Concurrency(3),
                    maxQueue: try QueueLimit(0), maxBody: try BodyLimit(1000), startupTimeout: try StartupTimeout(250),
                    snapshot: true, minWarm: try WarmCount(2), idleTimeout: try IdleTimeout(5000),
                    requirements: requirements),
                // The sdk-only settings of a process handler are the validator's defaults (the body
                // limit follows shm_buffer_size): a stored configuration was validated before.
                FunctionConfig(
                    id: try FunctionID("proc_1"), memoryLimit: try MemoryLimit(16), triggerPort: try Port(65535),
                    handlerPath: program, timeout: try FunctionTimeout(900_000), handlerProtocol: .process,
                    maxInstances: .one,
                    maxBody: try BodyLimit(
                        OrchestratorConfig(shmBufferSize: try ShmBufferSize(1_048_576)).largestBodyFitting)),
            ])
        let (read, text) = try roundTrip(config)
        #expect(read == config, "\(text)")
    }

    @Test func defaultsAndOptionalSettingsSurviveTheRoundTrip() throws {
        let dir = TemporaryDirectory()
        let handler = dir.write("handler.py", "print('hi')\n")
        let config = AetherConfig(
            orchestrator: OrchestratorConfig(listenAddress: "::1", dataplane: .sockets),
            functions: [
                FunctionConfig(
                    id: try FunctionID("plain"), memoryLimit: try MemoryLimit(128), triggerPort: try Port(1),
                    handlerPath: handler, timeout: try FunctionTimeout(30_000))
            ])
        let (read, text) = try roundTrip(config)
        #expect(read == config, "\(text)")
        #expect(read.orchestrator.stateDirectory == nil)
        #expect(read.orchestrator.metricsPort == nil && read.orchestrator.xdpInterface == nil)
        #expect(!text.contains("state_dir") && !text.contains("xdp_mode"))
    }

    @Test func headerLinesAreCommentsWhateverTheyContain() throws {
        let dir = TemporaryDirectory()
        let handler = dir.write("handler.py", "print('hi')\n")
        let config = AetherConfig(functions: [
            FunctionConfig(
                id: try FunctionID("h"), memoryLimit: try MemoryLimit(128), triggerPort: try Port(8080),
                handlerPath: handler, timeout: try FunctionTimeout(30_000))
        ])
        let (read, text) = try roundTrip(config, header: ["first", "deploy /tmp/a\nfunctions: []\u{0}.yaml"])
        #expect(read == config)
        #expect(text.hasPrefix("# first\n# deploy /tmp/a?functions: []?.yaml\norchestrator:\n"))
    }

    @Test func noFunctionsOnlyWhereAllowed() throws {
        let text = Array(ConfigYAML.render(AetherConfig(functions: [])).utf8)
        let read = try ConfigLoader.parse(bytes: text, file: "state.yaml", baseDirectory: "/", allowsNoFunctions: true)
        #expect(read.functions.isEmpty)
        #expect(throws: ConfigError.self) { try ConfigLoader.parse(bytes: text, file: "a.yaml", baseDirectory: "/") }
    }

    @Test func quotingEscapesWhatYAMLCannotHold() {
        #expect(ConfigYAML.quoted("plain") == "\"plain\"")
        #expect(ConfigYAML.quoted("a\"b\\c") == "\"a\\\"b\\\\c\"")
        #expect(ConfigYAML.quoted("\n\t\r\u{1}\u{FEFF}\u{FFFE}") == "\"\\n\\t\\r\\u0001\\uFEFF\\uFFFE\"")
        #expect(ConfigYAML.quoted("é😀") == "\"é😀\"")
    }

    @Test func stateDirectoryIsValidatedLikeTheOtherPaths() throws {
        let dir = TemporaryDirectory()
        dir.write("handler.py", "print('hi')\n")
        let good = dir.write(
            "good.yaml",
            """
            orchestrator:
              state_dir: /var/lib/./aether/x/../state
            functions:
              - {id: a, trigger_port: 8080, handler_path: handler.py}
            """)
        #expect(try ConfigLoader.load(path: good).orchestrator.stateDirectory == "/var/lib/aether/state")
        let bad = dir.write(
            "bad.yaml",
            """
            orchestrator:
              state_dir: relative/state
              stat_dir: /x
            functions:
              - {id: a, trigger_port: 8080, handler_path: handler.py}
            """)
        #expect {
            try ConfigLoader.load(path: bad)
        } throws: { error in
            guard case .invalid(_, let diagnostics) = error as? ConfigError else { return false }
            let text = diagnostics.map(\.description).joined(separator: "\n")
            return diagnostics.count == 2 && text.contains("orchestrator.state_dir: expected an absolute path")
                && text.contains("`state_dir`")
        }
    }
}
