import AetherSystem
import NIOCore

/// NIO's `IOError` prints the failing call and errno in its own format; users get the C
/// library's sentence for the errno (`SystemCallFailure.reason`), as for our own calls.
enum SystemErrorText {
    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError {
            return SystemCallFailure(call: "", subject: "", errno: error.errnoCode).reason
        }
        return "\(error)"
    }
}

/// JSON text for the small documents the gateway writes itself.
enum JSONText {
    /// A JSON string literal for `text`.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }

    /// Text a handler sent, quoted and cut to 80 characters, for an error message.
    static func printable(_ text: String) -> String {
        quoted(text.count > 80 ? String(text.prefix(77)) + "..." : text)
    }
}

extension Duration {
    /// The duration in milliseconds, with microsecond resolution (for logs, stats and headers).
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return ((Double(seconds) * 1000 + Double(attoseconds) / 1e15) * 1000).rounded() / 1000
    }
}
