#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What `aether doctor` checks about the host, with the same code `aether up` uses.
public enum HostChecks {
    public struct Result: Sendable {
        public let ok: Bool
        public let detail: String
    }

    public static func memoryCgroup() -> Result {
        switch MemoryCgroup.create() {
        case .success(let cgroup):
            cgroup.removeRoot()
            let parent = "/" + cgroup.root.split(separator: "/").dropLast().joined(separator: "/")
            return Result(ok: true, detail: "\(cgroup.version == .v1 ? "v1" : "v2") under \(parent)")
        case .failure(let failure):
            return Result(ok: false, detail: failure.reason)
        }
    }

    /// What `confinement: true` needs (SECURITY.md), each as a row: the sandbox helper, the pids
    /// and cpu cgroup controllers (`max_pids`, `cpu_limit`), and a real sandboxed start: `/bin/sh
    /// -c 'exit 0'` as uid 65534 in new PID, mount and IPC namespaces with the syscall filter.
    public static func confinement() -> [(name: String, result: Result)] {
        var rows: [(name: String, result: Result)] = []
        let helper: String
        do {
            helper = try InstanceSandbox.locateHelper()
            rows.append(("sandbox helper", Result(ok: true, detail: helper)))
        } catch {
            rows.append(("sandbox helper", Result(ok: false, detail: error.description)))
            return rows
        }
        guard case .success(let cgroups) = MemoryCgroup.create() else { return rows }
        defer { cgroups.removeRoot() }
        rows.append(
            (
                "pids cgroup",
                Result(
                    ok: cgroups.pidsRoot != nil,
                    detail: cgroups.pidsRoot ?? "no pids controller: max_pids cannot be enforced")
            ))
        rows.append(
            (
                "cpu cgroup",
                Result(
                    ok: cgroups.cpuRoot != nil,
                    detail: cgroups.cpuRoot ?? "no cpu controller: cpu_limit cannot be enforced")
            ))
        let staging = "/tmp/aether-doctor-\(getpid())"
        mkdir(staging, 0o700)
        defer { rmdir(staging) }
        let sandbox = InstanceSandbox(
            helper: helper, identity: FunctionIdentity(uid: 65534, gid: 65534), staging: staging,
            tmpBytes: 1 << 20, binds: [], covers: [], secrets: nil, networkNone: false, workingDirectory: "/")
        do {
            let process = try SandboxSpawner.spawn(
                sandbox, cgroups: [], program: "/bin/sh", arguments: ["-c", "exit 0"],
                environment: HandlerLaunch.inheritedEnvironment(), searchPath: false, asInit: false)
            var status: CInt = 0
            waitpid(process.pid, &status, 0)
            var buffer = [UInt8](repeating: 0, count: 512)
            let count = buffer.withUnsafeMutableBytes { read(process.stderr.rawValue, $0.baseAddress, $0.count) }
            let said = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).filter { $0 != "\n" }
            let exit = ExitStatus(waitStatus: status)
            rows.append(
                (
                    "sandboxed start",
                    exit == .exited(0)
                        ? Result(ok: true, detail: "uid 65534, PID/mount/IPC namespaces, no capabilities, seccomp")
                        : Result(ok: false, detail: said.isEmpty ? "the sandboxed /bin/sh \(exit)" : said)
                ))
        } catch {
            rows.append(("sandboxed start", Result(ok: false, detail: error.description)))
        }
        return rows
    }

    /// Whether `python3` runs the Python SDK's ring in C (`_aetherless_cring`, which
    /// scripts/build-python-ext.sh builds beside the SDK) or in pure Python, and why.
    public static func pythonRing(sdk: String) -> Result {
        var environment = HandlerLaunch.inheritedEnvironment()
        environment["PYTHONPATH"] = sdk
        environment["AETHERLESS_RING"] = nil
        let code = "import aetherless.ring as r; print(r.IMPLEMENTATION); print(r.C_RING_UNAVAILABLE)"
        guard let (status, output) = runPython3(["-c", code], environment: environment) else {
            return Result(ok: false, detail: "python3 is not on PATH")
        }
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
        guard status == .exited(0), lines.count >= 2 else {
            return Result(ok: false, detail: "python3 could not import aetherless.ring from \(sdk)")
        }
        if lines[0] == "c" { return Result(ok: true, detail: "in C (_aetherless_cring in \(sdk))") }
        return Result(ok: false, detail: "in pure Python, about 7 µs more per request: \(lines[1])")
    }

    public static func python() -> Result {
        guard let (status, output) = runPython3(["--version"], environment: HandlerLaunch.inheritedEnvironment())
        else { return Result(ok: false, detail: "python3 is not on PATH") }
        return Result(ok: status == .exited(0), detail: output.trimmingCharacters(in: " \n"))
    }

    /// Runs `python3` from PATH to its end; how it ended and all it printed on stdout, or nil if
    /// it cannot start.
    private static func runPython3(_ arguments: [String], environment: [String: String]) -> (ExitStatus, String)? {
        guard
            let process = try? ProcessSpawner.spawn(
                program: "python3", arguments: arguments, environment: environment, searchPath: true)
        else { return nil }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(process.stdout.rawValue, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            output += buffer.prefix(count)
        }
        var status: CInt = 0
        waitpid(process.pid, &status, 0)
        return (ExitStatus(waitStatus: status), String(decoding: output, as: UTF8.self))
    }
}
