import Testing

@testable import AetherIPC

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

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

    /// Copy + checksum in one pass (the producer's `tryWrite(_:)`) against the table algorithm:
    /// every length up to 300 and around the kernels' block sizes with all 64 x 64 source and
    /// destination alignments, and 200 random lengths up to 200000 with every source alignment
    /// and every destination alignment (paired two ways). Each kernel must store exactly the
    /// source bytes, touch none of the 64 bytes on either side, and return the reference checksum.
    @Test func copyingKernelsAgree() {
        var generator = SystemRandomNumberGenerator()
        let maximumLength = 200_000
        let source = (0..<(maximumLength + 64)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let guardByte: Int32 = 0xC3
        let guards = [UInt8](repeating: UInt8(guardByte), count: 64)
        var lengths = Array(0...300) + [383, 384, 385, 1023, 1024, 1025]
        let exhaustive = lengths.count
        lengths += [65_535, 65_536, 65_537, maximumLength]
        lengths += (0..<200).map { _ in Int.random(in: 0...maximumLength, using: &generator) }
        let implementations = CRC32.Implementation.allCases.filter(\.isSupported)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: maximumLength + 64 + 128, alignment: 64)
        defer { destination.deallocate() }
        source.withUnsafeBytes { all in
            guards.withUnsafeBytes { guards in
                for (index, length) in lengths.enumerated() {
                    for (sourceAlignment, destinationAlignment) in Self.alignments(all: index < exhaustive, seed: index)
                    {
                        let slice = UnsafeRawBufferPointer(rebasing: all[sourceAlignment..<(sourceAlignment + length)])
                        let reference = CRC32.checksum(slice, using: .slicingBy8)
                        let start = destination + 64 + destinationAlignment
                        for implementation in implementations {
                            memset(start - 64, guardByte, length + 128)
                            let checksum = CRC32.copy(slice, to: start, using: implementation)
                            let intact =
                                memcmp(start - 64, guards.baseAddress!, 64) == 0
                                && memcmp(start + length, guards.baseAddress!, 64) == 0
                                && (length == 0 || memcmp(start, slice.baseAddress!, length) == 0)
                            if checksum != reference || !intact {
                                let detail: String =
                                    "\(implementation) length \(length) source +\(sourceAlignment) destination "
                                    + "+\(destinationAlignment): checksum \(checksum) (expected \(reference)), "
                                    + "copy and guards intact: \(intact)"
                                Issue.record("\(detail)")
                                return
                            }
                        }
                    }
                }
            }
        }
    }

    /// (source, destination) alignment pairs: all 64 x 64, or each alignment of either side once
    /// with a partner that rotates with `seed`.
    private static func alignments(all: Bool, seed: Int) -> [(Int, Int)] {
        var pairs: [(Int, Int)] = []
        for first in 0..<64 {
            if all {
                for second in 0..<64 { pairs.append((first, second)) }
            } else {
                pairs.append((first, (first * 7 + seed) % 64))
                pairs.append(((first * 13 + seed) % 64, first))
            }
        }
        return pairs
    }
}
