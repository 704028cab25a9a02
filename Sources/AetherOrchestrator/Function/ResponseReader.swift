import AetherIPC
import AetherSystem
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Reads an sdk instance's response ring on an event loop, not on a thread of its own: the
/// handler rings the instance's bell, an eventfd handed over with ATTACH (docs/shm-layout.md,
/// "Bell"), which the loop's epoll watches. Each response then goes from the handler's write to
/// the loop that answers it with one wake-up, where a reader thread took two (its futex, then
/// the hop to the loop) and a context switch more on two vCPUs.
///
/// A copy in the warm pool gets its reader there (`start(on:for: nil)`), before it has an
/// instance: a start then only binds it (`bind`).
///
/// A handler that answers plain `ATTACHED` (a runtime from before the bell, e.g. a Swift
/// handler built against an older AetherHandler) wakes the ring's futex instead: for it the
/// reader becomes a thread asleep on that futex (`handlerUsesFutex`), as every reader was before.
final class ResponseReader: Sendable {
    /// Handed to the handler with ATTACH, with the region.
    let bell: EventBell
    /// Used only on `loop`.
    private let responses: RingConsumer
    /// The instance whose responses these are; nil while the copy waits in the pool (it has no
    /// request to answer, so nothing arrives before `bind`).
    private let owner = Mutex<InstanceHandle?>(nil)
    private struct Watch {
        var loop: (any EventLoop)?
        var channel: (any Channel)?
        var recheck: RepeatedTask?
        var stopped = false
        /// The ring is poisoned: never read again.
        var ringFailed = false
        /// Read by a thread asleep on the futex, not on the loop.
        var futex = false
    }
    private let watch = Mutex(Watch())

    /// The most responses read in one go before the loop runs its other work.
    static let batch = 64
    /// How often the ring is read without a bell: the handler's process writes the words that
    /// decide whether it rings (a hostile or broken one can clear `consumer_sleeping`), so a
    /// missed ring costs at most this, as the futex reader's 100 ms timeout did.
    static let recheck = TimeAmount.milliseconds(100)

    init(region: SharedMemoryRegion) throws(SharedMemoryError) {
        bell = try EventBell()
        responses = region.consumer(ring: 1)
    }

