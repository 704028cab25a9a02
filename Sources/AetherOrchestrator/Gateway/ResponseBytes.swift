import NIOCore
import NIOHTTP1

/// A response head as the bytes that go on the wire, written by the gateway itself instead of
/// NIO's HTTPResponseEncoder: the answer then leaves as one buffer (a small body copied in after
/// its head) in one write, instead of three writes (head, body, end) through the encoder, which
/// builds another buffer for the head and checks the framing headers again. The framing was
/// decided by `GatewayResponse.wire(answering:)`; this only writes it out, the same bytes NIO's
/// encoder would: `HTTP/1.1 200 OK`, then `name: value` lines, then an empty line.
enum ResponseBytes {
    /// A body up to this size is copied after the head (one buffer, one iovec); a larger one is
    /// written as its own buffer (NIO gathers both into one writev).
    static let copiedBody = 16 * 1024

    /// The head, and the body when it is small, in one buffer; the body on its own when it is not.
    static func encode(
        head: ResponseHead, body: ByteBuffer?, allocator: ByteBufferAllocator
    ) -> (first: ByteBuffer, body: ByteBuffer?) {
        let bodyBytes = body?.readableBytes ?? 0
        let copied = bodyBytes <= copiedBody
        var buffer = allocator.buffer(capacity: 64 + headerBytes(head.headers) + (copied ? bodyBytes : 0))
        write(statusLine: head.version, head.status, into: &buffer)
        for (name, value) in head.headers {
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
        guard var body, bodyBytes > 0 else { return (buffer, nil) }
        if copied {
            buffer.writeBuffer(&body)
            return (buffer, nil)
        }
        return (buffer, body)
    }

    /// `HTTP/1.x 100 Continue` and the empty line.
    static func continueHead(version: HTTPVersion, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 32)
        write(statusLine: version, .continue, into: &buffer)
        buffer.writeStaticString("\r\n")
        return buffer
    }

    private static func headerBytes(_ headers: ResponseHeaders) -> Int {
        headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
    }

    private static func write(
        statusLine version: HTTPVersion, _ status: HTTPResponseStatus, into buffer: inout ByteBuffer
    ) {
        if status == .ok && version == .http1_1 {
            buffer.writeStaticString("HTTP/1.1 200 OK\r\n")
            return
        }
        if version.major == 1 && version.minor == 0 {
            buffer.writeStaticString("HTTP/1.0 ")
        } else if version.major == 1 && version.minor == 1 {
            buffer.writeStaticString("HTTP/1.1 ")
        } else {
            buffer.writeString("HTTP/\(version.major).\(version.minor) ")
        }
        buffer.writeString(String(status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
    }
}
