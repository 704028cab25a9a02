/// Where the orchestrator sends its traces (`otlp_endpoint`): the base URL of an OpenTelemetry
/// collector's OTLP/HTTP receiver, such as `http://127.0.0.1:4318`. Spans go to
/// `<endpoint>/v1/traces` (the OTLP/HTTP rule for a base endpoint), as protobuf.
public struct OTLPEndpoint: Sendable, Hashable, CustomStringConvertible {
    public static let expectation =
        "an http:// or https:// URL of an OTLP/HTTP receiver such as \"http://127.0.0.1:4318\" "
        + "(host, optional port and path; no user, query or fragment)"

    /// The URL as written (its scheme lowercased).
    public let url: String

    /// Reads and checks `text`: scheme http or https, a host (name, IPv4 or bracketed IPv6), an
    /// optional port in 1...65535, an optional path; nothing else.
    public init(text: String) throws(InvalidValueError) {
        let invalid = InvalidValueError(what: "OTLP endpoint", value: "\"\(text)\"", expected: Self.expectation)
        let lowered = text.lowercased()
        let scheme: String
        if lowered.hasPrefix("http://") {
            scheme = "http://"
        } else if lowered.hasPrefix("https://") {
            scheme = "https://"
        } else {
            throw invalid
        }
        let rest = text.dropFirst(scheme.count)
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count)
        guard Self.isValidAuthority(authority),
            path.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F && $0 != "?" && $0 != "#" })
        else { throw invalid }
        url = scheme + rest
    }

    /// Where spans are posted: the base URL, then `v1/traces` after a slash.
    public var tracesURL: String {
        (url.hasSuffix("/") ? url : url + "/") + "v1/traces"
    }

    public var description: String { url }

    /// `host[:port]`: a DNS name or IPv4 address, or an IPv6 address in brackets.
    private static func isValidAuthority(_ authority: Substring) -> Bool {
        var host = authority
        var port: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return false }
            let inside = authority[authority.index(after: authority.startIndex)..<close]
            guard !inside.isEmpty, inside.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return false }
            host = authority[...close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return false }
                port = after.dropFirst()
            }
        } else {
            if let colon = authority.firstIndex(of: ":") {
                host = authority[..<colon]
                port = authority[authority.index(after: colon)...]
            }
            guard !host.isEmpty, !host.hasPrefix("-"), !host.hasPrefix("."),
                host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") })
            else { return false }
        }
        if let port {
            guard !port.isEmpty, port.count <= 5, port.allSatisfy({ $0.isASCII && $0.isNumber }),
                let number = Int(port), (1...65535).contains(number)
            else { return false }
        }
        return true
    }
}
