import CAetherIPC

/// CRC-32/ISO-HDLC, the checksum of every ring record (zlib's `crc32`, Python's `zlib.crc32`).
///
/// Chosen by measurement (BENCHMARKS.md): carry-less multiplication folding, 256 bits at a time
/// where the CPU has VPCLMULQDQ, 128 bits with PCLMULQDQ, slicing-by-8 tables otherwise. The hardware `crc32`
/// instruction is not usable: it computes CRC-32C, which Python's standard library lacks.
public enum CRC32 {
    public enum Implementation: String, Sendable, CaseIterable {
        /// 256-bit folding, VPCLMULQDQ + AVX2 (about 22 GB/s on the 2-core EPYC VMs).
        case vpclmul
        /// 128-bit folding, PCLMULQDQ (about 12 GB/s there).
        case pclmul
        /// Table lookups, 8 bytes per step (about 1.9 GB/s there); runs on any CPU.
        case slicingBy8 = "slicing-by-8"

        public var isSupported: Bool {
            switch self {
            case .vpclmul: aether_crc32_has_vpclmul() != 0
            case .pclmul: aether_crc32_has_pclmul() != 0
            case .slicingBy8: true
            }
        }
    }

    /// The fastest implementation this CPU supports; `checksum` uses it.
    public static let selected: Implementation = Implementation.allCases.first { $0.isSupported } ?? .slicingBy8

    /// The CRC of `bytes`; with `continuing`, the CRC of the bytes checksummed before followed by these.
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        checksum(bytes, using: selected, continuing: crc)
    }

    public static func checksum(
        _ bytes: UnsafeRawBufferPointer, using implementation: Implementation, continuing crc: UInt32 = 0
    ) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        switch implementation {
        case .vpclmul: return aether_crc32_vpclmul(crc, base, bytes.count)
        case .pclmul: return aether_crc32_pclmul(crc, base, bytes.count)
        case .slicingBy8: return aether_crc32_slice8(crc, base, bytes.count)
        }
    }

    /// Copies `source` to `destination` and returns the checksum of the bytes stored, in one pass:
    /// the folding kernels store each vector they load and fold that same register, so the copy
    /// costs next to nothing over the checksum alone (BENCHMARKS.md), and the checksum is exactly
    /// that of what `destination` holds even if `source` changes meanwhile.
    ///
    /// - Parameter destination: `source.count` writable bytes that do not overlap `source`.
    public static func copy(
        _ source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawPointer, continuing crc: UInt32 = 0
    ) -> UInt32 {
        copy(source, to: destination, using: selected, continuing: crc)
    }

    public static func copy(
        _ source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawPointer, using implementation: Implementation,
        continuing crc: UInt32 = 0
    ) -> UInt32 {
        guard let base = source.baseAddress, !source.isEmpty else { return crc }
        switch implementation {
        case .vpclmul: return aether_crc32_copy_vpclmul(crc, destination, base, source.count)
        case .pclmul: return aether_crc32_copy_pclmul(crc, destination, base, source.count)
        case .slicingBy8: return aether_crc32_copy_slice8(crc, destination, base, source.count)
        }
    }
}
