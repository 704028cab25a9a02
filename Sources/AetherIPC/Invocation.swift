/// Request and response messages carried by an instance's rings (docs/handler-protocol.md).
///
/// Encoding writes straight into the ring slot (`RingProducer.tryWrite(length:_:)`), and decoding
/// reads straight out of it, so a request crosses from the gateway to the handler with one copy.

/// A message that does not follow docs/handler-protocol.md. `requestID` is set when the message
/// was long enough to carry one, so the request can still be answered.
public struct InvocationFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: String
    public let requestID: UInt64?

    public init(_ reason: String, requestID: UInt64? = nil) {
        self.reason = reason
        self.requestID = requestID
    }

    public var description: String { "malformed invocation message: \(reason)" }
}

/// One HTTP header as carried in a message: the name as sent, the value as bytes.
public struct InvocationHeader: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

public enum InvocationKind: UInt8, Sendable {
    case request = 1
    case response = 2
}

/// Sizes shared by the gateway and the configuration validator (docs/handler-protocol.md, "Sizes").
public enum InvocationLimits {
    /// Request line plus headers; a larger head is answered with 431.
    public static let maximumHead = 16_384
}

public enum InvocationFormat {
    public static let version: UInt8 = 1
    /// The fixed part of a request message, before method, target, headers and body.
    public static let requestFixedSize = 32
    public static let responseFixedSize = 24
    static let headerEntryFixedSize = 8

    /// Bytes of the header block for `headers`.
    public static func headerBlockSize<Headers: Sequence>(_ headers: Headers) -> (bytes: Int, count: Int)
    where Headers.Element == (name: String, value: String) {
        var bytes = 0
        var count = 0
        for header in headers {
            bytes += headerEntryFixedSize + header.name.utf8.count + header.value.utf8.count
            count += 1
        }
        return (bytes, count)
    }
}

/// Writes little-endian fields and byte runs into a message buffer, front to back.
struct MessageWriter {
    private let base: UnsafeMutableRawPointer
    private(set) var offset = 0

    init(_ buffer: UnsafeMutableRawBufferPointer) { base = buffer.baseAddress! }

    mutating func u8(_ value: UInt8) {
        base.storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
        offset += 1
    }
    mutating func u16(_ value: UInt16) {
        base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
        offset += 2
    }
    mutating func u32(_ value: Int) {
        base.storeBytes(of: UInt32(value).littleEndian, toByteOffset: offset, as: UInt32.self)
        offset += 4
    }
    mutating func u64(_ value: UInt64) {
        base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
        offset += 8
    }
    mutating func text(_ value: String) {
        var value = value
        value.withUTF8 { bytes(UnsafeRawBufferPointer($0)) }
    }
    mutating func bytes(_ value: UnsafeRawBufferPointer) {
        guard let source = value.baseAddress, value.count > 0 else { return }
        (base + offset).copyMemory(from: source, byteCount: value.count)
        offset += value.count
    }
    mutating func headers<Headers: Sequence>(_ headers: Headers)
    where Headers.Element == (name: String, value: String) {
        for header in headers {
            u32(header.name.utf8.count)
            u32(header.value.utf8.count)
            text(header.name)
            text(header.value)
        }
    }
}

/// Reads fields of a message with every length checked against the bytes that are there.
struct MessageReader {
    let bytes: UnsafeRawBufferPointer

