import AetherCore
import AetherIPC
import AetherSystem
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The CRIU command line (scripts/install-criu.sh installs it in a private root): version,
/// check, the kernel-probe cache, and checkpointing an initialised handler. Restores go through
/// `criu swrk` (`RestoreSlot`), started ahead of need.
///
/// Facts this relies on (../shared/notes/criu.md): a template started as PID 1 of its own PID
/// namespace can be restored many times at once; its connection to the orchestrator is
/// dumped as external and replaced at restore by a fresh socket (inherit-fd), as are its
/// stdout and stderr pipes. Errors carry criu's own log lines.
public struct Criu: Sendable {
    public static let defaultPath = "/opt/aetherless/criu/bin/criu"
    public let path: String

    public init(path: String = Criu.defaultPath) { self.path = path }

    /// `criu --version`'s version line.
    public func version() throws(CriuError) -> String {
        let result = try run(["--version"], timeout: .seconds(10))
        guard result.status == .exited(0),
            let line = result.output.split(separator: "\n").first(where: {
                $0.hasPrefix("Version:")
            })
        else {
            throw .notInstalled(path: path)
        }
        return String(line.dropFirst("Version:".count)).trimmingCharacters(in: " ")
    }

    /// `criu check`: nil when the kernel and installation are fit, else criu's complaint.
    public func check() throws(CriuError) -> String? {
        let result = try run(["check"], timeout: .seconds(30))
        if result.status == .exited(0) { return nil }
        return result.output.isEmpty ? "criu check \(result.status)" : result.output
    }

    /// Checkpoints the process tree rooted at `pid` into `directory` (which must exist) and
    /// stops it. `externalUnixSockets` are inodes of sockets connected to peers outside the tree.
    /// - Parameters:
    ///   - externalMounts: `--external mnt[...]` values: mounts of a confined template that each
    ///     restored copy gets fresh (InstanceSandbox).
    ///   - realUser: a confined template's identity, with the sandbox helper that runs criu
    ///     under it as its real uid/gid: criu reads the target's rlimits with prlimit(2), which
    ///     without CAP_SYS_RESOURCE needs the caller's real ids to be the target's.
    func dump(
        pid: Int32, into directory: String, externalUnixSockets: [UInt64] = [], externalMounts: [String] = [],
        realUser: (helper: String, identity: FunctionIdentity)? = nil
    ) throws(CriuError)
        -> Duration
    {
        var arguments = ["dump", "-t", String(pid), "-D", directory, "-o", "dump.log"]
        for inode in externalUnixSockets { arguments += ["--external", "unix[\(inode)]"] }
        for mount in externalMounts { arguments += ["--external", mount] }
        let started = ContinuousClock.now
        let result = try run(arguments, timeout: .seconds(60), realUser: realUser)
        guard result.status == .exited(0) else {
            var log = Self.logTail(directory + "/dump.log", fallback: result.output)
            // On a full file system criu cannot even write its log: say so, or the cause is lost.
            if let full = Self.spaceShortage(in: directory) { log += " (\(full))" }
            throw .dumpFailed(pid: pid, log: log)
        }
        return ContinuousClock.now - started
    }

    /// "No space left on device ..." when the file system holding `directory` has less than
    /// 1 MiB free for us (an image takes far more); nil otherwise or if it cannot be asked.
    static func spaceShortage(in directory: String) -> String? {
        var fs = statvfs()
        guard statvfs(directory, &fs) == 0 else { return nil }
        let free = UInt64(fs.f_bavail) * UInt64(fs.f_frsize)
        guard free < 1 << 20 else { return nil }
        return "No space left on device: \(free) bytes free on the file system of \(directory)"
    }

    /// criu probes the kernel on every call (about 30 ms) unless it finds its cache,
    /// /run/criu.kdat, which it only writes when /run is a tmpfs; here /run is not. So: run
    /// `criu check` once in a private mount namespace with a tmpfs on /run and install the cache
    /// it wrote. Redone at every `aether up`, so it always matches the running kernel.
    /// criu stops each restored copy on a hardware breakpoint, a per-task perf event. The kernel
    /// turns its perf context-switch hooks on for the first such event, waiting for an RCU grace
    /// period (`synchronize_rcu` in `account_event`: 8-25 ms on this project's VMs), and off
    /// again about a second after the last one closes, so every restore after a second of quiet
    /// paid that wait. One idle per-task event of our own (a disabled software dummy that counts
    /// nothing) keeps the hooks on for the orchestrator's life. They cost every context switch
    /// on the host 0-0.8 µs on this VM (BENCHMARKS.md), against ~15 ms per restore after idle.
    /// Returns why it could not, or nil.
    static func keepPerfSchedulingHooksOn() -> String? {
        do {
            // Never closed (the event must live as long as the orchestrator): a plain number.
            try systemCall("perf_event_open", on: "an idle task event", failsWith: .minusOne) {
                aether_open_idle_perf_task_event()
            }
            return nil
        } catch {
            return "perf_event_open failed (\(error.reason))"
        }
    }

