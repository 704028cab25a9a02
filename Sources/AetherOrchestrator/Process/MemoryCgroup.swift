import AetherCore
import AetherIPC
import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Enforces `memory_limit_mb`: every instance runs in its own memory cgroup, created under the
/// orchestrator's own cgroup (`<own>/aetherless-<pid>/<function>-<instance>`), so the limit
/// covers the handler and everything it forks, and a handler over it is killed by the kernel's
/// OOM killer (reported as such, answered with 502, replaced).
///
/// Works with the cgroup v1 memory controller and with cgroup v2 where the memory controller is
/// enabled for our cgroup. A host with neither cannot enforce limits: `aether up` fails with
/// `HandlerError.spawnFailed` naming the reason rather than running without them.
final class MemoryCgroup: Sendable {
    enum Version: Sendable {
        case v1, v2
    }

    let root: String
    let version: Version

    private init(root: String, version: Version) {
        self.root = root
        self.version = version
    }

    /// Finds the memory controller of our own cgroup and makes `aetherless-<pid>` under it.
    static func create() -> Result<MemoryCgroup, CgroupFailure> {
        guard let table = Posix.readFile("/proc/self/cgroup") else {
            return .failure(CgroupFailure(reason: "cannot read /proc/self/cgroup"))
        }
        var base: (String, Version)?
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if fields[1].split(separator: ",").contains("memory") {
                base = ("/sys/fs/cgroup/memory" + fields[2], .v1)
                break
            }
            if fields[0] == "0" && fields[1].isEmpty {
                for mount in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    let folder = mount + fields[2]
                    if Posix.readFile(folder + "/cgroup.controllers")?.split(separator: " ").contains(where: {
                        $0.hasPrefix("memory")
                    }) == true {
                        base = (folder, .v2)
                    }
                }
            }
        }
        guard let (folder, version) = base else {
            return .failure(
                CgroupFailure(
                    reason: "no cgroup memory controller is available to this process (see /proc/self/cgroup)"))
        }
        removeStale(in: folder)
        let root = folder + "/aetherless-\(getpid())"
        if let failure = makeFolder(root) { return .failure(failure) }
        if version == .v2 {
            // Children of our cgroup need the controller delegated to them.
            _ = writeFile(root + "/cgroup.subtree_control", "+memory")
        }
        return .success(MemoryCgroup(root: root, version: version))
    }

    /// Kills what is left in the cgroups of orchestrators that died without stopping their
    /// handlers (`kill -9`), and removes those cgroups. A process handler, which does not watch
    /// its AETHER_SOCKET, would otherwise keep its port.
    private static func removeStale(in folder: String) {
        let stale = (Posix.entries(of: folder) ?? []).compactMap { entry -> String? in
            guard entry.name.hasPrefix("aetherless-"), let owner = pid_t(entry.name.dropFirst("aetherless-".count)),
                kill(owner, 0) != 0, errno == ESRCH
            else { return nil }
            return folder + "/" + entry.name
        }
        for root in stale {
            let children = (Posix.entries(of: root) ?? []).filter(\.isDirectory).map { root + "/" + $0.name }
            for child in children { killAll(in: child) }
            rmdir(root)
        }
    }

    /// SIGKILLs every process left in a cgroup (what an instance forked and left behind) until
    /// it is empty, for at most a second, then removes it.
    private static func killAll(in folder: String) {
        for attempt in 0..<50 {
            let pids = (Posix.readFile(folder + "/cgroup.procs") ?? "").split(separator: "\n").compactMap { pid_t($0) }
            if pids.isEmpty || attempt == 49 { break }
            pids.forEach { kill($0, SIGKILL) }
            usleep(20_000)
        }
        rmdir(folder)
    }

    /// Puts `pid` into a new cgroup limited to `limit`; returns its path.
    func confine(pid: pid_t, name: String, limit: MemoryLimit) -> Result<String, CgroupFailure> {
        let folder = root + "/" + name
        if let failure = Self.makeFolder(folder) { return .failure(failure) }
        let bytes = String(limit.bytes)
        switch version {
        case .v1:
            _ = writeFile(folder + "/memory.move_charge_at_immigrate", "3")
            guard writeFile(folder + "/memory.limit_in_bytes", bytes) else {
                return .failure(CgroupFailure(reason: "cannot set \(folder)/memory.limit_in_bytes"))
            }
            // Without swap accounting this file does not exist; with it, swap counts too.
            _ = writeFile(folder + "/memory.memsw.limit_in_bytes", bytes)
        case .v2:
            guard writeFile(folder + "/memory.max", bytes) else {
                return .failure(CgroupFailure(reason: "cannot set \(folder)/memory.max"))
            }
            _ = writeFile(folder + "/memory.swap.max", "0")
        }
        guard writeFile(folder + "/cgroup.procs", String(pid)) else {
            return .failure(CgroupFailure(reason: "cannot move pid \(pid) into \(folder)"))
        }
        return .success(folder)
    }

    /// Bytes in use by the cgroup now.
    func usage(of folder: String) -> Int? {
        let file = version == .v1 ? "/memory.usage_in_bytes" : "/memory.current"
        return Posix.readFile(folder + file).flatMap { Int($0.trimmingCharacters(in: " \n")) }
    }

    /// Whether the kernel's OOM killer acted in the cgroup.
    func wasOutOfMemory(_ folder: String) -> Bool {
        switch version {
        case .v1:
            // oom_control's "oom_kill N" counts kills; failcnt alone also counts reclaim.
            let control = Posix.readFile(folder + "/memory.oom_control") ?? ""
            return control.split(separator: "\n").contains { line in
                line.hasPrefix("oom_kill ") && line.split(separator: " ").last.flatMap { Int($0) } ?? 0 > 0
            }
        case .v2:
            let events = Posix.readFile(folder + "/memory.events") ?? ""
            return events.split(separator: "\n").contains { line in
                line.hasPrefix("oom_kill ") && line.split(separator: " ").last.flatMap { Int($0) } ?? 0 > 0
            }
        }
    }

    /// Removes an instance's cgroup once its process has ended. Anything it forked that is still
    /// there (a daemonised child, a worker the crash left) is killed first: an instance takes
    /// everything it started with it. Off the caller's thread when that takes a while.
    func remove(_ folder: String) {
        if rmdir(folder) == 0 || errno == ENOENT { return }
        BackgroundThread.start(name: "cgroup-kill") { Self.killAll(in: folder) }
    }

    func removeRoot() {
        rmdir(root)
    }

    // MARK: Files

    /// Makes a cgroup folder (one that exists will do); why not, if it cannot.
    private static func makeFolder(_ path: String) -> CgroupFailure? {
        do {
            try systemCall("mkdir", on: path, failsWith: .minusOne) { mkdir(path, 0o755) }
        } catch {
            guard error.errno == EEXIST else { return CgroupFailure(reason: "mkdir \(path): \(error.reason)") }
        }
        return nil
    }

    @discardableResult
    private func writeFile(_ path: String, _ text: String) -> Bool { Self.writeFile(path, text) }

    @discardableResult
    private static func writeFile(_ path: String, _ text: String) -> Bool {
        guard let file = try? OwnedDescriptor.open(path, O_WRONLY | O_CLOEXEC) else { return false }
        let bytes = Array(text.utf8)
        let written = try? systemCall("write", on: path, failsWith: .minusOne) {
            bytes.withUnsafeBytes { write(file.rawValue, $0.baseAddress, $0.count) }
        }
        return written == bytes.count
    }
}

struct CgroupFailure: Error, Sendable {
    let reason: String
}
