import AetherIPC
import Testing

/// The request and response messages of docs/handler-protocol.md, checked against the same test
/// vectors as sdk/python/tests/test_protocol.py.
@Suite struct InvocationCodecTests {
    static func bytes(_ hex: String) -> [UInt8] {
        let digits = Array(hex.filter { !$0.isWhitespace })
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
    }

    static let requestVector = bytes(
        """
        01010000 01000000 0700000000000000 03000000 0d000000 0d000000 00000000
        474554 2f68656c6c6f3f6e616d653d78 04000000 01000000 486f7374 61
        """)
    static let responseVector = bytes(
        """
        0201c800 01000000 0700000000000000 24000000 0b000000
        0c000000 10000000 436f6e74656e742d54797065 6170706c69636174696f6e2f6a736f6e
        7b226f6b223a747275657d
        """)

    @Test func requestMatchesTheDocumentedBytes() throws {
        let request = InvocationRequest(
            id: 7, method: "GET", target: "/hello?name=x", headers: [InvocationHeader(name: "Host", value: "a")])
        #expect(request.encoded() == Self.requestVector)
        let decoded = try Self.requestVector.withUnsafeBytes { raw throws(InvocationFormatError) in
            try InvocationRequest.decode(raw)
        }
        #expect(decoded == request)
    }

    @Test func responseMatchesTheDocumentedBytes() throws {
        let response = InvocationResponse(
            id: 7, status: 200, headers: [InvocationHeader(name: "Content-Type", value: "application/json")],
            body: Array(#"{"ok":true}"#.utf8))
        #expect(response.encoded() == Self.responseVector)
        let decoded = try Self.responseVector.withUnsafeBytes { raw throws(InvocationFormatError) in
            try InvocationResponse.decode(raw)
        }
        #expect(decoded == response)
    }

    @Test func randomRequestsAndResponsesRoundTrip() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<60 {
            let headers = (0..<Int.random(in: 0...20, using: &generator)).map { index in
                InvocationHeader(name: "X-H\(index)", value: String(repeating: "v", count: Int.random(in: 0...300)))
            }
            let body = (0..<Int.random(in: 0...20_000, using: &generator)).map { _ in UInt8.random(in: 0...255) }
            let request = InvocationRequest(
                id: UInt64.random(in: 0...UInt64.max), method: ["GET", "POST", "PATCH"].randomElement()!,
                target: "/p/\(Int.random(in: 0...1000))?q=é", headers: headers, body: body)
            let encodedRequest = request.encoded()
            #expect(
                try encodedRequest.withUnsafeBytes { raw throws(InvocationFormatError) in
                    try InvocationRequest.decode(raw)
                } == request)
            let response = InvocationResponse(
                id: request.id, status: UInt16.random(in: 100...599), headers: headers, body: body)
            #expect(
                try response.encoded().withUnsafeBytes { raw throws(InvocationFormatError) in
                    try InvocationResponse.decode(raw)
                } == response)
        }
    }

    /// The one-pass encoder (header fields, then body copied while checksummed) writes the same
    /// bytes as the plain one and returns the CRC of all of them.
    @Test func encodingWithChecksumMatches() {
        for bodyLength in [0, 1, 7, 31, 32, 33, 255, 4096, 65_537, 300_001] {
            let body = (0..<bodyLength).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let request = InvocationRequest(
                id: 99, method: "POST", target: "/x?y=1",
                headers: [InvocationHeader(name: "Content-Type", value: "application/octet-stream")], body: body)
            let expected = request.encoded()
            let pairs = request.headers.map { (name: $0.name, value: $0.value) }
            let block = InvocationFormat.headerBlockSize(pairs)
            var buffer = [UInt8](repeating: 0xAA, count: expected.count)
            let crc = buffer.withUnsafeMutableBytes { out in
                body.withUnsafeBytes { source in
                    InvocationRequest.encodeWithChecksum(
                        id: 99, method: "POST", target: "/x?y=1", headers: pairs, headerBlock: block, body: source,
                        into: out)
                }
            }
            #expect(buffer == expected, "body of \(bodyLength) bytes")
            #expect(crc == expected.withUnsafeBytes { CRC32.checksum($0) }, "body of \(bodyLength) bytes")
        }
    }

    /// Every way a message can lie about itself is a typed error, never a crash or an overread.
    @Test func malformedMessagesAreTypedErrors() {
        func requestError(_ bytes: [UInt8]) -> InvocationFormatError? {
            bytes.withUnsafeBytes { raw -> InvocationFormatError? in
                do throws(InvocationFormatError) {
                    _ = try InvocationRequest.decode(raw)
                    return nil
                } catch {
                    return error
                }
            }
        }
        func responseError(_ bytes: [UInt8]) -> InvocationFormatError? {
            bytes.withUnsafeBytes { raw -> InvocationFormatError? in
                do throws(InvocationFormatError) {
                    _ = try InvocationResponse.decode(raw)
                    return nil
                } catch {
                    return error
                }
            }
        }
        // Every truncation of a valid request.
        for length in 0..<Self.requestVector.count {
            let error = requestError(Array(Self.requestVector[..<length]))
            #expect(error != nil, "truncated to \(length) bytes")
            if length >= 16 { #expect(error?.requestID == 7) }
        }
        var wrongKind = Self.requestVector
        wrongKind[0] = 2
        #expect(requestError(wrongKind)?.reason.contains("kind 2") == true)
        var wrongVersion = Self.requestVector
        wrongVersion[1] = 9
        #expect(requestError(wrongVersion)?.reason.contains("version 9") == true)
        var hugeMethod = Self.requestVector
        hugeMethod[19] = 0xff
        #expect(requestError(hugeMethod) != nil)
        var moreHeaders = Self.requestVector
        moreHeaders[4] = 2
        #expect(requestError(moreHeaders)?.reason.contains("header block") == true)
        var fewerHeaders = Self.requestVector
        fewerHeaders[4] = 0
        #expect(requestError(fewerHeaders)?.reason.contains("after its 0 entries") == true)
        var longHeaderName = Self.requestVector
        longHeaderName[48] = 0xff
        #expect(requestError(longHeaderName)?.reason.contains("overruns") == true)
        #expect(requestError(Self.requestVector + [0]) != nil)

        for length in 0..<Self.responseVector.count {
            #expect(responseError(Array(Self.responseVector[..<length])) != nil, "truncated to \(length) bytes")
        }
        var badStatus = Self.responseVector
        badStatus[2] = 0x58
        badStatus[3] = 0x02  // 600
        #expect(responseError(badStatus)?.reason.contains("status 600") == true)
        #expect(responseError(Self.requestVector)?.reason.contains("kind 1") == true)
    }
}
