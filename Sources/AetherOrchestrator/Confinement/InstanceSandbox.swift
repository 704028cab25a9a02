import AetherCore
import AetherSystem
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How the instances of one function generation are confined (SECURITY.md): the function's
/// identity, its file system view and its namespaces. `aether-sandbox` (Sources/aether-sandbox)
/// applies it between clone and exec; this type says what to ask of it, and what criu must be
/// told to dump and restore such an instance.
///
/// The view: the host's root file system alone, read-only (not its other mounts: no /proc,
/// /sys, /dev, /run or /dev/shm of the host); a /proc of the instance's own PID namespace; a
/// private /tmp and /dev/shm (one tmpfs of `tmpBytes`, whose pages count against the memory
/// limit too); a read-only /dev with null, zero, full, random and urandom; an empty read-only
/// /run; `binds` (the handler's folder, the SDK's) read-only at their own paths; the function's
/// secrets read-only at /run/secrets; and `covers`: host folders the identity cannot enter
/// above a bind (a checkout under /root), each replaced by an empty read-only folder holding only
/// the mount points of the binds below it.
struct InstanceSandbox: Sendable {
    let helper: String
    let identity: FunctionIdentity
    /// An empty folder each instance (and each restore slot) mounts its private staging tmpfs on,
    /// in its own mount namespace: the host only ever sees it empty.
    let staging: String
    let tmpBytes: Int
    let binds: [String]
    /// Folders above binds the identity cannot enter (`aether-sandbox --cover`).
    let covers: [String]
    /// The folder whose files appear as /run/secrets/NAME (nil: no secrets).
    let secrets: String?
    /// `network: none`: a network namespace of its own with only loopback.
    let networkNone: Bool
    let workingDirectory: String

    /// The namespaces each instance is the first process of.
    var namespaces: CInt {
        var flags = CInt(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC)
        if networkNone { flags |= CInt(CLONE_NEWNET) }
        return flags
    }

    /// `aether-sandbox run ...`: confines and execs `program`. `asInit`: the helper stays as the
    /// namespace's PID 1 and the program runs as its child (process handlers, whose SIGTERM must
    /// not be ignored the way PID 1's is). `forkTemplate`: a `snapshot: fork` template, in a user
    /// namespace of its own with CAP_SYS_ADMIN there, so each copy gets a PID namespace of its own.
    func runArguments(
        cgroups: [String], program: String, arguments: [String], searchPath: Bool, asInit: Bool,
        forkTemplate: Bool = false
    ) -> [String] {
        var command = ["run"] + commonOptions(cgroups: cgroups)
        command += ["--uid", String(identity.uid), "--gid", String(identity.gid), "--cwd", workingDirectory]
        if networkNone { command.append("--network-none") }
        if asInit { command.append("--init") }
        if forkTemplate { command.append("--fork-template") }
        if searchPath { command.append("--search-path") }
        return command + ["--"] + [program] + arguments
    }

    /// `aether-sandbox restore-slot ... -- criu swrk FD`: criu in a mount namespace holding the
    /// pieces of a fresh view for the copy it will restore (`restoreRoot`, `restoreExternals`).
    func restoreSlotArguments(criu: String, arguments: [String]) -> [String] {
        ["restore-slot"] + commonOptions(cgroups: []) + ["--", criu] + arguments
    }

    private func commonOptions(cgroups: [String]) -> [String] {
        var options = ["--staging", staging, "--tmp-size", String(tmpBytes)]
        for cgroup in cgroups { options += ["--cgroup", cgroup] }
        for bind in binds {
            let source = Self.realPath(bind)
            options += source == bind ? ["--bind", bind] : ["--bind-as", source, bind]
        }
        if let secrets { options += ["--secrets", secrets] }
        for cover in covers { options += ["--cover", cover] }
        return options
    }

    // MARK: criu

