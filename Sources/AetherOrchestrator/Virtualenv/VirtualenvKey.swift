/// The name of a virtualenv in the cache: SHA-256 over what decides what pip installs from a
/// requirements file: the file's normalized lines, the interpreter's path and its version.
/// Functions whose requirements and interpreter agree share one virtualenv.
enum VirtualenvKey {
    /// The key's format; bumped when what goes into a virtualenv changes.
    static let format = "1"

    static func make(requirements: [UInt8], python: String, version: String) -> String {
        var hash = SHA256()
        func add(_ label: String, _ value: String) { hash.update(Array("\(label)=\(value)\n".utf8)) }
        add("format", format)
        add("python", python)
        add("version", version)
        for line in normalizedLines(of: requirements) { add("requirement", line) }
        return hash.finalize().hex
    }

    /// The lines that mean something to pip, as written: blank lines, whole-line comments and
    /// trailing blanks (spaces, tabs, a CR) do not change the key; order and everything else do.
    static func normalizedLines(of requirements: [UInt8]) -> [String] {
        // Split on bytes: as Characters, "\r\n" is one and would not split on "\n".
        requirements.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true)
            .map { line in
                var bytes = line[...]
                while let last = bytes.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") || last == 13 {
                    bytes = bytes.dropLast()
                }
                return String(decoding: bytes, as: UTF8.self)
            }
            .filter { line in
                let content = line.drop { $0 == " " || $0 == "\t" }
                return !content.isEmpty && !content.hasPrefix("#")
            }
    }
}