    func u8(_ offset: Int) -> UInt8 { bytes.load(fromByteOffset: offset, as: UInt8.self) }
    func u16(_ offset: Int) -> UInt16 {
        UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    func u32(_ offset: Int) -> Int {
        Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }
    func u64(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    func slice(_ offset: Int, _ count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }

    func text(_ offset: Int, _ count: Int) -> String { String(decoding: slice(offset, count), as: UTF8.self) }

    /// Checks the fixed part: size, kind and version; returns the request id.
    func checkEnvelope(kind: InvocationKind, fixedSize: Int) throws(InvocationFormatError) -> UInt64 {
        guard bytes.count >= fixedSize else {
            let id = bytes.count >= 16 ? u64(8) : nil
            throw InvocationFormatError(
                "\(bytes.count) bytes, shorter than the \(fixedSize)-byte fixed part of a \(kind) message",
                requestID: id)
        }
        let id = u64(8)
        guard u8(0) == kind.rawValue else {
            throw InvocationFormatError("kind \(u8(0)), expected \(kind.rawValue) (\(kind))", requestID: id)
        }
        guard u8(1) == InvocationFormat.version else {
            throw InvocationFormatError("version \(u8(1)), expected \(InvocationFormat.version)", requestID: id)
        }
        return id
    }

    /// Decodes `count` header entries that must fill `block` exactly.
    func headers(
        in block: Range<Int>, count: Int, requestID: UInt64
    ) throws(InvocationFormatError)
        -> [InvocationHeader]
    {
        var headers: [InvocationHeader] = []
        headers.reserveCapacity(min(count, 256))
        var offset = block.lowerBound
        for index in 0..<count {
            guard block.upperBound - offset >= InvocationFormat.headerEntryFixedSize else {
                throw InvocationFormatError(
                    "header block ends inside entry \(index) of \(count)", requestID: requestID)
            }
            let nameLength = u32(offset)
            let valueLength = u32(offset + 4)
            offset += InvocationFormat.headerEntryFixedSize
            guard nameLength <= block.upperBound - offset, valueLength <= block.upperBound - offset - nameLength
            else {
                throw InvocationFormatError(
                    "header entry \(index) (\(nameLength) + \(valueLength) bytes) overruns its block",
                    requestID: requestID)
            }
            headers.append(
                InvocationHeader(name: text(offset, nameLength), value: text(offset + nameLength, valueLength)))
            offset += nameLength + valueLength
        }
        guard offset == block.upperBound else {
            throw InvocationFormatError(
                "header block holds \(block.upperBound - offset) bytes after its \(count) entries",
                requestID: requestID)
        }
        return headers
    }
}

/// A request as the handler sees it.
public struct InvocationRequest: Sendable, Equatable {
    public var id: UInt64
    public var method: String
    /// The request line's target: path and optional `?query`, not decoded.
    public var target: String
    public var headers: [InvocationHeader]
    public var body: [UInt8]

    public init(id: UInt64, method: String, target: String, headers: [InvocationHeader] = [], body: [UInt8] = []) {
        self.id = id
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
    }

    /// Size of the message for these parts (`headerBlock` from `InvocationFormat.headerBlockSize`).
    public static func encodedSize(method: String, target: String, headerBlock: Int, body: Int) -> Int {
        InvocationFormat.requestFixedSize + method.utf8.count + target.utf8.count + headerBlock + body
    }

    /// Writes a request message into `buffer` (exactly `encodedSize(...)` bytes) and returns its
    /// CRC-32, copying the body and checksumming it in one pass: what a ring producer's
    /// `tryWrite(length:storing:)` needs.
    public static func encodeWithChecksum<Headers: Sequence>(
        id: UInt64, method: String, target: String, headers: Headers, headerBlock: (bytes: Int, count: Int),
        body: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawBufferPointer
    ) -> UInt32 where Headers.Element == (name: String, value: String) {
        let head = writeHead(
            id: id, method: method, target: target, headers: headers, headerBlock: headerBlock, bodyLength: body.count,
            into: buffer)
        let crc = CRC32.checksum(UnsafeRawBufferPointer(rebasing: buffer[..<head]))
        return CRC32.copy(body, to: buffer.baseAddress! + head, continuing: crc)
    }

    /// Writes a request message into `buffer`, which must be exactly `encodedSize(...)` bytes.
    public static func encode<Headers: Sequence>(
        id: UInt64, method: String, target: String, headers: Headers, headerBlock: (bytes: Int, count: Int),
        body: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawBufferPointer
    ) where Headers.Element == (name: String, value: String) {
        let head = writeHead(
            id: id, method: method, target: target, headers: headers, headerBlock: headerBlock, bodyLength: body.count,
            into: buffer)
        if let source = body.baseAddress, body.count > 0 {
            (buffer.baseAddress! + head).copyMemory(from: source, byteCount: body.count)
        }
    }

    /// Everything before the body; returns where the body starts.
    private static func writeHead<Headers: Sequence>(
        id: UInt64, method: String, target: String, headers: Headers, headerBlock: (bytes: Int, count: Int),
        bodyLength: Int, into buffer: UnsafeMutableRawBufferPointer
    ) -> Int where Headers.Element == (name: String, value: String) {
        var writer = MessageWriter(buffer)
        writer.u8(InvocationKind.request.rawValue)
        writer.u8(InvocationFormat.version)
        writer.u16(0)
        writer.u32(headerBlock.count)
        writer.u64(id)
        writer.u32(method.utf8.count)
        writer.u32(target.utf8.count)
        writer.u32(headerBlock.bytes)
        writer.u32(bodyLength)
        writer.text(method)
        writer.text(target)
        writer.headers(headers)
        precondition(writer.offset + bodyLength == buffer.count, "request message size mismatch")
        return writer.offset
    }

    /// The whole message as bytes.
    public func encoded() -> [UInt8] {
        let pairs = headers.map { (name: $0.name, value: $0.value) }
        let block = InvocationFormat.headerBlockSize(pairs)
        let size = Self.encodedSize(method: method, target: target, headerBlock: block.bytes, body: body.count)
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            body.withUnsafeBytes { body in
                Self.encode(
                    id: id, method: method, target: target, headers: pairs, headerBlock: block, body: body,
                    into: UnsafeMutableRawBufferPointer(buffer))
            }
            count = size
        }
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(InvocationFormatError) -> InvocationRequest {
        let reader = MessageReader(bytes: bytes)
        let id = try reader.checkEnvelope(kind: .request, fixedSize: InvocationFormat.requestFixedSize)
        let headerCount = reader.u32(4)
        let methodLength = reader.u32(16)
        let targetLength = reader.u32(20)
        let headersLength = reader.u32(24)
        let bodyLength = reader.u32(28)
        let total = InvocationFormat.requestFixedSize + methodLength + targetLength + headersLength + bodyLength
        guard total == bytes.count else {
            throw InvocationFormatError(
                "lengths add up to \(total) bytes but the message has \(bytes.count)", requestID: id)
        }
        var offset = InvocationFormat.requestFixedSize
        let method = reader.text(offset, methodLength)
        offset += methodLength
        let target = reader.text(offset, targetLength)
        offset += targetLength
        let headers = try reader.headers(in: offset..<(offset + headersLength), count: headerCount, requestID: id)
        offset += headersLength
        return InvocationRequest(
            id: id, method: method, target: target, headers: headers, body: Array(reader.slice(offset, bodyLength)))
    }
}

/// A response as the handler sends it.
public struct InvocationResponse: Sendable, Equatable {
    public var id: UInt64
    public var status: UInt16
    public var headers: [InvocationHeader]
    public var body: [UInt8]

    public init(id: UInt64, status: UInt16, headers: [InvocationHeader] = [], body: [UInt8] = []) {
        self.id = id
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func encodedSize(headerBlock: Int, body: Int) -> Int {
        InvocationFormat.responseFixedSize + headerBlock + body
    }

    public func encodedSize() -> Int {
        let block = InvocationFormat.headerBlockSize(headers.lazy.map { (name: $0.name, value: $0.value) })
        return Self.encodedSize(headerBlock: block.bytes, body: body.count)
    }

    /// Writes the message into `buffer`, which must be exactly `encodedSize()` bytes.
    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        let pairs = headers.lazy.map { (name: $0.name, value: $0.value) }
        let block = InvocationFormat.headerBlockSize(pairs)
        var writer = MessageWriter(buffer)
        writer.u8(InvocationKind.response.rawValue)
        writer.u8(InvocationFormat.version)
        writer.u16(status)
        writer.u32(block.count)
        writer.u64(id)
        writer.u32(block.bytes)
        writer.u32(body.count)
        writer.headers(pairs)
        body.withUnsafeBytes { writer.bytes($0) }
        precondition(writer.offset == buffer.count, "response message size mismatch")
    }

    public func encoded() -> [UInt8] {
        let size = encodedSize()
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            encode(into: UnsafeMutableRawBufferPointer(buffer))
            count = size
        }
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(InvocationFormatError) -> InvocationResponse {
        let view = try InvocationResponseView(bytes)
        return InvocationResponse(
            id: view.id, status: view.status, headers: view.headers, body: Array(view.body))
    }
}

/// A decoded response that still points into the ring: valid only inside the read closure.
/// The gateway copies the body once, straight into its output buffer.
public struct InvocationResponseView {
    public let id: UInt64
    public let status: UInt16
    public let headers: [InvocationHeader]
    public let body: UnsafeRawBufferPointer

    public init(_ bytes: UnsafeRawBufferPointer) throws(InvocationFormatError) {
        let reader = MessageReader(bytes: bytes)
        let id = try reader.checkEnvelope(kind: .response, fixedSize: InvocationFormat.responseFixedSize)
        let status = reader.u16(2)
        guard (100...599).contains(status) else {
            throw InvocationFormatError("status \(status), expected 100...599", requestID: id)
        }
        let headerCount = reader.u32(4)
        let headersLength = reader.u32(16)
        let bodyLength = reader.u32(20)
        let total = InvocationFormat.responseFixedSize + headersLength + bodyLength
        guard total == bytes.count else {
            throw InvocationFormatError(
                "lengths add up to \(total) bytes but the message has \(bytes.count)", requestID: id)
        }
        let start = InvocationFormat.responseFixedSize
        self.id = id
        self.status = status
        self.headers = try reader.headers(in: start..<(start + headersLength), count: headerCount, requestID: id)
        self.body = reader.slice(start + headersLength, bodyLength)
    }
}