    /// The view's mounts, each with the key criu's `--external mnt[...]` knows it by: none of
    /// them is dumped (a tmpfs would be, with tar, costing a restore tens of ms); each restored
    /// copy gets its own, from its restore slot's staging tmpfs and the host.
    private var pieces: [(mountPoint: String, key: String, restoredFrom: String)] {
        var pieces = [
            ("/dev", "aether-dev", staging + "/dev"),
            ("/dev/shm", "aether-shm", staging + "/shm"),
            ("/tmp", "aether-tmp", staging + "/tmp"),
            ("/run", "aether-run", staging + "/run"),
        ]
        if let secrets { pieces.append(("/run/secrets", "aether-secrets", secrets)) }
        for (index, cover) in covers.enumerated() {
            pieces.append((cover, "aether-cover-\(index)", staging + "/cover-\(index)"))
        }
        // A bind shows its path's real folder (criu binds the copy's from there too).
        for (index, bind) in binds.enumerated() {
            pieces.append((bind, "aether-bind-\(index)", Self.realPath(bind)))
        }
        return pieces
    }

    /// The folders a sandbox for `identity` must cover so that every bind is reachable: for each
    /// bind outside the view's own pieces (/tmp, /run, /dev/shm), the first folder above it the
    /// identity cannot enter; none inside another.
    static func covers(for binds: [String], identity: FunctionIdentity) -> [String] {
        let closed = Set(binds.filter { !isInOwnPiece($0) }.compactMap { identity.firstClosedFolder(above: $0) })
        return closed.filter { cover in !closed.contains { cover.hasPrefix($0 + "/") } }.sorted()
    }

    /// Whether the view itself makes the folders above `bind` (0755, its own): below /tmp, /run,
    /// /dev/shm or one of `covers`.
    static func viewMakesFolders(above bind: String, covers: [String] = []) -> Bool {
        isInOwnPiece(bind) || covers.contains { bind.hasPrefix($0 + "/") }
    }

    private static func isInOwnPiece(_ path: String) -> Bool {
        ["/tmp", "/run", "/dev/shm"].contains { path.hasPrefix($0 + "/") }
    }

    /// `path` with every symbolic link resolved (itself if it cannot be).
    static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// `criu dump --external` values.
    var dumpExternals: [String] { pieces.map { "mnt[\($0.mountPoint)]:\($0.key)" } }

    /// `criu restore --external` values, inside a restore slot's mount namespace.
    var restoreExternals: [String] { pieces.map { "mnt[\($0.key)]:\($0.restoredFrom)" } }

    /// `criu restore --root`: the slot's read-only bind of the host's root file system.
    var restoreRoot: String { staging + "/root" }

    // MARK: Finding the helper

    static let helperName = "aether-sandbox"

    /// `$AETHER_SANDBOX`, else `aether-sandbox` next to the running binary.
    static func locateHelper() throws(ConfinementError) -> String {
        var path: String
        if let value = getenv("AETHER_SANDBOX") {
            path = String(cString: value)
        } else {
            guard let executable = realpath("/proc/self/exe", nil) else {
                throw .helperMissing(path: helperName)
            }
            defer { free(executable) }
            let own = String(cString: executable)
            path = String(own[..<(own.lastIndex(of: "/") ?? own.startIndex)]) + "/" + helperName
        }
        guard access(path, X_OK) == 0 else { throw .helperMissing(path: path) }
        return path
    }
}

/// What `confinement: true` needs of the host, found once at `aether up`: the helper, the
/// folder instances stage their views on, and the table of function identities.
struct SandboxHost: Sendable {
    let helper: String
    let staging: String
    let identities: IdentityTable

    /// The sandbox of `config`'s instances. `binds`: what its handler needs from the host.
    func sandbox(
        for config: FunctionConfig, binds: [String], covers: [String], secrets: String?
    ) throws(ConfinementError)
        -> InstanceSandbox
    {
        var directory = [CChar](repeating: 0, count: 4096)
        let workingDirectory =
            getcwd(&directory, directory.count) != nil
            ? String(decoding: directory.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "/"
        // Each path once, a folder before anything inside it (a bind made later would hide it).
        let ordered = Set(binds).sorted { ($0.count, $0) < ($1.count, $1) }
        return InstanceSandbox(
            helper: helper, identity: try identities.identity(for: config), staging: staging,
            tmpBytes: config.memoryLimit.bytes, binds: ordered, covers: covers, secrets: secrets,
            networkNone: config.network == .loopback, workingDirectory: workingDirectory)
    }
}
