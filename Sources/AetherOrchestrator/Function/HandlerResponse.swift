import AetherIPC
import NIOCore

/// A handler's answer to one request, copied out of its response ring: the status and headers
/// as the handler wrote them (the gateway judges them as HTTP) and the body.
struct HandlerResponse: Sendable {
    var status: Int
    var headers: [InvocationHeader]
    var body: ByteBuffer

    /// Copies a decoded message out of the ring (the view is valid only while it is read).
    init(_ view: InvocationResponseView) {
        status = Int(view.status)
        headers = view.headers
        var body = ByteBufferAllocator().buffer(capacity: view.body.count)
        body.writeBytes(view.body)
        self.body = body
    }
}
