import CAetherSystem

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
            (traceID, traceparent) = Self.fresh()
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

    /// A new trace: a random trace id and parent id, sampled. This runs for every request that
    /// did not bring a trace: 24 bytes of the kernel's generator (from this thread's pool of
    /// them: a getrandom call per request was one of the gateway's four system calls), the traceparent
    /// written digit by digit into its final storage (no interpolation, no radix conversion),
    /// and the trace id taken from it.
    private static func fresh() -> (traceID: String, traceparent: String) {
        var random: (UInt64, UInt64, UInt64) = (0, 0, 0)
        let read = withUnsafeMutableBytes(of: &random) { aether_random_bytes($0.baseAddress, UInt($0.count)) }
        if read != 24 {
            // Not expected (24 bytes never come short once the pool is ready): the stdlib's way.
            var generator = SystemRandomNumberGenerator()
            random = (generator.next(), generator.next(), generator.next())
        }
        // "00-" trace id "-" parent id "-01"
        let traceparent = String(unsafeUninitializedCapacity: 55) { buffer in
            buffer[0] = UInt8(ascii: "0")
            buffer[1] = UInt8(ascii: "0")
            buffer[2] = UInt8(ascii: "-")
            writeHex(random.0, into: buffer, at: 3)
            writeHex(random.1, into: buffer, at: 19)
            buffer[35] = UInt8(ascii: "-")
            writeHex(random.2, into: buffer, at: 36)
            buffer[52] = UInt8(ascii: "-")
            buffer[53] = UInt8(ascii: "0")
            buffer[54] = UInt8(ascii: "1")
            return 55
        }
        return (String(decoding: traceparent.utf8.dropFirst(3).prefix(32), as: UTF8.self), traceparent)
    }

    /// Writes `word` as 16 lowercase hex digits, most significant first, at `offset`.
    private static func writeHex(_ word: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        for index in 0..<16 {
            let nibble = UInt8(truncatingIfNeeded: word >> (60 - 4 * UInt64(index))) & 0xF
            buffer[offset + index] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") - 10 + nibble
        }
    }
}
