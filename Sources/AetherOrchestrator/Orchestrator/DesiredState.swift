public import AetherCore
import AetherSystem
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What was last deployed: the configuration `aether up` without a file resumes (the
/// orchestrator settings of the last `up -c`, and every function `up -c`, `deploy` and `rm` left
/// in place), and where each function came from.
public struct DesiredState: Sendable, Equatable {
    public var config: AetherConfig
    /// When it was last changed (UTC, ISO 8601).
    public var savedAt: String
    /// What changed it: `aether up -c FILE`, `aether deploy FILE`, `aether rm ID`.
    public var change: String
    /// One per function of `config`, in the same order.
    public private(set) var records: [FunctionRecord]

    /// One function's entry of the record.
    public struct FunctionRecord: Codable, Sendable, Equatable {
        public var id: String
        /// The configuration file it was last added or replaced from.
        public var source: String
        /// When (UTC, ISO 8601).
        public var deployedAt: String
        public var handlerPath: String
        /// SHA-256 of the handler file's bytes when it was deployed (nil: it could not be read);
        /// with `requirements:`, of the handler's and the requirements file's digests
        /// (`Orchestrator.handlerHash(of:)`).
        public var handlerSha256: String?
    }

    /// The state of `aether up -c file`: every function comes from `file`. `hashes` are the
    /// handler files' SHA-256 digests.
    static func initial(
        config: AetherConfig, file: String, hashes: [FunctionID: String?], at time: String
    ) -> DesiredState {
        DesiredState(
            config: config, savedAt: time, change: "aether up -c \(file)",
            records: config.functions.map { record(of: $0, source: file, hash: hashes[$0.id] ?? nil, at: time) })
    }

    init(config: AetherConfig, savedAt: String, change: String, records: [FunctionRecord]) {
        self.config = config
        self.savedAt = savedAt
        self.change = change
        // Exactly one record per function, in the configuration's order.
        self.records = config.functions.map { function in
            records.first { $0.id == function.id.rawValue }
                ?? FunctionRecord(
                    id: function.id.rawValue, source: "(unknown)", deployedAt: savedAt,
                    handlerPath: function.handlerPath, handlerSha256: nil)
        }
    }

    public func record(of id: FunctionID) -> FunctionRecord? {
        records.first { $0.id == id.rawValue }
    }

    /// The configuration files the functions came from, in order of first appearance.
    public var sources: [String] {
        var seen: [String] = []
        for record in records where !seen.contains(record.source) { seen.append(record.source) }
        return seen
    }

    /// After `aether deploy file` (or a rollback to a version that came from `file`): its functions replace those with the same id (in place) and
    /// the others are added at the end; functions it does not name stay. Only `changed`
    /// functions (added or replaced) get a new record; the unchanged keep where they came from.
    /// `change` says what made it (`aether deploy FILE`, `aether rollback ID --to N`).
    func deploying(
        _ functions: [FunctionConfig], changed: Set<FunctionID>, hashes: [FunctionID: String?], from file: String,
        change: String, at time: String
    ) -> DesiredState {
        var next = self
        next.savedAt = time
        next.change = change
        for function in functions {
            let record =
                changed.contains(function.id)
                ? Self.record(of: function, source: file, hash: hashes[function.id] ?? nil, at: time)
                : self.record(of: function.id)
            if let index = next.config.functions.firstIndex(where: { $0.id == function.id }) {
                next.config.functions[index] = function
                if let record { next.records[index] = record }
            } else {
                next.config.functions.append(function)
                next.records.append(
                    record ?? Self.record(of: function, source: file, hash: hashes[function.id] ?? nil, at: time))
            }
        }
        return next
    }

    /// After `aether rm id`.
    func removing(_ id: FunctionID, at time: String) -> DesiredState {
        var next = self
        next.savedAt = time
        next.change = "aether rm \(id)"
        if let index = next.config.functions.firstIndex(where: { $0.id == id }) {
            next.config.functions.remove(at: index)
            next.records.remove(at: index)
        }
        return next
    }

    private static func record(
        of function: FunctionConfig, source: String, hash: String?, at time: String
    )
        -> FunctionRecord
    {
        FunctionRecord(
            id: function.id.rawValue, source: source, deployedAt: time, handlerPath: function.handlerPath,
            handlerSha256: hash)
    }

    /// Now, as `2025-01-31T12:00:00Z`.
    static func now() -> String {
        var seconds = time(nil)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Why the deployed state could not be read or written.
public enum DesiredStateError: Error, Sendable, CustomStringConvertible {
    static func failed(_ path: String, _ failure: SystemCallFailure) -> DesiredStateError {
        .fileFailed(path: path, reason: "\(failure.call): \(failure.reason)")
    }

    /// Reading, writing or syncing a file of the state folder failed.
    case fileFailed(path: String, reason: String)
    /// The file at our name was not written by aether: it is neither read nor replaced.
    case notOurs(path: String)
    /// The record line (the JSON header) is missing or unreadable, or of a newer format.
    case damagedRecord(path: String, reason: String)
    /// The stored configuration no longer validates (a handler file was removed, say).
    case invalidConfiguration(ConfigError)

    public var description: String {
        switch self {
        case .fileFailed(let path, let reason):
            "cannot keep the deployed state in \(path): \(reason)"
        case .notOurs(let path):
            "\(path) was not written by aether (it lacks the \"\(DesiredStateStore.marker)\" first line); move it away, aether neither reads nor replaces it"
        case .damagedRecord(let path, let reason):
            "the deployed state \(path) is damaged: \(reason)"
        case .invalidConfiguration(let error):
            "the deployed state no longer validates: \(error)"
        }
    }
}

/// The deployed state on disk: one file, `<state_dir>/desired.yaml`, the merged configuration
/// as YAML `ConfigLoader` reads (and `aether validate` checks), headed by comment lines: the
/// marker naming it ours, and the record (source files, time, handler digests) as one JSON line.
/// One file, so one rename makes a change durable whole.
///
/// Written atomically: a temporary file in the same folder (`.desired.yaml.tmp-PID`), written
/// and fsynced, renamed over the old one, then the folder fsynced, so after a crash or power
/// loss the file is the old state or the new one, never a mix. Only files of these names are
/// ever read or removed here.
public struct DesiredStateStore: Sendable {
    public static let fileName = "desired.yaml"
    /// The first line of every file this store writes.
    static let marker = "# aetherless desired state"
    static let recordPrefix = "# aether-record: "
    static let temporaryPrefix = ".desired.yaml.tmp-"
    static let format = 1

    public let folder: String

    public init(folder: String) { self.folder = folder }

    public var path: String { folder + "/" + Self.fileName }

    /// The record line's JSON.
    private struct Record: Codable {
        var format: Int
        var savedAt: String
        var change: String
        var functions: [DesiredState.FunctionRecord]
    }

    // MARK: Load

    /// The stored state, or nil when nothing is stored.
    public func load() throws(DesiredStateError) -> DesiredState? {
        let bytes: [UInt8]
        do {
            bytes = try Self.readFile(path)
        } catch {
            if error.errno == ENOENT { return nil }
            throw .failed(path, error)
        }
        let record: Record
        switch RecordLine.read(Record.self, in: bytes, marker: Self.marker, prefix: Self.recordPrefix, lines: 8) {
        case .success(let read): record = read
        case .failure(.notOurs): throw .notOurs(path: path)
        case .failure(.missing):
            throw .damagedRecord(path: path, reason: "no \"\(Self.recordPrefix.dropLast(2))\" line")
        case .failure(.invalid(let error)):
            throw .damagedRecord(path: path, reason: "its record line is not valid: \(error)")
        }
        guard record.format <= Self.format else {
            throw .damagedRecord(
                path: path, reason: "it was written in format \(record.format) by a newer aether (this one reads 1)")
        }
        let config: AetherConfig
        do {
            // The same validation as any configuration file; after `aether rm` of the last
            // function, an empty list.
            config = try ConfigLoader.parse(bytes: bytes, file: path, baseDirectory: folder, allowsNoFunctions: true)
        } catch {
            throw .invalidConfiguration(error)
        }
        return DesiredState(
            config: config, savedAt: record.savedAt, change: record.change, records: record.functions)
    }

    // MARK: Save

    /// Creates the folder (and its parents, mode 0700) if needed, and checks that a file at our
    /// name is ours: `up` calls it before it starts anything.
    public func prepareFolder() throws(DesiredStateError) {
        var partial = ""
        for component in folder.split(separator: "/") {
            partial += "/" + component
            do {
                try systemCall("mkdir", on: partial, failsWith: .minusOne) { mkdir(partial, 0o700) }
            } catch {
                if error.errno == EEXIST { continue }
                throw .failed(folder, error)
            }
        }
        // Never read or replace a file somebody else put at our name.
        let existing: [UInt8]?
        do {
            existing = try Self.readFile(path, upTo: Self.marker.utf8.count)
        } catch {
            guard error.errno == ENOENT else { throw .failed(path, error) }
            existing = nil
        }
        if let existing, !existing.starts(with: Array(Self.marker.utf8)) { throw .notOurs(path: path) }
    }

    /// Replaces the stored state with `state`, atomically and durably (see the type's comment).
    public func save(_ state: DesiredState) throws(DesiredStateError) {
        try prepareFolder()
        removeStaleTemporaryFiles()
        do {
            try DurableFile.replace(
                path, with: Array(render(state).utf8), temporary: folder + "/" + Self.temporaryPrefix + String(getpid())
            )
        } catch {
            throw .failed(path, error)
        }
    }

    /// The file's text: the marker, a note for people, the record line, then the configuration.
    func render(_ state: DesiredState) -> String {
        let record = Record(
            format: Self.format, savedAt: state.savedAt, change: state.change, functions: state.records)
        let json = (try? Self.encoder().encode(record)).map { Self.asciiJSON(String(decoding: $0, as: UTF8.self)) }
        return ConfigYAML.render(
            state.config,
            header: [
                String(Self.marker.dropFirst(2)) + ", written by aether at every `up -c`, `deploy` and `rm`.",
                "`aether up` without -c resumes it. Do not edit it: the next change replaces it.",
                "Last change: `\(state.change)` at \(state.savedAt).",
                String(Self.recordPrefix.dropFirst(2)) + (json ?? "{}"),
            ])
    }

    /// JSON text with every non-ASCII character escaped (`\\u00e9`; outside strings there are
    /// none), so the record line is a YAML comment whatever the paths contain.
    static func asciiJSON(_ text: String) -> String {
        var result = ""
        for unit in text.utf16 {
            if unit < 0x80 {
                result.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
            } else {
                let hex = String(unit, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            }
        }
        return result
    }

    /// Temporary files a crashed writer left (`.desired.yaml.tmp-PID` of a PID that is gone).
    private func removeStaleTemporaryFiles() {
        for entry in Posix.entries(of: folder) ?? [] where entry.name.hasPrefix(Self.temporaryPrefix) {
            guard let pid = pid_t(entry.name.dropFirst(Self.temporaryPrefix.count)) else { continue }
            if pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH) {
                unlink(folder + "/" + entry.name)
            }
        }
    }

    /// At most `limit` bytes of a file (the whole of a configuration: up to ConfigLoader's limit
    /// and one byte more, so an oversized one is reported as such).
    static func readFile(
        _ path: String, upTo limit: Int = ConfigLoader.maximumFileSize + 1
    ) throws(SystemCallFailure) -> [UInt8] {
        let file = try OwnedDescriptor.open(path, O_RDONLY | O_CLOEXEC)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while bytes.count < limit {
            let count = try systemCall("read", on: path, failsWith: .minusOne) {
                chunk.withUnsafeMutableBytes { read(file.rawValue, $0.baseAddress, min($0.count, limit - bytes.count)) }
            }
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        return bytes
    }

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}
