import Foundation
import Testing

@Suite struct DoctorCommandTests {
    @Test func reportsTheHostAndCriu() throws {
        let result = try AetherBinary.run(["doctor"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let rows = result.stdout.split(separator: "\n").map {
            $0.split(separator: " ", omittingEmptySubsequences: true)
        }
        func status(_ check: String) -> String? {
            rows.first { $0.first.map(String.init) == check }.map { String($0[1]) }
        }
        #expect(status("python3") == "ok")
        // Debian's python3 with python3-venv (scripts/setup.sh): functions may have `requirements:`.
        #expect(
            rows.contains { $0.count >= 3 && $0[0] == "python" && $0[1] == "venv" && $0[2] == "ok" },
            "\(result.stdout)")
        // scripts/setup.sh builds the ring's C half for Debian's python3.
        #expect(
            rows.contains { $0.count >= 4 && $0[0] == "python" && $0[1] == "ring" && $0[2] == "ok" && $0[3] == "in" },
            "\(result.stdout)")
        #expect(status("criu") == "ok", "scripts/setup.sh installs criu: \(result.stdout)")
        #expect(result.stdout.contains("Looks good."))
        #expect(result.stdout.contains("sk_lookup and XDP programs load"))
        #expect(rows.contains { $0.count >= 2 && $0[0] == "memory" && $0[2] == "ok" })
    }

    @Test func withoutPrivilegesTheEbpfCheckSaysWhatIsMissing() throws {
        let result = try AetherBinary.run(
            ["doctor"],
            launcher: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        let row = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("ebpf ") }, "\(result.stdout)")
        #expect(row.contains("FAILED"))
        #expect(row.contains("Operation not permitted"))
        #expect(row.contains("CAP_BPF"))
        #expect(row.contains("dataplane: sockets"))
    }

    @Test func aPythonSDKWithoutTheRingsCHalfIsNamed() throws {
        // The package alone, as a pip-installed wheel has it: no _aetherless_cring beside it.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("aether-doctor-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: AetherBinary.repositoryRoot + "/sdk/python/aetherless", toPath: folder + "/aetherless")
        let result = try AetherBinary.run(["doctor"], launcher: ["/usr/bin/env", "AETHER_PYTHON_SDK=\(folder)"])
        let row = try #require(
            result.stdout.split(separator: "\n").first { $0.hasPrefix("python ring ") }, "\(result.stdout)")
        #expect(row.contains("MISSING"))
        #expect(row.contains("in pure Python"))
        #expect(row.contains("scripts/build-python-ext.sh"))
        #expect(result.status == 0, "a pure-Python ring is not fatal: \(result.stdout)")
    }

    @Test func aMissingCriuIsNamed() throws {
        let result = try AetherBinary.run(["doctor", "--criu", "/nonexistent/criu"])
        #expect(result.stdout.contains("MISSING  no usable criu at /nonexistent/criu"), "\(result.stdout)")
    }
}
