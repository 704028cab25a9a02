import AetherIPC
import NIOCore

/// A handler's answer to one request, copied out of its response ring: the status and headers
/// as the handler wrote them (the gateway judges them as HTTP) and the body.
struct HandlerResponse: Sendable {
    var status: Int
    var headers: [InvocationHeader]
    var body: ByteBuffer

    /// Decodes a response message already copied out of the ring (`ResponseReader`): the body
    /// stays a slice of `message`, not another copy.
    static func decoding(
        _ message: ByteBuffer
    ) -> Result<(id: UInt64, response: HandlerResponse), InvocationFormatError> {
        let decoded = message.withUnsafeReadableBytes { bytes in
            Result { () throws(InvocationFormatError) in
                let view = try InvocationResponseView(bytes)
                return (view.id, Int(view.status), view.headers, view.body.count)
            }
        }
        return decoded.map { id, status, headers, bodyLength in
            // The body is the message's last bytes (docs/handler-protocol.md, "Response").
            let body = message.getSlice(at: message.writerIndex - bodyLength, length: bodyLength)!
            return (id, HandlerResponse(status: status, headers: headers, body: body))
        }
    }
}
