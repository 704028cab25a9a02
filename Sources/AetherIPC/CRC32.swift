import CAetherIPC

/// CRC-32/ISO-HDLC, the checksum of every ring record (zlib's `crc32`, Python's `zlib.crc32`).
///
/// Chosen by measurement (`scripts/bench-ipc.sh`, BENCHMARKS.md): carry-less multiplication
/// folding (PCLMULQDQ) where the CPU has it, slicing-by-8 tables otherwise. The hardware `crc32`
/// instruction is not usable: it computes CRC-32C, which Python's standard library lacks.
public enum CRC32 {
    public enum Implementation: String, Sendable, CaseIterable {
        case pclmul
        case slicingBy8 = "slicing-by-8"
    }

    /// The implementation `checksum` uses on this CPU.
    public static let selected: Implementation = aether_crc32_has_pclmul() != 0 ? .pclmul : .slicingBy8

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        checksum(bytes, using: selected)
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer, using implementation: Implementation) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return 0 }
        switch implementation {
        case .pclmul: return aether_crc32_pclmul(0, base, bytes.count)
        case .slicingBy8: return aether_crc32_slice8(0, base, bytes.count)
        }
    }
}
