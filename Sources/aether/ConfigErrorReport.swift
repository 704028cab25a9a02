import AetherCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Prints a rejected configuration the way compilers print errors: one line per problem,
/// `file:line:column: error: ...`, then a summary. Goes to standard error.
enum ConfigErrorReport {
    static func print(_ error: ConfigError) {
        switch error {
        case .invalid(let path, let diagnostics):
            for diagnostic in diagnostics {
                writeError("\(diagnostic.location): error: \(diagnostic.message)")
            }
            let count = diagnostics.count
            writeError("\(path): \(count) problem\(count == 1 ? "" : "s"); nothing was started")
        case .unreadable, .tooLarge, .notAConfiguration:
            writeError("error: \(error)")
        }
    }
}

/// Writes one line to standard error.
func writeError(_ line: String) {
    var text = line
    text.append("\n")
    text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(STDERR_FILENO, buffer.baseAddress! + offset, buffer.count - offset)
            if written <= 0 { break }
            offset += written
        }
    }
}
