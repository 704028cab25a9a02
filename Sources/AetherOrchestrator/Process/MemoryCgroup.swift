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
    /// Where the same instance names get their pids and cpu cgroups (`max_pids`, `cpu_limit`):
    /// the v1 pids and cpu hierarchies' `aetherless-<pid>` folders, or `root` itself where the
    /// v2 controllers are enabled next to memory; nil without the controller.
    let pidsRoot: String?
    let cpuRoot: String?

    private init(root: String, version: Version, pidsRoot: String?, cpuRoot: String?) {
        self.root = root
        self.version = version
        self.pidsRoot = pidsRoot
        self.cpuRoot = cpuRoot
    }

    /// The limits of one instance's cgroups.
    struct Limits: Sendable {
        let memory: MemoryLimit
        /// `max_pids` (nil: none set).
        let pids: Int?
        /// `cpu_limit` (nil: unlimited).
        let cpu: CPULimit?

        init(memory: MemoryLimit, pids: Int? = nil, cpu: CPULimit? = nil) {
            self.memory = memory
            self.pids = pids
            self.cpu = cpu
        }
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
        var pidsRoot: String?
        var cpuRoot: String?
        switch version {
        case .v1:
            // Their own hierarchies, each holding our process somewhere (/proc/self/cgroup).
            for line in table.split(separator: "\n") {
                let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                guard fields.count == 3 else { continue }
                let controllers = fields[1].split(separator: ",")
                for (controller, mount) in [("pids", "pids"), ("cpu", "cpu")]
                where controllers.contains(Substring(controller)) {
                    let base = "/sys/fs/cgroup/" + mount + (fields[2] == "/" ? "" : String(fields[2]))
                    guard access(base, W_OK) == 0 else { continue }
                    removeStale(in: base)
                    let folder = base + "/aetherless-\(getpid())"
                    guard makeFolder(folder) == nil else { continue }
                    if controller == "pids" { pidsRoot = folder } else { cpuRoot = folder }
                }
            }
        case .v2:
            // Children of our cgroup need the controllers delegated to them.
            _ = writeFile(root + "/cgroup.subtree_control", "+memory")
            if writeFile(root + "/cgroup.subtree_control", "+pids") { pidsRoot = root }
            if writeFile(root + "/cgroup.subtree_control", "+cpu") { cpuRoot = root }
        }
        return .success(MemoryCgroup(root: root, version: version, pidsRoot: pidsRoot, cpuRoot: cpuRoot))
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

    /// Puts `pid` into new cgroups with `limits`; returns the memory cgroup's path (which
    /// names the instance's cgroups: `remove` takes it).
    func confine(pid: pid_t, name: String, limits: Limits) -> Result<String, CgroupFailure> {
        let folders: [String]
        switch prepare(name: name, limits: limits) {
        case .success(let made): folders = made
        case .failure(let failure): return .failure(failure)
        }
        for folder in folders {
            guard writeFile(folder + "/cgroup.procs", String(pid)) else {
                return .failure(CgroupFailure(reason: "cannot move pid \(pid) into \(folder)"))
            }
        }
        return .success(folders[0])
    }

    /// An instance's cgroups, made and limited before its process exists (the sandbox helper
    /// joins them before anything of the handler runs): the memory one first, then the pids and
    /// cpu ones its limits need. A limit that cannot be set is a failure, never a silent skip.
    func prepare(name: String, limits: Limits) -> Result<[String], CgroupFailure> {
        let memoryFolder: String
        switch limitMemory(name: name, limit: limits.memory) {
        case .success(let folder): memoryFolder = folder
        case .failure(let failure): return .failure(failure)
        }
        var folders = [memoryFolder]
        if let pids = limits.pids {
            guard let pidsRoot else {
                return .failure(
                    CgroupFailure(reason: "max_pids needs the cgroup pids controller, which is not available"))
            }
            let folder = pidsRoot + "/" + name
            if folder != memoryFolder {
                if let failure = Self.makeFolder(folder) { return .failure(failure) }
                folders.append(folder)
            }
            guard writeFile(folder + "/pids.max", String(pids)) else {
                return .failure(CgroupFailure(reason: "cannot set \(folder)/pids.max"))
            }
        }
        if let cpu = limits.cpu {
            guard let cpuRoot else {
                return .failure(
                    CgroupFailure(reason: "cpu_limit needs the cgroup cpu controller, which is not available"))
            }
            let folder = cpuRoot + "/" + name
            if folder != memoryFolder {
                if let failure = Self.makeFolder(folder) { return .failure(failure) }
                folders.append(folder)
            }
            let (quota, period) = cpu.cpuMax
            let written =
                version == .v2 && folder == memoryFolder
                ? writeFile(folder + "/cpu.max", "\(quota) \(period)")
                : writeFile(folder + "/cpu.cfs_period_us", String(period))
                    && writeFile(folder + "/cpu.cfs_quota_us", String(quota))
            guard written else { return .failure(CgroupFailure(reason: "cannot set the CPU quota of \(folder)")) }
        }
        return .success(folders)
    }

    private func limitMemory(name: String, limit: MemoryLimit) -> Result<String, CgroupFailure> {
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
        let name = String(folder[folder.index(after: folder.lastIndex(of: "/") ?? folder.startIndex)...])
        let others = [pidsRoot, cpuRoot].compactMap { $0 }.filter { $0 != root }.map { $0 + "/" + name }
        if rmdir(folder) == 0 || errno == ENOENT {
            for other in others { rmdir(other) }
            return
        }
        BackgroundThread.start(name: "cgroup-kill") {
            Self.killAll(in: folder)
            for other in others { Self.killAll(in: other) }
        }
    }

    func removeRoot() {
        for folder in Set([root, pidsRoot, cpuRoot].compactMap { $0 }) { rmdir(folder) }
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
