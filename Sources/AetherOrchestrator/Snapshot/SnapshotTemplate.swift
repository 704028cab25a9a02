import AetherCore
import AetherIPC
import AetherSystem
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A handler started as PID 1 of its own PID namespace (`unshare --pid --fork setsid`), the
/// shape criu needs to restore one image many times at once: each copy gets a fresh namespace
/// and keeps PID 1 in it.
struct SnapshotTemplate: ~Copyable {
    /// The `unshare` process we spawned, with the handler's output pipes.
    let launcher: SpawnedProcess
    /// Host PID of the handler (PID 1 inside the namespace): what criu dumps.
    let pid: pid_t

    /// Confined (`sandbox`), the handler is the first process of its namespaces and the PID
    /// clone returned: no `unshare` in between, and `cgroups` joined before it runs.
    static func start(
        program: String, arguments: [String], environment: [String: String], searchPath: Bool,
        inheriting: [CInt] = [], sandbox: InstanceSandbox? = nil, cgroups: [String] = [],
        forkTemplate: Bool = false, timeout: Duration = .seconds(5)
    ) throws(SpawnError) -> SnapshotTemplate {
        if let sandbox {
            let process = try SandboxSpawner.spawn(
                sandbox, cgroups: cgroups, program: program, arguments: arguments, environment: environment,
                searchPath: searchPath, asInit: false, inheriting: inheriting, forkTemplate: forkTemplate)
            let pid = process.pid
            return SnapshotTemplate(launcher: process, pid: pid)
        }
        var command = ["--pid", "--fork", "setsid"]
        // setsid and unshare search PATH themselves; give them the resolved program either way.
        command += [program] + arguments
        let launcher = try ProcessSpawner.spawn(
            program: "unshare", arguments: command, environment: environment, searchPath: true,
            inheriting: inheriting)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let children = Posix.readFile("/proc/\(launcher.pid)/task/\(launcher.pid)/children") ?? ""
            if let child = children.split(separator: " ").first.flatMap({ pid_t($0) }) {
                return SnapshotTemplate(launcher: launcher, pid: child)
            }
            var status: CInt = 0
            if waitpid(launcher.pid, &status, WNOHANG) == launcher.pid {
                throw SpawnError(program: program, reason: "unshare \(ExitStatus(waitStatus: status))")
            }
            usleep(200)
        }
        kill(launcher.pid, SIGKILL)
        throw SpawnError(program: program, reason: "no process appeared in the new PID namespace within \(timeout)")
    }
}

/// Makes this process the parent of orphaned descendants (criu's detached restores).
enum ChildSubreaper {
    static func enable() throws(SpawnError) {
        do {
            try systemCall("prctl", on: "PR_SET_CHILD_SUBREAPER", failsWith: .minusOne) {
                aether_become_child_subreaper()
            }
        } catch {
            throw SpawnError(program: "prctl", reason: "PR_SET_CHILD_SUBREAPER: \(error.reason)")
        }
    }
}
