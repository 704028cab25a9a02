public import AetherCore
import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The root-only secrets store: `<state_dir>/secrets/`, a folder of mode 0700 owned by the
/// orchestrator's user, one file of mode 0600 per secret, named for it (`SecretName`, so never
/// `.`-prefixed, never a path). `aether secret` manages it without a running orchestrator; the
/// orchestrator reads it at `up` and `deploy` (`verify`, `handlerSecrets`, `bearerToken`, `contents(of:)`).
///
/// Every file is opened relative to the folder's descriptor with O_NOFOLLOW, so a symbolic
/// link put in the store is refused, not followed. A secret is written to `.NAME.tmp-PID` in
/// the same folder, fsynced, renamed onto its name and the folder fsynced: a crash leaves the
/// old secret or the new one. Contents are only ever returned to the caller: no error, log line
/// or listing of this type holds them.
public struct SecretStore: Sendable {
    public static let folderName = "secrets"
    /// The largest secret: 1 MiB.
    public static let maximumSize = 1 << 20
    static let temporaryMarker = ".tmp-"

    /// `<state_dir>/secrets`.
    public let folder: String

    public init(stateDirectory: String) {
        folder =
            (stateDirectory.hasSuffix("/") ? String(stateDirectory.dropLast()) : stateDirectory) + "/"
            + Self.folderName
    }

    /// One stored secret as `aether secret ls` shows it: never its contents.
    public struct Entry: Sendable, Equatable {
        public let name: SecretName
        public let size: Int
        /// Seconds since the epoch (UTC) of the last change.
        public let modified: Int
    }

    // MARK: Writing (aether secret)

