import Foundation
import Testing

@testable import AetherCore

/// The confinement settings (issue 14): `user`, `network`, `max_pids`, `cpu_limit`, `secrets`,
/// `auth` per function, `confinement` and `uid_range` for the orchestrator.
@Suite struct ConfinementConfigTests {
    /// The diagnostics of `text` as `line:column keyPath: message`, or [] when it is valid.
    private func problems(_ text: String) throws -> [String] {
        let dir = TemporaryDirectory()
        dir.write("h.py", "")
        let file = dir.write("c.yaml", text)
        do {
            _ = try ConfigLoader.load(path: file)
            return []
        } catch {
            guard case .invalid(_, let diagnostics) = error else { throw error }
            return diagnostics.map { "\($0.line):\($0.column) \($0.message)" }
        }
    }

    @Test func readsEverySetting() throws {
        let dir = TemporaryDirectory()
        dir.write("h.py", "")
        let file = dir.write(
            "c.yaml",
            """
            orchestrator:
              confinement: false
              uid_range: "20000-20999"
            functions:
              - id: a
                trigger_port: 8080
                handler_path: h.py
                user: svc-app_1.x$
                network: none
                max_pids: 64
                cpu_limit: 0.25
                secrets: [db-password, API_KEY.v2]
                auth: {secret: a-token, type: bearer}
              - id: b
                trigger_port: 8081
                handler_path: h.py
                cpu_limit: 2
                auth:
                  secret: db-password
            """)
        let config = try ConfigLoader.load(path: file)
        #expect(config.orchestrator.confinement == false)
        #expect(config.orchestrator.uidRange.ids == 20_000...20_999)
        #expect(config.orchestrator.uidRange.count == 1000)
        let a = config.functions[0]
        #expect(a.user?.rawValue == "svc-app_1.x$")
        #expect(a.network == .loopback)
        #expect(a.maxPIDs.rawValue == 64)
        #expect(a.cpuLimit?.millicores == 250)
        #expect(a.secrets.map(\.rawValue) == ["db-password", "API_KEY.v2"])
        #expect(a.auth == FunctionConfig.Auth(kind: .bearer, secret: try SecretName("a-token")))
        #expect(a.referencedSecrets.map(\.rawValue) == ["db-password", "API_KEY.v2", "a-token"])
        let b = config.functions[1]
        #expect(b.cpuLimit?.millicores == 2000)
        #expect(b.auth?.kind == .bearer && b.auth?.secret.rawValue == "db-password")
        #expect(b.referencedSecrets.map(\.rawValue) == ["db-password"])
    }

    /// Files written before confinement existed keep working, with confinement on by default.
    @Test func defaultsForFilesWithoutTheSettings() throws {
        let dir = TemporaryDirectory()
        dir.write("h.py", "")
        let config = try ConfigLoader.load(
            path: dir.write("c.yaml", "functions:\n  - {id: a, trigger_port: 80, handler_path: h.py}\n"))
        #expect(config.orchestrator.confinement == true)
        #expect(config.orchestrator.uidRange.ids == 61_184...65_519)
        let function = config.functions[0]
        #expect(function.user == nil && function.network == .host && function.maxPIDs.rawValue == 256)
        #expect(function.cpuLimit == nil && function.secrets.isEmpty && function.auth == nil)
        #expect(function.referencedSecrets.isEmpty)
    }

