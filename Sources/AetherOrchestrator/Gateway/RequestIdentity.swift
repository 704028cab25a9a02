/// A request's id and W3C trace context (https://www.w3.org/TR/trace-context/): a request that
/// came with a valid `traceparent` keeps its trace (the id is its trace id); any other starts a
/// new trace, sampled. The id is the 32-hex-digit trace id: the same string in the handler
/// (`x-request-id`, `traceparent`), in the response's `x-request-id`, and in log lines.
struct RequestIdentity: Sendable, Equatable {
    let traceID: String
    let traceparent: String

    var requestID: String { traceID }

    init(incoming: String?) {
        if let incoming, let traceID = Self.traceID(ofValid: incoming) {
            self.traceID = traceID
            traceparent = incoming.lowercased()
        } else {
            // Three 64-bit draws (each one read of the kernel's generator), not one per byte:
            // this runs for every request.
            var generator = SystemRandomNumberGenerator()
            traceID = Self.hex(generator.next()) + Self.hex(generator.next())
            traceparent = "00-\(traceID)-\(Self.hex(generator.next()))-01"
        }
    }

    /// An identity made elsewhere (a tracer's server span): `traceparent` carries `traceID`.
    init(traceID: String, traceparent: String) {
        self.traceID = traceID
        self.traceparent = traceparent
    }

    /// A valid `traceparent` as version 00 (a later version's first four fields, lowercased),
    /// which is what a W3C propagator reads; nil if it is not valid.
    static func normalized(_ value: String) -> String? {
        guard traceID(ofValid: value) != nil else { return nil }
        let fields = value.trimmingPrefix(while: { $0 == " " }).split(separator: "-", omittingEmptySubsequences: false)
        return "00-\(fields[1])-\(fields[2])-\(fields[3])".lowercased()
    }

    /// The trace id of a `traceparent` of version 00 (or a later version's first four fields),
    /// or nil if it is not one: lowercase hex fields of 2-32-16-2 digits, neither id all zeros.
    static func traceID(ofValid value: String) -> String? {
        let fields = value.trimmingPrefix(while: { $0 == " " }).split(separator: "-", omittingEmptySubsequences: false)
        guard fields.count >= 4, fields[0].count == 2, fields[1].count == 32, fields[2].count == 16,
            fields[3].count == 2, fields.allSatisfy({ $0.allSatisfy(\.isHexDigit) }),
            fields[0].lowercased() != "ff", fields[0] != "00" || fields.count == 4,
            fields[1].contains(where: { $0 != "0" }), fields[2].contains(where: { $0 != "0" })
        else { return nil }
        return fields[1].lowercased()
    }

    /// 16 lowercase hex digits.
    private static func hex(_ word: UInt64) -> String {
        let digits = String(word, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
