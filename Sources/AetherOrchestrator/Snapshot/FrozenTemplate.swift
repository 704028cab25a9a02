import AetherCore
import AetherIPC
import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A function's template brought to FROZEN: started as PID 1 of its own PID namespace with its
/// control connection as descriptor 3 (`AETHER_CONTROL_FD`, one end of a socketpair), imported
/// and initialised, READY, then CHECKPOINT answered with FROZEN: single-threaded, nothing
/// mapped, blocked reading its next line. criu dumps it from here (`FunctionSnapshot`), or it
/// stays alive and forks copies of itself (`ForkTemplate`).
struct FrozenTemplate: ~Copyable {
    /// Our end of its control connection: closing it ends the template.
    let control: OwnedDescriptor
    /// Host PID of the handler (PID 1 of its namespace).
    let pid: pid_t
    /// The process we started and must reap: the handler itself when confined, else the
    /// `unshare` holding its namespace.
    let launcherPID: pid_t
    /// Inodes of what it has that each restored copy gets fresh.
    let controlInode: UInt64
    let stdoutInode: UInt64
    let stderrInode: UInt64
    /// Its memory cgroup (nil: not confined to one).
    let cgroup: String?
    let memory: MemoryCgroup

    /// Starts the template and brings it to FROZEN. Blocking: call it off the event loops.
    static func start(
        function: FunctionConfig, launch: HandlerLaunch, memory: MemoryCgroup, limits: MemoryCgroup.Limits,
        sandbox: InstanceSandbox?, cgroupName: String, output: OutputCapture, forkTemplate: Bool = false
    ) throws(FunctionSnapshot.BuildFailure) -> FrozenTemplate {
        let id = function.id
        func fail(_ detail: String) -> FunctionSnapshot.BuildFailure {
            FunctionSnapshot.BuildFailure(error: .snapshotFailed(function: id, detail: detail))
        }
        let pair: DescriptorPair
        do {
            pair = try .socketPair(SOCK_STREAM, for: "the template's control connection")
        } catch {
            throw fail("socketpair: \(error.reason)")
        }
        let control = pair.ours
        let controlInode = inode(pair.theirs.rawValue)
        var environment = launch.environment(instance: -1)
        environment["AETHER_CONTROL_FD"] = "3"
        environment["AETHER_INSTANCE"] = "template"
        // Confined, a fork template forks each copy into a PID namespace of its own (the SDKs
        // do it when this says so, and fail rather than fork without it).
        if forkTemplate && sandbox != nil { environment["AETHER_COPY_PID_NAMESPACE"] = "1" }
        // Confined, the template's cgroups exist first and it joins them itself.
        var cgroups: [String] = []
        if sandbox != nil {
            switch memory.prepare(name: cgroupName, limits: limits) {
            case .success(let folders): cgroups = folders
            case .failure(let failure): throw fail("cannot enforce the template's limits: \(failure.reason)")
            }
        }
        let template: SnapshotTemplate
        do {
            template = try SnapshotTemplate.start(
                program: launch.program, arguments: launch.arguments, environment: environment,
                searchPath: launch.searchPath, inheriting: [pair.theirs.rawValue], sandbox: sandbox, cgroups: cgroups,
                forkTemplate: forkTemplate)
        } catch {
            if let cgroup = cgroups.first { memory.remove(cgroup) }
            throw FunctionSnapshot.BuildFailure(
                error: .spawnFailed(function: id, program: launch.program, reason: error.reason))
        }
        // The template has its end: with ours the only one left here, its exit is our EOF.
        pair.theirs.close()
        let (templatePID, launcherPID) = (template.pid, template.launcher.pid)
        let stdoutInode = inode(template.launcher.stdout.rawValue)
        let stderrInode = inode(template.launcher.stderr.rawValue)
        output.start(descriptor: template.launcher.stdout.take(), stream: "stdout", instance: -1)
        let stderrClosed = output.start(descriptor: template.launcher.stderr.take(), stream: "stderr", instance: -1)
        var templateCgroup = cgroups.first
        if templateCgroup == nil,
            case .success(let folder) = memory.confine(pid: templatePID, name: cgroupName, limits: limits)
        {
            templateCgroup = folder
        }
        let frozen = FrozenTemplate(
            control: control, pid: templatePID, launcherPID: launcherPID, controlInode: controlInode,
            stdoutInode: stdoutInode, stderrInode: stderrInode, cgroup: templateCgroup, memory: memory)
        let timeout = function.startupTimeout.duration
        do {
            let ready = try ControlLine.read(frozen.control.rawValue, timeout: timeout)
            guard ready == "READY" else { throw fail("the template sent \(ready.debugDescription) instead of READY") }
            try ControlLine.write(frozen.control.rawValue, "CHECKPOINT\n")
            let answer = try ControlLine.read(frozen.control.rawValue, timeout: timeout)
            guard answer == "FROZEN" else {
                throw fail(
                    answer.hasPrefix("ERROR ")
                        ? "the template cannot be snapshotted: \(answer.dropFirst(6))"
                        : "the template answered CHECKPOINT with \(answer.debugDescription): its handler runtime does not support snapshots"
                )
            }
        } catch let failure as FunctionSnapshot.BuildFailure {
            frozen.stop()
            throw failure
        } catch {
            frozen.stop()
            // Its last words are in the pipe until the capture has read them all.
            _ = try? stderrClosed.wait()
            let lastLines = output.logs.tail(200).filter { $0.instance == -1 && $0.stream == "stderr" }.suffix(10)
                .map(\.text)
            throw fail(
                "\(error)" + (lastLines.isEmpty ? "" : "; its last output:\n" + lastLines.joined(separator: "\n")))
        }
        return frozen
    }

    /// Kills the template (its whole PID namespace goes with it), reaps what we started and
    /// removes its cgroup.
    consuming func stop() {
        kill(-pid, SIGKILL)
        kill(launcherPID, SIGKILL)
        var status: CInt = 0
        waitpid(launcherPID, &status, 0)
        if let cgroup { memory.remove(cgroup) }
    }

    static func inode(_ fd: CInt) -> UInt64 {
        var status = stat()
        fstat(fd, &status)
        return UInt64(status.st_ino)
    }
}
