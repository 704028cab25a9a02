import AetherCore
import AetherSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The unprivileged user and group a function's processes run as (templates, spawned, restored
/// and forked copies alike: criu restores the ids it dumped).
public struct FunctionIdentity: Sendable, Equatable, CustomStringConvertible {
    public let uid: UInt32
    public let gid: UInt32

    public var description: String { "uid \(uid) gid \(gid)" }

    /// Why this identity cannot read `path` (every folder on the way searchable, the file itself
    /// readable, by the permission bits), or nil if it can. `from`: the folder the walk starts
    /// at (a sandbox replaces what is above its binds under /tmp and /run with its own folders).
    func whyCannotRead(_ path: String, from start: String = "/") -> String? {
        var folder = start == "/" ? "" : start
        let rest = path.dropFirst(folder.count).split(separator: "/")
        var checks: [(String, mode_t)] = []
        if !folder.isEmpty { checks.append((folder, 0o1)) }
        for (index, component) in rest.enumerated() {
            folder += "/" + component
            checks.append((folder, index == rest.count - 1 ? 0o4 : 0o1))
        }
        for (path, want) in checks {
            var status = stat()
            guard stat(path, &status) == 0 else { return "\(path) does not exist" }
            let isDirectory = (status.st_mode & S_IFMT) == S_IFDIR
            // A folder to read is listed and entered: read and search.
            let wanted: mode_t = isDirectory && want == 0o4 ? 0o5 : want
            let bits: mode_t =
                status.st_uid == uid
                ? (status.st_mode >> 6) & 0o7
                : status.st_gid == gid ? (status.st_mode >> 3) & 0o7 : status.st_mode & 0o7
            if bits & wanted != wanted {
                let kind = isDirectory ? "folder" : "file"
                return
                    "the \(kind) \(path) has mode \(String(status.st_mode & 0o7777, radix: 8)), owner \(status.st_uid):\(status.st_gid)"
            }
        }
        return nil
    }

    /// The first folder above `path` (not `path` itself, not `/`) this identity cannot enter, by
    /// the permission bits: a sandbox covers it (`--cover`) so binds below it are reachable.
    func firstClosedFolder(above path: String) -> String? {
        var folder = ""
        for component in path.split(separator: "/").dropLast() {
            folder += "/" + component
            var status = stat()
            guard stat(folder, &status) == 0 else { return nil }
            let bits: mode_t =
                status.st_uid == uid
                ? (status.st_mode >> 6) & 0o7
                : status.st_gid == gid ? (status.st_mode >> 3) & 0o7 : status.st_mode & 0o7
            if bits & 0o1 == 0 { return folder }
        }
        return nil
    }
}

/// Gives each function its identity, like systemd's DynamicUser: the `user:` its configuration
/// names, or an id of `uid_range` of its own (uid = gid) that no user or group of the host has
/// and no other function holds. Allocations are kept in `<state_dir>/identities` ("ID UID"
/// lines), so a function keeps its id across restarts and `aether restart`'s successor gives
/// each function the id its predecessor's instances run as.
final class IdentityTable: Sendable {
    let path: String
    let range: UIDRange
    private let allocated: Mutex<[String: uid_t]>

    init(path: String, range: UIDRange) throws(ConfinementError) {
        self.path = path
        self.range = range
        var table: [String: uid_t] = [:]
        if let text = Posix.readFile(path) {
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ")
                guard fields.count == 2, let uid = uid_t(fields[1]), range.ids.contains(uid) else { continue }
                table[String(fields[0])] = uid
            }
        }
        allocated = Mutex(table)
    }

    /// The identity of `config`'s function, allocating (and recording) one if it has none yet.
    func identity(for config: FunctionConfig) throws(ConfinementError) -> FunctionIdentity {
        if let user = config.user { return try Self.named(user.rawValue, function: config.id) }
        let id = config.id.rawValue
        let result = allocated.withLock { table -> Result<(uid_t, Bool), ConfinementError> in
            if let uid = table[id] { return .success((uid, false)) }
            let taken = Set(table.values)
            for candidate in range.ids where !taken.contains(candidate) {
                guard getpwuid(candidate) == nil, getgrgid(candidate) == nil else { continue }
                table[id] = candidate
                return .success((candidate, true))
            }
            return .failure(.rangeExhausted(range: range.description))
        }
        let (uid, isNew) = try result.get()
        if isNew { try save() }
        return FunctionIdentity(uid: uid, gid: gid_t(uid))
    }

    /// Gives a removed function's uid back to the range (`aether rm`, once its processes are
    /// gone). A function named again later gets a uid anew.
    func release(_ function: FunctionID) {
        let removed = allocated.withLock { $0.removeValue(forKey: function.rawValue) != nil }
        if removed { try? save() }
    }

    private static func named(_ user: String, function: FunctionID) throws(ConfinementError) -> FunctionIdentity {
        guard let entry = getpwnam(user) else { throw .unknownUser(function: function, user: user) }
        let identity = FunctionIdentity(uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
        guard identity.uid != 0, identity.gid != 0 else { throw .privilegedUser(function: function, user: user) }
        return identity
    }

    /// Writes the table (temporary file, then rename: never half a table).
    private func save() throws(ConfinementError) {
        let text = allocated.withLock { table in
            table.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)\n" }.joined()
        }
        do {
            try DurableFile.replace(path, with: Array(text.utf8), temporary: path + ".tmp-\(getpid())")
        } catch {
            throw .identityTable(path: path, reason: error.reason)
        }
    }
}
