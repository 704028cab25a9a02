import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A detached OS thread for work that blocks in the kernel (waitpid, a futex wait on a ring):
/// such calls must not sit on an event loop or in Swift's cooperative pool. Shared by the
/// orchestrator and the Swift handler runtime.
package enum BackgroundThread {
    private final class Box {
        let name: String
        let body: () -> Void
        init(_ name: String, _ body: @escaping () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts `body` on a new thread named `name`. A thread that cannot be created (the process
    /// is out of memory or threads) stops the process with the reason.
    package static func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
        var thread = pthread_t()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, CInt(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attributes, 512 * 1024)
        do {
            try systemCall("pthread_create", on: "thread \(name)", failsWith: .errnoReturned) {
                pthread_create(
                    &thread, &attributes,
                    { raw in
                        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                        aether_set_thread_name(box.name)
                        box.body()
                        return nil
                    }, box)
            }
        } catch {
            preconditionFailure(error.description)
        }
    }
}
