import AetherSystem
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Starts confined processes: `aether-sandbox run` as the first process of new PID, mount and
/// IPC namespaces (clone(2); posix_spawn cannot make namespaces), in a session of its own, with
/// stdout and stderr into pipes and `inheriting` as descriptors 3, 4, ... The PID returned is
/// the handler's (the helper execs it, or, as init, is its parent in the same process group).
enum SandboxSpawner {
    static func spawn(
        _ sandbox: InstanceSandbox, cgroups: [String], program: String, arguments: [String],
        environment: [String: String], searchPath: Bool, asInit: Bool, inheriting: [CInt] = [],
        forkTemplate: Bool = false
    ) throws(SpawnError) -> SpawnedProcess {
        let stdout = try DescriptorPair.outputPipe("stdout", of: program)
        let stderr = try DescriptorPair.outputPipe("stderr", of: program)
        let helperArguments = sandbox.runArguments(
            cgroups: cgroups, program: program, arguments: arguments, searchPath: searchPath, asInit: asInit,
            forkTemplate: forkTemplate)
        // Descriptor 0 is a placeholder: the helper opens the view's own /dev/null there.
        let descriptors = [stdout.theirs.rawValue, stdout.theirs.rawValue, stderr.theirs.rawValue] + inheriting
        let argv = ([sandbox.helper] + helperArguments).map { strdup($0) } + [nil]
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let pid: pid_t
        do {
            pid = try systemCall("clone", on: program, failsWith: .minusOne) {
                aether_spawn_in_namespaces(
                    sandbox.helper, argv, envp, descriptors, CInt(descriptors.count), sandbox.namespaces)
            }
        } catch {
            throw SpawnError(program: program, failure: error)
        }
        return SpawnedProcess(pid: pid, stdout: stdout.ours, stderr: stderr.ours)
    }
}
