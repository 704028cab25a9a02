import AetherCore
import AetherSystem
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Every successful deploy of a function is a numbered version (`aether versions`,
/// `aether rollback`): its configuration and a copy of its code, kept under
/// `<state_dir>/versions/<function>/`:
///
/// - `<N>.yaml`: version N. The marker line, its record as one JSON line, then the function's
///   configuration as YAML `ConfigLoader` reads, with `handler_path` (and `requirements`)
///   pointing at its code copy, so it validates however the files it came from changed since.
/// - `code/<digest>/`: copies of the files its code is made of (`FunctionCode.files`: the
///   handler and the Python modules beside it; the requirements file), named by a SHA-256 over
///   their names and bytes and shared by the versions with the same code.
///
/// The last `keep_versions` versions are kept; the newest is the one that runs. A version file
/// is written durably (temporary file, fsync, rename, folder fsync) after its code copy, so a
/// version on disk always has its code.
struct VersionStore: Sendable {
    /// `<state_dir>/versions`.
    let folder: String
    /// `keep_versions`.
    let keep: Int

    static let marker = "# aetherless function version"
    static let recordPrefix = "# aether-version: "
    private static let codeFolder = "code"

    /// One version's record line.
    struct Record: Codable, Sendable, Equatable {
        var number: Int
        /// UTC, ISO 8601.
        var deployedAt: String
        /// What made it: `aether up -c FILE`, `aether deploy FILE`, `aether rollback ID --to N`.
        var change: String
        /// The configuration file the function came from.
        var source: String
        /// Where its handler (and requirements file) were when it was deployed: a rollback runs
        /// from there when the files there still have its code, else from its copy.
        var handlerPath: String
        var requirements: String?
        /// `Orchestrator.handlerHash(of:)` of its code.
        var handlerSha256: String?
        /// Its code copy: `code/<code>/`.
        var code: String
    }

    /// A version as stored: its record and its configuration (paths into its code copy).
    struct Version: Sendable {
        var record: Record
        var config: FunctionConfig

        /// The configuration a rollback deploys: the paths it was deployed from when the files
        /// there are still its code (then its kept CRIU image fits, and the handler's folder is
        /// the one it was written for), else its copy's.
        func runnable() -> FunctionConfig {
            var original = config
            original.handlerPath = record.handlerPath
            original.requirements = record.requirements
            guard let files = try? VersionStore.codeFiles(of: original),
                VersionStore.codeDigest(of: files) == record.code
            else { return config }
            return original
        }

        /// Whether `function` is this version: the same configuration (wherever its files are:
        /// the paths it was deployed from, or its copy) and the same code.
        func isSame(as function: FunctionConfig) -> Bool {
            var other = function
            other.handlerPath = config.handlerPath
            other.requirements = config.requirements
            guard other == config, let files = try? VersionStore.codeFiles(of: function) else { return false }
            return VersionStore.codeDigest(of: files) == record.code
        }
    }

    private func functionFolder(_ id: FunctionID) -> String { "\(folder)/\(id.rawValue)" }
    private func versionPath(_ id: FunctionID, _ number: Int) -> String { "\(functionFolder(id))/\(number).yaml" }

    // MARK: Read

    /// The records of `id`'s kept versions, oldest first (a file that cannot be read is skipped:
    /// it is not a version to roll back to).
    func records(of id: FunctionID) -> [Record] {
        numbers(of: id).compactMap { try? readRecord(versionPath(id, $0)) }
    }

    /// Version `number` of `id`.
    func version(_ number: Int, of id: FunctionID) throws(VersionError) -> Version {
        let path = versionPath(id, number)
        guard numbers(of: id).contains(number) else {
            throw .unknownVersion(function: id.rawValue, number: number, kept: numbers(of: id))
        }
        let record = try readRecord(path)
        let bytes: [UInt8]
        do {
            bytes = try DesiredStateStore.readFile(path)
        } catch {
            throw .fileFailed(path: path, reason: error.description)
        }
        let config: AetherConfig
        do {
            config = try ConfigLoader.parse(bytes: bytes, file: path, baseDirectory: functionFolder(id))
        } catch {
            throw .damaged(path: path, reason: "\(error)")
        }
        guard config.functions.count == 1, let function = config.functions.first, function.id == id else {
            throw .damaged(path: path, reason: "it does not hold exactly function \(id)")
        }
        return Version(record: record, config: function)
    }

    /// The kept version numbers of `id`, ascending.
    private func numbers(of id: FunctionID) -> [Int] {
        (Posix.entries(of: functionFolder(id)) ?? []).compactMap { entry -> Int? in
            guard entry.name.hasSuffix(".yaml"), !entry.isDirectory else { return nil }
            return Int(entry.name.dropLast(".yaml".count)).flatMap { $0 > 0 ? $0 : nil }
        }.sorted()
    }

    private func readRecord(_ path: String) throws(VersionError) -> Record {
        let bytes: [UInt8]
        do {
            bytes = try DesiredStateStore.readFile(path)
        } catch {
            throw .fileFailed(path: path, reason: error.description)
        }
        switch RecordLine.read(Record.self, in: bytes, marker: Self.marker, prefix: Self.recordPrefix, lines: 4) {
        case .success(let record): return record
        case .failure(.notOurs): throw .damaged(path: path, reason: "it lacks the \"\(Self.marker)\" first line")
        case .failure(.missing): throw .damaged(path: path, reason: "it has no record line")
        case .failure(.invalid(let error)): throw .damaged(path: path, reason: "its record line is not valid: \(error)")
        }
    }

    // MARK: Write

    /// Records `function` (its code as the files are now) as the next version of it, and
    /// forgets the versions beyond `keep`. Returns its record. `deployedAs`: the paths its
    /// code was first deployed from, when `function` runs from a version's copy (a rollback).
    @discardableResult
    func record(
        _ function: FunctionConfig, hash: String?, change: String, source: String, at time: String,
        settings: OrchestratorConfig, deployedAs: (handler: String, requirements: String?)? = nil
    ) throws(VersionError) -> Record {
        let id = function.id
        let folder = functionFolder(id)
        try Self.makeFolders([self.folder, folder, folder + "/" + Self.codeFolder])
        let files = try Self.codeFiles(of: function)
        let code = Self.codeDigest(of: files)
        let copy = try copyCode(files, into: folder + "/" + Self.codeFolder + "/" + code)
        var versioned = function
        versioned.handlerPath = copy + "/" + Self.baseName(function.handlerPath)
        versioned.requirements = function.requirements.map { copy + "/" + Self.baseName($0) }
        let record = Record(
            number: (numbers(of: id).last ?? 0) + 1, deployedAt: time, change: change, source: source,
            handlerPath: deployedAs?.handler ?? function.handlerPath,
            requirements: deployedAs.map(\.requirements) ?? function.requirements, handlerSha256: hash, code: code)
        let json = (try? DesiredStateStore.encoder().encode(record)).map {
            DesiredStateStore.asciiJSON(String(decoding: $0, as: UTF8.self))
        }
        let text = ConfigYAML.render(
            AetherConfig(orchestrator: settings, functions: [versioned]),
            header: [
                String(Self.marker.dropFirst(2)) + " \(record.number) of \(id), written by aether at each deploy.",
                String(Self.recordPrefix.dropFirst(2)) + (json ?? "{}"),
            ])
        let path = versionPath(id, record.number)
        do {
            try DurableFile.replace(
                path, with: Array(text.utf8), temporary: "\(folder)/.\(record.number).tmp-\(getpid())")
        } catch {
            // A copy made for this version alone is not kept without it.
            removeUnusedCode(of: id)
            throw .fileFailed(path: path, reason: error.description)
        }
        prune(id)
        return record
    }

    /// Forgets a version recorded by a deploy that was then not applied.
    func forget(_ number: Int, of id: FunctionID) {
        unlink(versionPath(id, number))
        removeUnusedCode(of: id)
    }

    /// Forgets every version of `id` (`aether rm`).
    func remove(_ id: FunctionID) {
        RecursiveRemoval.remove(functionFolder(id))
    }

    /// Keeps the newest `keep` versions, and the code copies they use.
    private func prune(_ id: FunctionID) {
        for number in numbers(of: id).dropLast(keep) { unlink(versionPath(id, number)) }
        removeUnusedCode(of: id)
    }

    private func removeUnusedCode(of id: FunctionID) {
        let used = Set(records(of: id).map(\.code))
        let codeFolder = functionFolder(id) + "/" + Self.codeFolder
        for entry in Posix.entries(of: codeFolder) ?? [] where !used.contains(entry.name) {
            RecursiveRemoval.remove(codeFolder + "/" + entry.name)
        }
    }

    // MARK: Code

    /// The files of a function's code: `FunctionCode.files` and its requirements file.
    static func codeFiles(of function: FunctionConfig) throws(VersionError) -> [String] {
        var files = FunctionCode.files(of: function)
        if let requirements = function.requirements { files.append(requirements) }
        var names = Set<String>()
        for file in files where !names.insert(baseName(file)).inserted {
            throw .codeNotCopied(
                path: file,
                reason: "two of the function's files are named \(baseName(file)); a version keeps one of each name")
        }
        return files
    }

    /// SHA-256 over the files' names and bytes (a file that cannot be read counts as such).
    static func codeDigest(of files: [String]) -> String {
        var hash = SHA256()
        for file in files {
            let digest = (try? SHA256.hex(ofFile: file)) ?? "unreadable"
            hash.update(Array("\(baseName(file)) \(digest)\n".utf8))
        }
        return hash.finalize().hex
    }

    /// Copies `files` into `target` (once: a copy with that digest is the same code), each with
    /// its permission bits (a handler the function's user can read and run stays so).
    private func copyCode(_ files: [String], into target: String) throws(VersionError) -> String {
        if access(target, F_OK) == 0 { return target }
        let temporary = target + ".tmp-\(getpid())"
        RecursiveRemoval.remove(temporary)
        do throws(SystemCallFailure) {
            // 0755: a confined function's user reaches its handler the way it reached the original.
            try systemCall("mkdir", on: temporary, failsWith: .minusOne) { mkdir(temporary, 0o755) }
            for file in files {
                var status = stat()
                try systemCall("stat", on: file, failsWith: .minusOne) { stat(file, &status) }
                guard let bytes = Posix.readBytes(file) else {
                    throw SystemCallFailure(call: "read", subject: file, errno: errno == 0 ? EIO : errno)
                }
                let copy = temporary + "/" + Self.baseName(file)
                try DurableFile.replace(
                    copy, with: bytes, temporary: copy + ".tmp", mode: status.st_mode & 0o755)
            }
            try systemCall("rename", on: "\(temporary) -> \(target)", failsWith: .minusOne) {
                rename(temporary, target)
            }
            try DurableFile.syncFolder(of: target)
        } catch {
            RecursiveRemoval.remove(temporary)
            throw .codeNotCopied(path: error.subject, reason: error.description)
        }
        return target
    }

    private static func makeFolders(_ paths: [String]) throws(VersionError) {
        for path in paths where mkdir(path, 0o711) != 0 && errno != EEXIST {
            throw .fileFailed(path: path, reason: "mkdir: \(String(cString: strerror(errno)))")
        }
    }

    static func baseName(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}

/// Why a version could not be recorded or read.
enum VersionError: Error, Sendable, Equatable, CustomStringConvertible {
    case fileFailed(path: String, reason: String)
    case damaged(path: String, reason: String)
    case codeNotCopied(path: String, reason: String)
    /// `aether rollback ID --to N` of a version that is not kept (or never was).
    case unknownVersion(function: String, number: Int, kept: [Int])
    /// `aether rollback ID` of a function with no version before the one it runs.
    case noEarlierVersion(function: String, current: Int?)

    var description: String {
        switch self {
        case .fileFailed(let path, let reason):
            "cannot keep the function's version in \(path): \(reason)"
        case .damaged(let path, let reason):
            "the version \(path) is damaged: \(reason)"
        case .codeNotCopied(let path, let reason):
            "cannot copy the function's code for its version (\(path)): \(reason)"
        case .unknownVersion(let function, let number, let kept):
            "function \(function) has no version \(number)"
                + (kept.isEmpty ? " (no version is kept)" : " (kept: \(VersionError.list(kept)))")
        case .noEarlierVersion(let function, let current):
            "function \(function) has no version before "
                + (current.map { "version \($0), the one it runs" } ?? "the one it runs (no version is kept)")
        }
    }

    private static func list(_ numbers: [Int]) -> String {
        numbers.map(String.init).joined(separator: ", ")
    }
}
