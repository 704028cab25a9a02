/// A compiled BPF ELF object carried inside the binary: the BPFCompiler plugin turns each
/// `bpf/<name>.bpf.c` of a target into a base64 string `<name>BPFObject`, decoded here.
public struct EmbeddedBPFObject: Sendable {
    public let name: String
    public let bytes: [UInt8]

    /// Decodes the plugin's base64 text (line breaks are skipped).
    public init(name: String, base64: String) {
        self.name = name
        var bytes: [UInt8] = []
        bytes.reserveCapacity(base64.utf8.count / 4 * 3)
        var word: UInt32 = 0
        var count = 0
        for character in base64.utf8 {
            let value: UInt32
            switch character {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(character - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(character - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(character - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            default: continue  // "=" padding and line breaks
            }
            word = word << 6 | value
            count += 1
            if count == 4 {
                bytes += [UInt8(word >> 16 & 0xFF), UInt8(word >> 8 & 0xFF), UInt8(word & 0xFF)]
                word = 0
                count = 0
            }
        }
        if count == 3 {
            bytes += [UInt8(word >> 10 & 0xFF), UInt8(word >> 2 & 0xFF)]
        } else if count == 2 {
            bytes.append(UInt8(word >> 4 & 0xFF))
        }
        self.bytes = bytes
    }

    /// The orchestrator's data plane (Sources/AetherNet/bpf/dataplane.bpf.c).
    public static let dataplane = EmbeddedBPFObject(name: "aether_dataplane", base64: dataplaneBPFObject)

    /// The counter of refused system calls (Sources/AetherNet/bpf/refusals.bpf.c).
    public static let refusals = EmbeddedBPFObject(name: "aether_refusals", base64: refusalsBPFObject)
}
