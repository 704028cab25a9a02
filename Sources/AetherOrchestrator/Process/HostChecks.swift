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

    public static func python() -> Result {
        let launch = HandlerLaunch.inheritedEnvironment()
        guard
            let process = try? ProcessSpawner.spawn(
                program: "python3", arguments: ["--version"], environment: launch, searchPath: true)
        else { return Result(ok: false, detail: "python3 is not on PATH") }
        var status: CInt = 0
        waitpid(process.pid, &status, 0)
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { read(process.stdout.rawValue, $0.baseAddress, $0.count) }
        let text = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(in: " \n")
        return Result(ok: ExitStatus(waitStatus: status) == .exited(0), detail: text)
    }
}