    /// Watches the bell on `loop`; `handle` is the instance (nil: a copy parked in the pool).
    func start(on loop: any EventLoop, for handle: InstanceHandle?) {
        if let handle { bind(to: handle) }
        watch.withLock { $0.loop = loop }
        // NIO closes its descriptor with the channel; ours stays for ATTACH and for draining.
        let copy = dup(bell.descriptor)
        guard copy >= 0 else {
            failed("cannot watch its response bell: dup: \(String(cString: strerror(errno)))")
            return
        }
        NIOPipeBootstrap(group: loop)
            .channelOption(.maxMessagesPerRead, value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture(withResultOf: {
                    try channel.pipeline.syncOperations.addHandler(BellHandler(reader: self))
                })
            }
            .takingOwnershipOfDescriptor(input: copy)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    let stopped = watch.withLock { watch in
                        watch.channel = channel
                        return watch.stopped || watch.futex
                    }
                    if stopped {
                        channel.close(promise: nil)
                    } else {
                        let recheck = loop.scheduleRepeatedTask(initialDelay: Self.recheck, delay: Self.recheck) {
                            [self] _ in read()
                        }
                        watch.withLock { $0.recheck = recheck }
                        // What arrived before the channel was registered: the handler does not
                        // ring until the first `announceSleep`.
                        read()
                    }
                case .failure(let error):
                    close(copy)
                    failed("cannot watch its response bell: \(error)")
                }
            }
    }

    /// The instance the copy became; before its first request is written.
    func bind(to handle: InstanceHandle) {
        owner.withLock { $0 = handle }
    }

    /// The handler answered plain `ATTACHED`: it wakes the futex, not the bell. Before its first
    /// request is written.
    func handlerUsesFutex() {
        let loop = watch.withLock { watch in
            watch.futex = true
            return watch.loop
        }
        let run: @Sendable () -> Void = { [self] in
            // The loop no longer reads the ring (on the loop: no read of its is under way).
            unwatch()
            readOnThread()
        }
        if let loop { loop.execute(run) } else { run() }
    }

    /// The instance ended (or the parked copy was dropped): what it published is read, then
    /// the bell is no longer watched and the instance let go.
    func stop() {
        let (loop, futex) = watch.withLock { watch in
            watch.stopped = true
            return (watch.loop, watch.futex)
        }
        // The thread reads on until it sees `stopped` (within its 100 ms wait).
        guard let loop, !futex else { return }
        loop.execute { [self] in
            read()
            unwatch()
            owner.withLock { $0 = nil }
        }
    }

    /// Stops watching the bell and re-reading the ring. On the loop.
    private func unwatch() {
        let (channel, recheck) = watch.withLock { watch in
            defer { (watch.channel, watch.recheck) = (nil, nil) }
            return (watch.channel, watch.recheck)
        }
        recheck?.cancel()
        channel?.close(promise: nil)
    }

    /// Reads what the ring holds, then asks the handler to ring for the next response. On the
    /// loop.
    fileprivate func read() {
        guard !watch.withLock({ $0.ringFailed || $0.futex }) else { return }
        responses.wokeUp()
        var read = 0
        while true {
            do throws(SharedMemoryError) {
                while let message = try responses.tryReadCopy(Self.copyChecking) {
                    deliver(message)
                    read += 1
                    if read == Self.batch {
                        // A handler answering without pause must not keep the loop from its
                        // connections: the rest is read in a task of its own.
                        watch.withLock { $0.loop }?.execute { [self] in self.read() }
                        return
                    }
                }
            } catch {
                guard let handle = owner.withLock({ $0 }) else { return }
                if report(error, to: handle) { continue }
                // The ring is poisoned: it is not read again.
                watch.withLock { $0.ringFailed = true }
                unwatch()
                return
            }
            if responses.announceSleep() { return }
        }
    }

    /// The reader of a handler that wakes the futex: a thread that sleeps on it (at once, never
    /// polling: on two vCPUs a polling reader takes the CPU the event loops and the handler
    /// need) until the instance has ended.
    private func readOnThread() {
        responses.waitPolicy = .sleepAtOnce
        BackgroundThread.start(name: "ring-futex") { [self] in
            while !watch.withLock({ $0.stopped }) {
                do throws(SharedMemoryError) {
                    deliver(try responses.read(timeout: .milliseconds(100)) { Self.copy($0) })
                } catch .timedOut {
                    continue
                } catch {
                    guard let handle = owner.withLock({ $0 }), report(error, to: handle) else { return }
                }
            }
            owner.withLock { $0 = nil }
        }
    }

    /// Tells `handle` a read failed. True when the ring can still be read (a record that failed
    /// its CRC was skipped); false when it is poisoned.
    private func report(_ error: SharedMemoryError, to handle: InstanceHandle) -> Bool {
        if case .corruptedData(let offset, let stored, let computed) = error {
            handle.events.responseCorrupted(instance: handle.id)
            handle.events.responseRingFailed(
                instance: handle.id,
                reason:
                    "its response ring carried a corrupted message (offset \(offset), crc stored \(stored), computed \(computed))"
            )
            return true
        }
        handle.events.responseRingFailed(instance: handle.id, reason: "its response ring failed: \(error)")
        return false
    }

    /// A response message copied out of the ring (which it must leave at once: the handler
    /// writes the next one there) with its CRC32 computed in the same pass, for `tryReadCopy`.
    private static func copyChecking(_ payload: UnsafeRawBufferPointer) -> (ByteBuffer, checksum: UInt32) {
        var checksum = CRC32.checksum(UnsafeRawBufferPointer(start: nil, count: 0))
        var message = ByteBufferAllocator().buffer(capacity: payload.count)
        guard !payload.isEmpty else { return (message, checksum) }
        message.writeWithUnsafeMutableBytes(minimumWritableBytes: payload.count) { destination in
            checksum = CRC32.copy(payload, to: destination.baseAddress!)
            return payload.count
        }
        return (message, checksum)
    }

    /// A response message copied out of the ring after its checksum was checked (`read`).
    private static func copy(_ payload: UnsafeRawBufferPointer) -> ByteBuffer {
        var message = ByteBufferAllocator().buffer(capacity: payload.count)
        message.writeBytes(payload)
        return message
    }

    private func deliver(_ message: ByteBuffer) {
        // Nothing is delivered before `bind`: a parked copy was sent no request.
        guard let handle = owner.withLock({ $0 }) else { return }
        let (events, id) = (handle.events, handle.id)
        switch HandlerResponse.decoding(message) {
        case .success(let (requestID, response)):
            events.responseArrived(instance: id, requestID: requestID, response: response)
        case .failure(let error):
            events.malformedResponse(instance: id, requestID: error.requestID, reason: error.reason)
        }
    }

    private func failed(_ reason: String) {
        guard let handle = owner.withLock({ $0 }) else { return }
        handle.events.responseRingFailed(instance: handle.id, reason: reason)
    }
}

/// The bell's channel: each readable event of the eventfd is a wake-up.
private final class BellHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let reader: ResponseReader

    init(reader: ResponseReader) {
        self.reader = reader
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // NIO read the counter back to zero; its value does not matter.
        reader.read()
    }
}

/// An sdk instance's rings and the reader of its responses, made before ATTACH, which carries
/// the region and the reader's bell.
struct InstanceRings: Sendable {
    let region: SharedMemoryRegion
    let reader: ResponseReader

    /// A new anonymous region (a memfd: nobody else can open it by name) and its reader.
    static func make(name: String, ringCapacity: Int) throws(SharedMemoryError) -> InstanceRings {
        let region = try SharedMemoryRegion.create(name: name, ringCapacity: ringCapacity, anonymous: true)
        return InstanceRings(region: region, reader: try ResponseReader(region: region))
    }

    /// The ATTACH line and the descriptors it carries, in this order: the bell, the region. The
    /// region comes last, where runtimes from before the bell take it.
    var attach: (text: String, passing: [CInt]) {
        ("ATTACH \(region.name)\n", [reader.bell.descriptor, region.descriptor])
    }

    /// What a handler answers ATTACH with: `ATTACHED bell` once it rings the bell, plain
    /// `ATTACHED` when it wakes the futex (a runtime from before the bell).
    static let attachedWithBell = "ATTACHED bell"
    static let attached = "ATTACHED"
}
