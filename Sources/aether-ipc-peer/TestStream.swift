/// The deterministic message stream of docs/shm-layout.md ("Test message stream"), identical to
/// `sdk/python/aetherless/teststream.py`, so either language can produce what the other verifies.
struct TestStream {
    static let blockSize = 131_072

    private var state: UInt64
    private let maximumLength: Int
    /// 16384 successive generator outputs, little-endian.
    let block: [UInt8]
    /// Index of the next message.
    private(set) var index: UInt64 = 0

    init(seed: UInt64, maximumLength: Int) {
        precondition(maximumLength <= 65_536, "the stream's messages are at most 65536 bytes")
        state = seed
        self.maximumLength = maximumLength
        var block = [UInt8]()
        block.reserveCapacity(Self.blockSize)
        for _ in 0..<(Self.blockSize / 8) {
            withUnsafeBytes(of: Self.next(&state).littleEndian) { block.append(contentsOf: $0) }
        }
        self.block = block
    }

    static func next(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The next message: its index, length and where in `block` its bytes start.
    mutating func nextMessage() -> (index: UInt64, length: Int, start: Int) {
        let x = Self.next(&state)
        let length = Int(x % UInt64(maximumLength + 1))
        let start = Int((x >> 32) % 65_536)
        defer { index += 1 }
        return (index, length, start)
    }

    /// Writes message (index, length, start) into `destination` (exactly `length` bytes).
    func fill(_ destination: UnsafeMutableRawBufferPointer, index: UInt64, start: Int) {
        block.withUnsafeBytes { source in
            destination.baseAddress!.copyMemory(from: source.baseAddress! + start, byteCount: destination.count)
        }
        if destination.count >= 8 { destination.storeBytes(of: index.littleEndian, as: UInt64.self) }
    }

    /// Offset of the first byte where `payload` differs from the message, or nil if equal.
    func firstDifference(_ payload: UnsafeRawBufferPointer, index: UInt64, length: Int, start: Int) -> Int? {
        if payload.count != length { return min(payload.count, length) }
        let head = withUnsafeBytes(of: index.littleEndian) { Array($0) }
        return block.withUnsafeBytes { source -> Int? in
            let prefix = min(8, length)
            for offset in 0..<prefix {
                let expected = length >= 8 ? head[offset] : source[start + offset]
                if payload[offset] != expected { return offset }
            }
            guard length > prefix else { return nil }
            if memcmp(payload.baseAddress! + prefix, source.baseAddress! + start + prefix, length - prefix) == 0 {
                return nil
            }
            for offset in prefix..<length where payload[offset] != source[start + offset] { return offset }
            return nil
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