    /// Stores `contents` as secret `name`. An existing secret of that name is an error unless
    /// `replacing` (then it is replaced in one rename).
    public func create(_ name: SecretName, contents: [UInt8], replacing: Bool = false) throws(SecretStoreError) {
        try Self.checkContents(contents, source: name.rawValue)
        let directory = OwnedDescriptor(owning: try openFolder(create: true))
        if !replacing, Self.exists(name.rawValue, in: directory.rawValue) { throw .exists(name) }
        let temporary = "." + name.rawValue + Self.temporaryMarker + String(getpid())
        let target = name.rawValue
        unlinkat(directory.rawValue, temporary, 0)
        do {
            let file = OwnedDescriptor(
                owning: try systemCall("open", on: "\(folder)/\(temporary)", failsWith: .minusOne) {
                    openat(directory.rawValue, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                })
            try systemCall("fchmod", on: "\(folder)/\(temporary)", failsWith: .minusOne) {
                fchmod(file.rawValue, 0o600)
            }
            var offset = 0
            while offset < contents.count {
                offset += try systemCall("write", on: "\(folder)/\(temporary)", failsWith: .minusOne) {
                    contents.withUnsafeBytes { write(file.rawValue, $0.baseAddress! + offset, $0.count - offset) }
                }
            }
            try systemCall("fsync", on: "\(folder)/\(temporary)", failsWith: .minusOne) { fsync(file.rawValue) }
            file.close()
            try systemCall("rename", on: "\(folder)/\(target)", failsWith: .minusOne) {
                renameat(directory.rawValue, temporary, directory.rawValue, target)
            }
            try systemCall("fsync", on: folder, failsWith: .minusOne) { fsync(directory.rawValue) }
        } catch {
            unlinkat(directory.rawValue, temporary, 0)
            throw .failed(error)
        }
    }

    /// Removes secret `name`; an unknown name is an error.
    public func remove(_ name: SecretName) throws(SecretStoreError) {
        guard let raw = try openFolderIfPresent() else { throw .unknown(name, folder: folder) }
        let directory = OwnedDescriptor(owning: raw)
        do {
            try systemCall("unlink", on: "\(folder)/\(name.rawValue)", failsWith: .minusOne) {
                unlinkat(directory.rawValue, name.rawValue, 0)
            }
            try systemCall("fsync", on: folder, failsWith: .minusOne) { fsync(directory.rawValue) }
        } catch {
            if error.errno == ENOENT { throw .unknown(name, folder: folder) }
            throw .failed(error)
        }
    }

    /// Every stored secret, by name: size and modification time only.
    public func list() throws(SecretStoreError) -> [Entry] {
        guard let raw = try openFolderIfPresent() else { return [] }
        let directory = OwnedDescriptor(owning: raw)
        var entries: [Entry] = []
        for entry in Posix.entries(of: folder) ?? [] {
            // Temporary files start with '.', which no secret name does.
            guard let name = try? SecretName(entry.name) else { continue }
            var status = stat()
            guard fstatat(directory.rawValue, entry.name, &status, AT_SYMLINK_NOFOLLOW) == 0,
                status.st_mode & S_IFMT == S_IFREG
            else { continue }
            entries.append(Entry(name: name, size: Int(status.st_size), modified: Int(status.st_mtim.tv_sec)))
        }
        return entries.sorted { $0.name < $1.name }
    }

    // MARK: Reading (the orchestrator)

    /// The contents of secret `name`.
    public func contents(of name: SecretName) throws(SecretStoreError) -> [UInt8] {
        guard let raw = try openFolderIfPresent() else { throw .unknown(name, folder: folder) }
        let directory = OwnedDescriptor(owning: raw)
        let path = "\(folder)/\(name.rawValue)"
        do {
            let file = OwnedDescriptor(
                owning: try systemCall("open", on: path, failsWith: .minusOne) {
                    openat(directory.rawValue, name.rawValue, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                })
            var status = stat()
            try systemCall("fstat", on: path, failsWith: .minusOne) { fstat(file.rawValue, &status) }
            guard status.st_mode & S_IFMT == S_IFREG else {
                throw SecretStoreError.unsafe(path: path, reason: "it is not a regular file")
            }
            return try Self.readBounded(file.rawValue, source: path)
        } catch let error as SystemCallFailure {
            if error.errno == ENOENT { throw .unknown(name, folder: folder) }
            if error.errno == ELOOP { throw .unsafe(path: path, reason: "it is a symbolic link") }
            throw .failed(error)
        } catch let error as SecretStoreError {
            throw error
        } catch {
            throw .unsafe(path: path, reason: "\(error)")
        }
    }

    /// Checks that every secret the functions name (`secrets:` and `auth.secret`) is stored;
    /// the error lists each function and secret that is not.
    public func verify(_ functions: [FunctionConfig]) throws(SecretStoreError) {
        let stored = Set(try list().map(\.name))
        var missing: [SecretStoreError.Reference] = []
        for function in functions {
            for secret in function.referencedSecrets where !stored.contains(secret) {
                missing.append(SecretStoreError.Reference(function: function.id, secret: secret))
            }
        }
        if !missing.isEmpty { throw .missing(missing, folder: folder) }
    }

    /// The secrets a function's handler may read (its `secrets:` list, in order, not the `auth`
    /// token unless listed), to be placed at `/run/secrets/NAME` for it.
    public func handlerSecrets(
        of function: FunctionConfig
    ) throws(SecretStoreError) -> [(
        name: SecretName, contents: [UInt8]
    )] {
        var result: [(name: SecretName, contents: [UInt8])] = []
        for name in function.secrets {
            do {
                result.append((name, try contents(of: name)))
            } catch .unknown(let secret, let folder) {
                throw .missing([SecretStoreError.Reference(function: function.id, secret: secret)], folder: folder)
            }
        }
        return result
    }

    /// The bearer token a function's `auth:` names: the secret's contents without one trailing
    /// line break ("\n" or "\r\n"), so a file written by `echo` works. nil: the function has no
    /// `auth:`.
    public func bearerToken(of function: FunctionConfig) throws(SecretStoreError) -> BearerToken? {
        guard let auth = function.auth else { return nil }
        do {
            return BearerToken(secretContents: try contents(of: auth.secret))
        } catch .unknown(let secret, let folder) {
            throw .missing([SecretStoreError.Reference(function: function.id, secret: secret)], folder: folder)
        }
    }

    // MARK: Sources (aether secret create --from-file)

    /// Reads what `--from-file` names (`-`: standard input): at most `maximumSize` bytes, not
    /// empty.
    public static func readSource(_ path: String) throws(SecretStoreError) -> [UInt8] {
        let source = path == "-" ? "standard input" : path
        let bytes: [UInt8]
        do {
            if path == "-" {
                bytes = try readBounded(STDIN_FILENO, source: source)
            } else {
                let file = try OwnedDescriptor.open(path, O_RDONLY | O_CLOEXEC)
                var status = stat()
                try systemCall("fstat", on: path, failsWith: .minusOne) { fstat(file.rawValue, &status) }
                if status.st_mode & S_IFMT == S_IFDIR {
                    throw SecretStoreError.sourceUnreadable(source: source, reason: "it is a directory")
                }
                bytes = try readBounded(file.rawValue, source: source)
            }
        } catch let error as SystemCallFailure {
            throw .sourceUnreadable(source: source, reason: error.reason)
        } catch let error as SecretStoreError {
            throw error
        } catch {
            throw .sourceUnreadable(source: source, reason: "\(error)")
        }
        try checkContents(bytes, source: source)
        return bytes
    }

    /// Empty (or only a line break) and oversized contents are refused.
    static func checkContents(_ bytes: [UInt8], source: String) throws(SecretStoreError) {
        if bytes.count > maximumSize { throw .tooLarge(source: source, limit: maximumSize) }
        if bytes.isEmpty || bytes == [0x0A] || bytes == [0x0D, 0x0A] { throw .empty(source: source) }
    }

    // MARK: Helpers

    /// Reads a descriptor to its end, refusing more than `maximumSize` bytes.
    private static func readBounded(_ descriptor: CInt, source: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while bytes.count <= maximumSize {
            let count = try systemCall("read", on: source, failsWith: .minusOne) {
                chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            }
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        if bytes.count > maximumSize { throw SecretStoreError.tooLarge(source: source, limit: maximumSize) }
        return bytes
    }

    private static func exists(_ name: String, in directory: CInt) -> Bool {
        var status = stat()
        return fstatat(directory, name, &status, AT_SYMLINK_NOFOLLOW) == 0
    }

    /// The folder's descriptor (the caller owns it), or nil when it does not exist yet (nothing
    /// was ever stored).
    private func openFolderIfPresent() throws(SecretStoreError) -> CInt? {
        var status = stat()
        if lstat(folder, &status) != 0 && errno == ENOENT { return nil }
        return try openFolder(create: false)
    }

    /// Opens the folder (creating it and its parents with mode 0700 when `create`), checks it is
    /// a real folder owned by us, and makes it 0700 if it was looser. The caller owns the
    /// descriptor.
    private func openFolder(create: Bool) throws(SecretStoreError) -> CInt {
        if create {
            var partial = ""
            for component in folder.split(separator: "/") {
                partial += "/" + component
                do {
                    try systemCall("mkdir", on: partial, failsWith: .minusOne) { mkdir(partial, 0o700) }
                } catch {
                    if error.errno == EEXIST { continue }
                    throw .failed(error)
                }
            }
        }
        let raw: CInt
        do {
            raw = try systemCall("open", on: folder, failsWith: .minusOne) {
                open(folder, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
        } catch {
            if error.errno == ELOOP || error.errno == ENOTDIR {
                throw .unsafe(path: folder, reason: "it is not a folder (a symbolic link or a file)")
            }
            throw .failed(error)
        }
        let directory = OwnedDescriptor(owning: raw)
        var status = stat()
        do {
            try systemCall("fstat", on: folder, failsWith: .minusOne) { fstat(directory.rawValue, &status) }
        } catch {
            throw .failed(error)
        }
        guard status.st_uid == geteuid() else {
            throw .unsafe(path: folder, reason: "it belongs to uid \(status.st_uid), not to uid \(geteuid())")
        }
        if status.st_mode & 0o7077 != 0 {
            do {
                try systemCall("fchmod", on: folder, failsWith: .minusOne) { fchmod(directory.rawValue, 0o700) }
            } catch {
                throw .failed(error)
            }
        }
        return directory.take()
    }
}

/// Why a secret could not be stored, listed, removed or read. Never holds a secret's contents.
public enum SecretStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A function and a secret it names.
    public struct Reference: Sendable, Equatable {
        public let function: FunctionID
        public let secret: SecretName
    }

    case invalidName(String)
    /// `--from-file` names something that cannot be read.
    case sourceUnreadable(source: String, reason: String)
    case empty(source: String)
    case tooLarge(source: String, limit: Int)
    case exists(SecretName)
    case unknown(SecretName, folder: String)
    /// Functions name secrets that are not stored.
    case missing([Reference], folder: String)
    /// The store (or a file in it) is not what this type writes: not a folder, a symbolic link,
    /// owned by someone else.
    case unsafe(path: String, reason: String)
    /// A system call on the store failed (`what`: the call and its path).
    case failed(what: String, reason: String)

    static func failed(_ failure: SystemCallFailure) -> Self {
        .failed(what: "\(failure.call) \(failure.subject)", reason: failure.reason)
    }

    public var description: String {
        switch self {
        case .invalidName(let name):
            "invalid secret name \(Self.quoted(name)): expected \(SecretName.expectation)"
        case .sourceUnreadable(let source, let reason):
            "cannot read the secret from \(source): \(reason)"
        case .empty(let source):
            "the secret from \(source) is empty: a secret needs at least one byte besides a final line break"
        case .tooLarge(let source, let limit):
            "the secret from \(source) is over the \(limit)-byte limit for a secret"
        case .exists(let name):
            "secret \(name) already exists; replace it with --replace, or remove it with `aether secret rm \(name)`"
        case .unknown(let name, let folder):
            "no secret \(name) is stored (in \(folder))"
        case .missing(let references, let folder):
            references.map {
                "function \($0.function) names secret \($0.secret), which is not stored"
            }.joined(separator: "; ")
                + " (in \(folder); create it with `aether secret create NAME --from-file FILE`)"
        case .unsafe(let path, let reason):
            "refusing to use \(path) as the secrets store: \(reason)"
        case .failed(let what, let reason):
            "the secrets store: \(what): \(reason)"
        }
    }

    /// A name as the user typed it, control characters escaped, at most 80 characters.
    private static func quoted(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars.prefix(80) {
            result += scalar.isASCII && scalar.value >= 0x20 && scalar.value < 0x7F ? String(scalar) : "?"
        }
        return "\"" + result + (text.unicodeScalars.count > 80 ? "...\"" : "\"")
    }
}