    public func primeKernelCache() throws(CriuError) {
        guard access(path, X_OK) == 0 else { throw .notInstalled(path: path) }
        let staging = "/dev/shm/aetherless-criu-kdat-\(getpid())"
        defer { unlink(staging) }
        let script = "mount -t tmpfs tmpfs /run && \"$0\" check >/dev/null 2>&1 && cp /run/criu.kdat \"$1\""
        let pid: pid_t
        do {
            pid = try ProcessSpawner.spawnDiscardingOutput(
                program: "unshare", arguments: ["-m", "--propagation", "private", "sh", "-c", script, path, staging],
                environment: HandlerLaunch.inheritedEnvironment(), searchPath: true)
        } catch {
            throw .checkFailed(output: "cannot run `\(path) check` in a private mount namespace: \(error.reason)")
        }
        var status: CInt = 0
        _ = try? systemCall("waitpid", on: "pid \(pid)", failsWith: .minusOne) { waitpid(pid, &status, 0) }
        guard ExitStatus(waitStatus: status) == .exited(0), let cache = Posix.readBytes(staging), !cache.isEmpty
        else {
            throw .checkFailed(output: "`\(path) check` in a private mount namespace \(ExitStatus(waitStatus: status))")
        }
        // Write-then-rename, so a concurrent criu never reads half a cache.
        let target = "/run/criu.kdat"
        let temporary = target + ".aether-\(getpid())"
        let file: OwnedDescriptor
        do {
            file = try .open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o600)
        } catch {
            throw .checkFailed(output: "cannot write \(temporary): \(error.reason)")
        }
        do {
            let fd = file.rawValue
            var offset = 0
            while offset < cache.count {
                let written = try systemCall("write", on: temporary, failsWith: .minusOne) {
                    cache[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                }
                // write(2) to a file takes at least a byte or fails (ENOSPC, EIO), so this ends.
                offset += written
            }
            file.close()
            try systemCall("rename", on: temporary, failsWith: .minusOne) { rename(temporary, target) }
        } catch {
            unlink(temporary)
            throw .checkFailed(output: "cannot install \(target): \(error.reason)")
        }
    }

    // MARK: Running criu

    struct RunResult {
        var status: ExitStatus
        var output: String
        var timedOut: Bool
    }

    /// Runs criu with stdout and stderr captured (little: its log goes to `-o` files, and both
    /// pipes are read after it exits, so more than a pipe's 64 KiB would stall it until the timeout).
    func run(
        _ arguments: [String], timeout: Duration, realUser: (helper: String, identity: FunctionIdentity)? = nil
    ) throws(CriuError) -> RunResult {
        guard access(path, X_OK) == 0 else { throw .notInstalled(path: path) }
        var program = path
        var arguments = arguments
        if let realUser {
            // A script (the installed wrapper) runs under `sh -p`, which keeps the effective
            // uid 0 that dash would otherwise drop when the real uid differs.
            let command = isScript(path) ? ["/bin/sh", "-p", path] : [path]
            program = realUser.helper
            arguments =
                ["real-uid", String(realUser.identity.uid), String(realUser.identity.gid), "--"] + command + arguments
        }
        let process: SpawnedProcess
        do {
            process = try ProcessSpawner.spawn(
                program: program, arguments: arguments, environment: HandlerLaunch.inheritedEnvironment(),
                searchPath: false)
        } catch {
            throw .notInstalled(path: "\(path) (\(error.reason))")
        }
        let deadline = ContinuousClock.now + timeout
        var status: CInt = 0
        var timedOut = false
        while true {
            let reaped = waitpid(process.pid, &status, WNOHANG)
            if reaped == process.pid { break }
            if reaped < 0 && errno != EINTR { break }
            if ContinuousClock.now > deadline && !timedOut {
                timedOut = true
                kill(process.pid, SIGKILL)
            }
            usleep(100)
        }
        let output = [Self.drain(process.stdout), Self.drain(process.stderr)].filter { !$0.isEmpty }.joined(
            separator: "\n")
        return RunResult(status: ExitStatus(waitStatus: status), output: output, timedOut: timedOut)
    }

    private func isScript(_ path: String) -> Bool {
        guard let file = try? OwnedDescriptor.open(path, O_RDONLY | O_CLOEXEC) else { return false }
        var start: (UInt8, UInt8) = (0, 0)
        let read = withUnsafeMutableBytes(of: &start) { Glibc.read(file.rawValue, $0.baseAddress, 2) }
        return read == 2 && start == (UInt8(ascii: "#"), UInt8(ascii: "!"))
    }

    /// What is in the pipe now, up to 64 KiB; closes it.
    private static func drain(_ pipe: consuming OwnedDescriptor) -> String {
        _ = fcntl(pipe.rawValue, F_SETFL, O_NONBLOCK)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 65536 {
            let n = try? systemCall("read", on: "criu's output", failsWith: .minusOne) {
                chunk.withUnsafeMutableBytes { read(pipe.rawValue, $0.baseAddress, $0.count) }
            }
            guard let n, n > 0 else { break }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: " \n")
    }

    /// The error lines of a criu log (or its last lines), for error messages.
    static func logTail(_ path: String, fallback: String) -> String {
        guard let text = Posix.readFile(path), !text.isEmpty else {
            return fallback.isEmpty ? "(no criu log at \(path))" : fallback
        }
        let lines = text.split(separator: "\n")
        let errors = lines.filter { $0.contains("Error") || $0.contains("error") }
        let chosen = errors.isEmpty ? Array(lines.suffix(5)) : Array(errors.suffix(5))
        return chosen.joined(separator: "\n")
    }
}