    @Test func errorsNameTheFieldAndTheLine() throws {
        #expect(
            try problems(
                """
                functions:
                  - id: a
                    trigger_port: 80
                    handler_path: h.py
                    auth: {secret: t, type: digest}
                    network: none
                    protocol: process
                """) == [
                    "5:5 functions[0].auth: expected no `auth` for a `protocol: process` handler, which serves HTTP itself, found `auth` set",
                    "5:29 functions[0].auth.type: expected one of bearer, found \"digest\"",
                    "6:14 functions[0].network: expected network: host for a `protocol: process` handler, which must serve on a port of the host, found \"none\"",
                ])
        #expect(
            try problems(
                """
                orchestrator:
                  uid_range: 999-2000
                functions:
                  - id: a
                    trigger_port: 80
                    handler_path: h.py
                    secrets: [a, b, a]
                """) == [
                    "2:14 orchestrator.uid_range: expected a range \"LOW-HIGH\" of user ids with 1000 <= LOW <= HIGH <= 4294967294, such as \"61184-65519\", found \"999-2000\"",
                    "7:21 functions[0].secrets[2]: expected each secret once (\"a\" is listed at line 7), found \"a\"",
                ])
        #expect(
            try problems(
                """
                functions:
                  - id: a
                    trigger_port: 80
                    handler_path: h.py
                    cpu_limit: 1025
                    user: 1000
                    max_pids: 65537
                """) == [
                    "5:16 functions[0].cpu_limit: expected a number of CPU cores above 0 and at most 1024, with at most 3 decimals, such as 0.5, found 1025",
                    "6:11 functions[0].user: expected a user name of 1 to 32 characters of A-Z, a-z, 0-9, '_', '.' or '-' starting with a letter or '_' (optionally ending in '$'), other than root, found \"1000\"",
                    "7:15 functions[0].max_pids: expected an integer in 1...65536, found 65537",
                ])
    }

    @Test func emptySecretListsAreNone() throws {
        let text = "functions:\n  - {id: a, trigger_port: 80, handler_path: h.py, secrets: []}\n"
        #expect(try problems(text) == [])
        #expect(try problems("functions:\n  - {id: a, trigger_port: 80, handler_path: h.py, secrets: }\n") == [])
    }

    @Test func cpuLimitsAreReadExactly() throws {
        #expect(try CPULimit(decimal: "0.5").millicores == 500)
        #expect(try CPULimit(decimal: ".25").millicores == 250)
        #expect(try CPULimit(decimal: "+1.5").millicores == 1500)
        #expect(try CPULimit(decimal: "1.").millicores == 1000)
        #expect(try CPULimit(decimal: "0.001").millicores == 1)
        #expect(try CPULimit(decimal: "1024").millicores == 1_024_000)
        for bad in ["0", "0.0", "-1", "0.0001", "1024.001", "1e3", ".inf", ".nan", "", ".", "1.2.3", "99999999999"] {
            #expect(throws: InvalidValueError.self, "\(bad)") { try CPULimit(decimal: bad) }
        }
        #expect(try CPULimit(decimal: "0.5").description == "0.5")
        #expect(try CPULimit(decimal: "2.000").description == "2")
        #expect(try CPULimit(decimal: "0.125").description == "0.125")
        #expect(try CPULimit(decimal: "0.05").description == "0.05")
        #expect(try CPULimit(decimal: "0.5").cpuMax == (50_000, 100_000))
        #expect(try CPULimit(decimal: "2").cpuMax == (200_000, 100_000))
        // Under 0.01 core the 100 ms period would ask for less than the kernel's 1 ms quota.
        #expect(try CPULimit(decimal: "0.005").cpuMax == (5_000, 1_000_000))
    }

    @Test func secretNames() throws {
        for good in ["a", "DB_PASSWORD", "api-key.v2", "0", String(repeating: "x", count: 64), "a..b"] {
            #expect(try SecretName(good).rawValue == good)
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "é", String(repeating: "x", count: 65), "a\u{0}"] {
            #expect(throws: InvalidValueError.self, "\(bad)") { try SecretName(bad) }
        }
    }

    @Test func userNames() throws {
        for good in ["nobody", "_svc", "web-1", "Build.Bot", "machine$", String(repeating: "u", count: 32)] {
            #expect(try UserName(good).rawValue == good)
        }
        for bad in ["", "root", "1000", "-x", ".x", "a:b", "a b", "$", String(repeating: "u", count: 33)] {
            #expect(throws: InvalidValueError.self, "\(bad)") { try UserName(bad) }
        }
    }

    @Test func uidRanges() throws {
        #expect(UIDRange.standard.description == "61184-65519")
        #expect(try UIDRange(text: "1000-1000").ids == 1000...1000)
        #expect(try UIDRange(text: "1000-4294967294").count == 4_294_966_295)
        for bad in [
            "999-2000", "2000-1999", "1000-4294967295", "1000", "1000-", "-5", "a-b", " 1000-2000", "1000--2000",
        ] {
            #expect(throws: InvalidValueError.self, "\(bad)") { try UIDRange(text: bad) }
        }
    }

    /// The stored state (`ConfigYAML`) keeps every confinement setting.
    @Test func settingsSurviveTheRoundTrip() throws {
        let dir = TemporaryDirectory()
        let handler = dir.write("h.py", "")
        let config = AetherConfig(
            orchestrator: OrchestratorConfig(confinement: false, uidRange: try UIDRange(100_000...100_999)),
            functions: [
                FunctionConfig(
                    id: try FunctionID("a"), memoryLimit: try MemoryLimit(128), triggerPort: try Port(8080),
                    handlerPath: handler, timeout: try FunctionTimeout(30_000), user: try UserName("nobody"),
                    network: .loopback, maxPIDs: try PidsLimit(1), cpuLimit: try CPULimit(millicores: 1),
                    secrets: [try SecretName("b"), try SecretName("a")],
                    auth: FunctionConfig.Auth(secret: try SecretName("token"))),
                FunctionConfig(
                    id: try FunctionID("p"), memoryLimit: try MemoryLimit(128), triggerPort: try Port(8081),
                    handlerPath: handler, timeout: try FunctionTimeout(30_000), handlerProtocol: .process,
                    maxInstances: .one, maxPIDs: try PidsLimit(65_536), cpuLimit: try CPULimit(millicores: 1_024_000),
                    secrets: [try SecretName("a")]),
            ])
        let text = ConfigYAML.render(config)
        let read = try ConfigLoader.parse(bytes: Array(text.utf8), file: "state.yaml", baseDirectory: "/")
        #expect(read == config, "\(text)")
    }
}
