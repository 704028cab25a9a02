/// RFC 9110 header syntax: a token name, and a value without CR, LF or NUL.
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
        return !value.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 }
    }

    /// Headers the gateway sets itself: a handler's own are dropped.
    static let hopByHop: Set<String> = ["content-length", "transfer-encoding", "connection", "keep-alive"]
}
