import Foundation
import Testing

@testable import AetherOrchestrator

/// The deployed state's handler digests: FIPS 180-4 test vectors, and the same digest whatever
/// pieces the bytes arrive in.
@Suite struct SHA256Tests {
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        ),
        (
            "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
        ),
    ])
    func knownVectors(input: String, digest: String) {
        #expect(SHA256.hex(of: Array(input.utf8)) == digest)
    }

    @Test func aMillionAs() {
        #expect(
            SHA256.hex(of: [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func piecesGiveTheSameDigestAsTheWhole() {
        // Lengths around the block (64) and padding (56) boundaries.
        for length in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000] {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let whole = SHA256.hex(of: bytes)
            for piece in [1, 3, 63, 64, 65] {
                var hash = SHA256()
                var offset = 0
                while offset < bytes.count {
                    hash.update(bytes[offset..<min(offset + piece, bytes.count)])
                    offset += piece
                }
                #expect(hash.finalize().hex == whole, "length \(length), pieces of \(piece)")
            }
        }
    }

    @Test func fileDigestIsTheDigestOfItsBytes() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("aether-sha-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Larger than one read (64 KiB) and not a multiple of a block.
        let bytes = (0..<200_003).map { UInt8(truncatingIfNeeded: $0 &* 7919) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(try SHA256.hex(ofFile: path) == SHA256.hex(of: bytes))
        #expect(throws: (any Error).self) { try SHA256.hex(ofFile: path + ".missing") }
    }
}
