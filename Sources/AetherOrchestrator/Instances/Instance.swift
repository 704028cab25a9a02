import AetherCore
import AetherIPC
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One running handler process of a function. Its mutable fields are guarded by the owning
/// `FunctionRuntime`'s lock; the rings are used by exactly one thread each (requests are written
/// under that lock, responses are read by the instance's reader thread).
final class Instance: @unchecked Sendable {
    enum Phase: String {
        /// Spawned, no READY yet.
        case starting
        /// READY received, ATTACH sent, waiting for ATTACHED (sdk only).
        case attaching
        /// Accepting requests.
        case serving
        /// Told to stop (SIGTERM sent) or killed; no new requests.
        case stopping
        /// The process has been reaped.
        case exited
    }

    /// How an instance came to be.
    enum Origin: String {
        /// A new process that ran the handler's initialisation.
        case spawn
        /// A copy of the function's CRIU snapshot.
        case restore
    }

    let number: Int
    let origin: Origin
    /// 0 while a restore is still running.
    var pid: pid_t
    let startedAt: NIODeadline
    /// Shared-memory rings (sdk handlers only).
    let region: SharedMemoryRegion?
    let requests: RingProducer?
    let responses: RingConsumer?

    var phase: Phase = .starting
    /// The instance's memory cgroup (`memory_limit_mb`).
    var cgroup: String?
    /// The port a process handler was told to bind (AETHER_LISTEN_PORT).
    var listenPort: UInt16?
    /// The AETHER_SOCKET connection once the handler has connected.
    var control: (any Channel)?
    var readyAt: NIODeadline?
    var inFlight: [UInt64: Invocation] = [:]
    var nextRequestID: UInt64 = 1
    /// The request ring had no room for the last request; nothing more is sent until a response
    /// shows that the handler is consuming again.
    var requestRingFull = false
    var served = 0
    var lastActive: NIODeadline
    /// Why the instance is being stopped, when it is not a plain shutdown (reported on exit).
    var stopReason: String?
    /// Startup failure to report if the process ends before it is ready.
    var startupFailure: HandlerError?
    /// Set by the reader thread's owner to end the reader loop.
    let readerShouldStop = Atomic<Bool>(false)

    /// Our end of a restored copy's control connection (spawned instances use AETHER_SOCKET).
    var controlDescriptor: CInt = -1
    /// From spawn or restore to serving, in milliseconds.
    var startupMilliseconds: Double?
    /// criu's part of a restore, in milliseconds.
    var restoreMilliseconds: Double?

    init(number: Int, pid: pid_t, origin: Origin, region: SharedMemoryRegion?) {
        self.number = number
        self.origin = origin
        self.pid = pid
        self.region = region
        requests = region?.producer(ring: 0)
        responses = region?.consumer(ring: 1)
        startedAt = .now()
        lastActive = .now()
    }

    var isAvailable: Bool { phase == .serving }
}

/// One HTTP request from arrival to response. Fields are guarded by the runtime's lock.
final class Invocation: @unchecked Sendable {
    let head: HTTPRequestHead
    let body: ByteBuffer?
    let promise: EventLoopPromise<GatewayResponse>
    let arrived: NIODeadline
    var timeoutTask: Scheduled<Void>?
    var requestID: UInt64 = 0
    var instance: Instance?
    /// It waited for its instance to start (a cold start), and how that instance started.
    var coldStart: (origin: Instance.Origin, milliseconds: Double, restoreMilliseconds: Double?)?

    init(head: HTTPRequestHead, body: ByteBuffer?, promise: EventLoopPromise<GatewayResponse>) {
        self.head = head
        self.body = body
        self.promise = promise
        arrived = .now()
    }
}

/// What the gateway sends back for one request.
struct GatewayResponse: Sendable {
    var status: HTTPResponseStatus
    var headers: HTTPHeaders
    var body: ByteBuffer?

    /// A response made by the orchestrator itself (errors), with a JSON body naming the problem.
    static func error(
        _ status: HTTPResponseStatus, _ message: String, extraHeaders: [(String, String)] = []
    )
        -> GatewayResponse
    {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        let text = "{\"error\":\(JSONText.quoted(message))}"
        var buffer = ByteBufferAllocator().buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        return GatewayResponse(status: status, headers: headers, body: buffer)
    }
}
