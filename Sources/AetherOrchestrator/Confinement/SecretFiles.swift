import AetherCore
import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The files a confined function reads its secrets from (`secrets: [NAME]`): for each function
/// generation a folder on a tmpfs (/dev/shm, so a secret is never written to disk a second
/// time) that only the function's uid can read, with one file per secret, which the sandbox
/// makes its /run/secrets. The folders live under `aetherless-secrets-<orchestrator pid>`
/// (root, 0700); a generation's folder goes when the generation stops, every folder at
/// shutdown, and an orchestrator killed with -9 has its folders removed by the next `up`.
enum SecretFiles {
    static let parent = "/dev/shm"
    static let prefix = "aetherless-secrets-"

    static var root: String { "\(parent)/\(prefix)\(getpid())" }

    /// Writes `secrets` for one generation of `function`; returns the folder.
    static func stage(
        _ secrets: [(name: SecretName, contents: [UInt8])], function: FunctionID, generation: Int,
        identity: FunctionIdentity
    ) throws(ConfinementError) -> String {
        let root = root
        let folder = "\(root)/\(function)-g\(generation)"
        do {
            for (path, mode) in [(root, mode_t(0o711)), (folder, mode_t(0o700))] {
                do {
                    try systemCall("mkdir", on: path, failsWith: .minusOne) { mkdir(path, mode) }
                } catch  where error.errno == EEXIST {}
            }
            for (name, contents) in secrets {
                let path = "\(folder)/\(name)"
                let file = try OwnedDescriptor.open(
                    path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: 0o400)
                var offset = 0
                while offset < contents.count {
                    let fd = file.rawValue
                    offset += try systemCall("write", on: path, failsWith: .minusOne) {
                        contents[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    }
                }
                try systemCall("fchown", on: path, failsWith: .minusOne) {
                    fchown(file.rawValue, identity.uid, identity.gid)
                }
            }
            // Readable (listable) by the function's uid only.
            try systemCall("chown", on: folder, failsWith: .minusOne) { chown(folder, identity.uid, identity.gid) }
            try systemCall("chmod", on: folder, failsWith: .minusOne) { chmod(folder, 0o500) }
        } catch {
            remove(folder)
            throw .secretFiles(path: folder, reason: error.reason)
        }
        return folder
    }

    static func remove(_ folder: String) {
        RecursiveRemoval.remove(folder)
    }

    /// At shutdown: this orchestrator's folders.
    static func removeAll() {
        RecursiveRemoval.remove(root)
    }

    /// Folders of orchestrators that are no longer running; returns their names.
    static func removeStale() -> [String] {
        let stale = (Posix.entries(of: parent) ?? []).map(\.name).filter { name in
            guard name.hasPrefix(prefix), let owner = pid_t(name.dropFirst(prefix.count)) else { return false }
            return kill(owner, 0) != 0 && errno == ESRCH
        }
        for name in stale { RecursiveRemoval.remove("\(parent)/\(name)") }
        return stale
    }
}
