import AetherIPC
import AetherSystem
import Synchronization

/// The one thread of an sdk instance: it waits on the response ring (poll, then futex) and
/// hands each decoded response to the instance's function, until the instance has ended.
///
/// A copy in the warm pool gets its reader there (`waiting(on:)`), before it has an instance:
/// a start then only binds it (`bind`), so no thread is made on the request path, where making
/// one (and its first run) competed with the copy and the event loop for the CPUs while the
/// first response was on its way (about 0.2 ms of a 2-vCPU start, measured).
final class ResponseReader: Sendable {
    private let responses: RingConsumer
    /// The instance whose responses these are; nil while the copy waits in the pool (stopped:
    /// it has no request to answer, so nothing arrives before `bind`).
    private let owner = Mutex<InstanceHandle?>(nil)
    /// Set when a pooled copy is dropped before it had an instance.
    private let stopped = Atomic<Bool>(false)

    private init(responses: RingConsumer, owner: InstanceHandle?) {
        self.responses = responses
        // Sleep at once, never poll: on two vCPUs a polling reader takes the CPU the event loops
        // and the handler need. Measured against the 50 µs poll (BENCHMARKS.md, 2026-12-02): c=1
        // p50 86-100 -> 78-82 µs and CPU per answer 135 -> 85 µs, c=16 +15% req/s, c=64 equal.
        responses.waitPolicy = .sleepAtOnce
        self.owner.withLock { $0 = owner }
    }

    /// Starts the reader of `handle`'s response ring.
    static func start(for handle: InstanceHandle) {
        guard let responses = handle.responses else { return }
        ResponseReader(responses: responses, owner: handle).run(name: "ring-\(handle.id)")
    }

    /// Starts a reader of `region`'s response ring for a copy waiting in the pool; its instance
    /// comes with `bind`.
    static func waiting(on region: SharedMemoryRegion) -> ResponseReader {
        let reader = ResponseReader(responses: region.consumer(ring: 1), owner: nil)
        reader.run(name: "ring-pool")
        return reader
    }

    /// The instance the copy became; before its first request is written.
    func bind(to handle: InstanceHandle) {
        owner.withLock { $0 = handle }
    }

    /// The copy was dropped in the pool: the thread ends (within its 100 ms wait).
    func stop() {
        stopped.store(true, ordering: .releasing)
    }

    private var shouldStop: Bool {
        stopped.load(ordering: .acquiring)
            || owner.withLock { $0 }?.readerShouldStop.load(ordering: .acquiring) == true
    }

    private func run(name: String) {
        BackgroundThread.start(name: name) { [self] in
            while !shouldStop {
                do throws(SharedMemoryError) {
                    try responses.read(timeout: .milliseconds(100)) { bytes in
                        // Nothing is delivered before `bind`: a parked copy was sent no request.
                        guard let handle = owner.withLock({ $0 }) else { return }
                        let (events, id) = (handle.events, handle.id)
                        do throws(InvocationFormatError) {
                            let view = try InvocationResponseView(bytes)
                            events.responseArrived(
                                instance: id, requestID: view.id, response: HandlerResponse(view))
                        } catch {
                            events.malformedResponse(instance: id, requestID: error.requestID, reason: error.reason)
                        }
                    }
                } catch .timedOut {
                    continue
                } catch {
                    guard let handle = owner.withLock({ $0 }) else { return }
                    if case .corruptedData(let offset, let stored, let computed) = error {
                        handle.events.responseCorrupted(instance: handle.id)
                        handle.events.responseRingFailed(
                            instance: handle.id,
                            reason:
                                "its response ring carried a corrupted message (offset \(offset), crc stored \(stored), computed \(computed))"
                        )
                        continue
                    }
                    handle.events.responseRingFailed(instance: handle.id, reason: "its response ring failed: \(error)")
                    return
                }
            }
        }
    }
}
