import AetherSystem
import CAetherIPC

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An eventfd with which a ring's producer wakes its consumer instead of the futex
/// (docs/shm-layout.md, "Bell"): the orchestrator reads responses on its event loops, which wait
/// in epoll, where a futex cannot be waited on. It makes one per instance and hands it to the
/// handler with ATTACH; the handler's response producer rings it.
public final class EventBell: Sendable {
    public let descriptor: CInt

    /// A new eventfd (close-on-exec, non-blocking).
    public init() throws(SharedMemoryError) {
        let descriptor = aether_eventfd_create()
        guard descriptor >= 0 else {
            throw .systemCall(SystemCallFailure(call: "eventfd", subject: "a ring's bell", errno: -descriptor))
        }
        self.descriptor = descriptor
    }

    /// Takes `descriptor` (one handed over with ATTACH); it is closed with this.
    public init(owning descriptor: CInt) {
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    /// Adds 1 to the counter, waking whoever waits for it to be readable.
    public func ring() {
        // Nothing useful to do on failure: the descriptor is ours and an eventfd's write fails
        // only on a bad descriptor. A saturated counter has a wake-up pending already.
        _ = aether_eventfd_ring(descriptor)
    }

    /// Reads the counter back to zero (after a wake-up, before reading the ring).
    public func drain() {
        _ = aether_eventfd_drain(descriptor)
    }
}
