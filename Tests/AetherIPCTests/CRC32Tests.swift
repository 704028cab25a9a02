import Testing

@testable import AetherIPC

@Suite struct CRC32Tests {
    @Test(arguments: CRC32.Implementation.allCases.filter(\.isSupported))
    func checkValueOfTheStandard(_ implementation: CRC32.Implementation) {
        // CRC-32/ISO-HDLC check value: crc32("123456789") == 0xCBF43926 (zlib, Python's zlib.crc32).
        let bytes = Array("123456789".utf8)
        #expect(bytes.withUnsafeBytes { CRC32.checksum($0, using: implementation) } == 0xCBF4_3926)
        #expect([UInt8]().withUnsafeBytes { CRC32.checksum($0, using: implementation) } == 0)
        #expect(
            [UInt8](repeating: 0, count: 32).withUnsafeBytes { CRC32.checksum($0, using: implementation) }
                == 0x190A_55AD)
    }

    /// The folding kernels agree with the table algorithm on every length around their
    /// thresholds (64, 128 bytes and the 16-byte steps) and at every alignment.
    @Test func implementationsAgree() {
        var generator = SystemRandomNumberGenerator()
        let data = (0..<70_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        data.withUnsafeBytes { all in
            var lengths = Array(0...300)
            lengths += [383, 384, 385, 1023, 1024, 1025, 4096, 16_383, 16_384, 65_535, 65_536, 69_990]
            for length in lengths {
                for alignment in 0..<8 where alignment + length <= all.count {
                    let slice = UnsafeRawBufferPointer(rebasing: all[alignment..<(alignment + length)])
                    let reference = CRC32.checksum(slice, using: .slicingBy8)
                    for implementation in CRC32.Implementation.allCases where implementation.isSupported {
                        #expect(
                            CRC32.checksum(slice, using: implementation) == reference,
                            "\(implementation) length \(length) alignment \(alignment)")
                    }
                }
            }
        }
    }
}
