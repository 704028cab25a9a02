/// RFC 9110 header syntax (§5.1, §5.5): a token name, and a value of visible characters, spaces,
/// tabs and obs-text (bytes 0x80 and up), so no other control character (CR, LF and NUL included).
/// The same rules as NIO's NIOHTTPResponseHeadersValidator, which drops a whole response whose
/// headers break them.
enum HeaderSyntax {
    private static let tokenPunctuation = Set("!#$%&'*+-.^_`|~".utf8)

    static func isValid(name: String, value: String) -> Bool {
        guard !name.isEmpty else { return false }
        for byte in name.utf8 {
            let isAlphanumeric =
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            guard isAlphanumeric || tokenPunctuation.contains(byte) else { return false }
        }
        return value.utf8.allSatisfy { $0 == UInt8(ascii: "\t") || ($0 >= 0x20 && $0 != 0x7F) }
    }

    /// Headers the gateway sets itself: a handler's own are dropped.
    static let hopByHop = ["content-length", "transfer-encoding", "connection", "keep-alive"]

    static func isHopByHop(_ name: String) -> Bool {
        hopByHop.contains { ResponseHeaders.name(name, is: $0) }
    }
}
