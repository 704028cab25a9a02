/// Why a configuration file was rejected. Nothing is started when this is thrown.
public enum ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file could not be opened or read (missing, a directory, no permission, ...).
    case unreadable(path: String, reason: String)
    /// The file is larger than any sensible configuration; it was not parsed.
    case tooLarge(path: String, size: Int, limit: Int)
    /// The file was read and every problem in it was collected.
    case invalid(path: String, diagnostics: [ConfigDiagnostic])
    /// The file is not a configuration at all (`withoutContents()`): only where and what kind of
    /// thing it is, nothing of its text.
    case notAConfiguration(path: String, line: Int, column: Int, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason):
            "cannot read configuration file \(path): \(reason)"
        case .tooLarge(let path, let size, let limit):
            "configuration file \(path) is \(size) bytes, over the \(limit)-byte limit for a configuration file"
        case .invalid(let path, let diagnostics):
            ([
                "configuration file \(path) has \(diagnostics.count) problem\(diagnostics.count == 1 ? "" : "s"):"
            ] + diagnostics.map { "  \($0)" }).joined(separator: "\n")
        case .notAConfiguration(let path, let line, let column, let reason):
            "\(path):\(line):\(column): not an aetherless configuration: \(reason); its contents are not shown "
                + "(`aether validate \(path)` lists every problem)"
        }
    }

    /// The error with nothing of the file's text in it when the file is not a configuration at
    /// all, for commands that handle files someone else may have named (`aether deploy`, which
    /// the orchestrator reads as root): not UTF-8 text, not well-formed YAML, empty, not a
    /// mapping at the top, or a mapping with none of the top-level keys of a configuration.
    /// Diagnostics quote what they found (a value, a key, the start of a line of text), which for
    /// such a file could be a password. A configuration with mistakes is left as it is.
    public func withoutContents() -> ConfigError {
        guard case .invalid(let path, let diagnostics) = self, let first = diagnostics.first else { return self }
        let structural = diagnostics.first { diagnostic in
            switch diagnostic.kind {
            case .invalidEncoding, .malformedYAML, .emptyDocument: true
            case .wrongType: diagnostic.keyPath.isEmpty
            default: false
            }
        }
        if let structural {
            let reason =
                switch structural.kind {
                case .invalidEncoding: "not UTF-8 text"
                case .malformedYAML: "not well-formed YAML"
                case .emptyDocument: "an empty document"
                default: "not a YAML mapping"
                }
            return .notAConfiguration(path: path, line: structural.line, column: structural.column, reason: reason)
        }
        // A mapping with no `functions` and keys a configuration does not have, and nothing else.
        let topLevel = diagnostics.allSatisfy { diagnostic in
            let nested = diagnostic.keyPath.hasPrefix("orchestrator.") || diagnostic.keyPath.hasPrefix("functions")
            return (diagnostic.kind == .unknownKey && !nested)
                || (diagnostic.kind == .missingKey && diagnostic.keyPath == "functions")
        }
        if topLevel && diagnostics.contains(where: { $0.kind == .missingKey })
            && diagnostics.contains(where: { $0.kind == .unknownKey })
        {
            return .notAConfiguration(
                path: path, line: first.line, column: first.column,
                reason: "a mapping without a `functions` list, with keys a configuration does not have")
        }
        return self
    }
}

/// One problem found in a configuration file, with its position and the key path it concerns.
public struct ConfigDiagnostic: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        /// Not UTF-8 text, or contains NUL bytes.
        case invalidEncoding
        /// libyaml could not scan or parse the text (includes duplicate keys in one mapping).
        case malformedYAML
        /// The file holds no document.
        case emptyDocument
        /// A value of the wrong YAML type (a list where a number was expected, ...).
        case wrongType
        /// A value of the right type outside its allowed range or format.
        case invalidValue
        case missingKey
        case unknownKey
        case duplicateFunctionID
        case duplicateTriggerPort
        /// The handler program does not exist, is not a regular file, or cannot be run.
        case handlerUnusable
    }

    public let kind: Kind
    /// The file as the user named it.
    public let file: String
    /// 1-based line and column (columns count Unicode scalars, as libyaml does).
    public let line: Int
    public let column: Int
    /// Where in the document, e.g. `functions[1].trigger_port`; empty for the whole document.
    public let keyPath: String
    /// What would have been accepted.
    public let expected: String
    /// What was there instead.
    public let found: String

    public init(
        kind: Kind, file: String, line: Int, column: Int, keyPath: String, expected: String, found: String
    ) {
        self.kind = kind
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
        self.expected = expected
        self.found = found
    }

    /// `file:line:column`, the form compilers use, so editors can jump to it.
    public var location: String { "\(file):\(line):\(column)" }

    /// What is wrong, without the location: `key.path: expected X, found Y`.
    public var message: String {
        let path = keyPath.isEmpty ? "" : "\(keyPath): "
        switch kind {
        case .malformedYAML:
            // libyaml's own sentence ("found unexpected end of stream ...") already says what was found.
            return "\(path)malformed YAML: \(found)"
        default:
            return "\(path)expected \(expected), found \(found)"
        }
    }

    public var description: String { "\(location): \(message)" }
}
