/// Checks that configuration bytes are text libyaml can be trusted with, and locates the first
/// offending byte by line and column when they are not.
enum SourceText {
    struct Problem: Error {
        let line: Int
        let column: Int
        let found: String

        func diagnostic(file: String) -> ConfigDiagnostic {
            ConfigDiagnostic(
                kind: .invalidEncoding, file: file, line: line, column: column, keyPath: "",
                expected: "UTF-8 text", found: found)
        }
    }

    static func decode(_ bytes: [UInt8]) -> Result<String, Problem> {
        if let nul = bytes.firstIndex(of: 0) {
            let (line, column) = position(of: nul, in: bytes)
            return .failure(Problem(line: line, column: column, found: "a NUL byte (binary data)"))
        }
        var iterator = bytes.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let encoded):
                offset += encoded.count
            case .emptyInput:
                return .success(String(decoding: bytes, as: UTF8.self))
            case .error(let length):
                let (line, column) = position(of: offset, in: bytes)
                let shown = bytes[offset..<offset + length].map { "0x" + String($0, radix: 16, uppercase: true) }
                return .failure(
                    Problem(
                        line: line, column: column, found: "bytes \(shown.joined(separator: " ")) that are not UTF-8"))
            }
        }
    }

    /// 1-based line and column of byte `offset`, counting columns in Unicode scalars as libyaml does.
    static func position(of offset: Int, in bytes: [UInt8]) -> (line: Int, column: Int) {
        let before = bytes[..<offset]
        let line = before.reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
        let lineStart = before.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
        // Continuation bytes (10xxxxxx) do not start a scalar.
        let column = 1 + bytes[lineStart..<offset].filter { $0 & 0xC0 != 0x80 }.count
        return (line, column)
    }
}
