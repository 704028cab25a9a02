import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a configuration file and turns it into a validated `AetherConfig`, or reports every
/// problem in it at once.
///
/// The stages are: read the bytes (bounded), check they are UTF-8 text, compose the YAML node
/// tree (Yams/libyaml, which gives line and column for every node), and walk the tree against
/// the schema collecting diagnostics (`ConfigValidator`). Only a file with no diagnostics at all
/// produces a configuration.
public enum ConfigLoader {
    /// Configuration files are hand-written and small; anything bigger is refused unparsed.
    public static let maximumFileSize = 1 << 20

    /// Loads and validates the file at `path`. Relative handler paths are resolved against the
    /// file's folder.
    public static func load(path: String) throws(ConfigError) -> AetherConfig {
        let bytes = try readBounded(path: path)
        return try parse(bytes: bytes, file: path, baseDirectory: absoluteDirectory(of: path))
    }

    /// Validates configuration text. `file` names it in diagnostics; `baseDirectory` anchors
    /// relative handler paths. `allowsNoFunctions`: an empty `functions: []` list is valid (the
    /// deployed state once every function was removed), not an error.
    public static func parse(
        bytes: [UInt8], file: String, baseDirectory: String, allowsNoFunctions: Bool = false
    ) throws(ConfigError)
        -> AetherConfig
    {
        if bytes.count > maximumFileSize {
            throw .tooLarge(path: file, size: bytes.count, limit: maximumFileSize)
        }
        let text: String
        switch SourceText.decode(bytes) {
        case .success(let decoded):
            text = decoded
        case .failure(let problem):
            throw .invalid(path: file, diagnostics: [problem.diagnostic(file: file)])
        }
        var validator = ConfigValidator(
            file: file, baseDirectory: baseDirectory, allowsNoFunctions: allowsNoFunctions)
        let config = validator.validate(text: text)
        guard let config, validator.diagnostics.isEmpty else {
            // Reported in file order, the way an editor walks them.
            let ordered = validator.diagnostics.enumerated().sorted {
                ($0.element.line, $0.element.column, $0.offset) < ($1.element.line, $1.element.column, $1.offset)
            }
            throw .invalid(path: file, diagnostics: ordered.map(\.element))
        }
        return config
    }

    /// Reads at most `maximumFileSize + 1` bytes, so a huge file or an endless device is
    /// refused without being read whole.
    private static func readBounded(path: String) throws(ConfigError) -> [UInt8] {
        /// `systemCall` on the file; a failure makes it unreadable.
        @discardableResult
        func call<Value: FixedWidthInteger & SignedInteger>(
            _ function: String, _ body: () -> Value
        ) throws(ConfigError) -> Value {
            do {
                return try systemCall(function, on: path, failsWith: .minusOne, body)
            } catch {
                throw .unreadable(path: path, reason: error.reason)
            }
        }
        let file = OwnedDescriptor(owning: try call("open") { open(path, O_RDONLY | O_CLOEXEC) })
        var status = stat()
        try call("fstat") { fstat(file.rawValue, &status) }
        if (status.st_mode & S_IFMT) == S_IFDIR {
            throw .unreadable(path: path, reason: "it is a directory")
        }
        if (status.st_mode & S_IFMT) == S_IFREG, Int(status.st_size) > maximumFileSize {
            throw .tooLarge(path: path, size: Int(status.st_size), limit: maximumFileSize)
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while bytes.count <= maximumFileSize {
            let count = try call("read") {
                chunk.withUnsafeMutableBytes { read(file.rawValue, $0.baseAddress, $0.count) }
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        if bytes.count > maximumFileSize {
            throw .tooLarge(path: path, size: bytes.count, limit: maximumFileSize)
        }
        return bytes
    }

    private static func absoluteDirectory(of path: String) -> String {
        var directory = path
        if let slash = directory.lastIndex(of: "/") {
            directory = String(directory[..<slash])
            if directory.isEmpty { directory = "/" }
        } else {
            directory = "."
        }
        if directory.hasPrefix("/") { return directory }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard getcwd(&buffer, buffer.count) != nil else { return directory }
        let cwd = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return directory == "." ? cwd : cwd + "/" + directory
    }
}
