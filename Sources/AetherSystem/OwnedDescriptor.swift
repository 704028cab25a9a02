#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A file descriptor this code owns: closed exactly once, when the value goes away (`deinit`),
/// when `close()` is called, or never by us once `take()` has handed it on.
///
/// Why noncopyable: a descriptor is a number the kernel reuses as soon as it is closed. A
/// copyable wrapper (or a bare `CInt`) lets two places believe they own it, so one closes it and
/// the other later reads, writes or closes whatever the process opened next under that number,
/// another thread's socket say. As a `~Copyable` value there is exactly one owner at any time;
/// the compiler refuses a use after `close()` or `take()` (both are `consuming`), and every early
/// `throw` between opening and handing on closes it without a `defer` or a hand-written
/// `close` on each error path.
///
/// Long-lived descriptors stored in a class (or in a dictionary, which needs copyable values) are
/// held by a class around an `OwnedDescriptor`, or as a `CInt` closed in that class's `deinit`.
public struct OwnedDescriptor: ~Copyable {
    private let descriptor: CInt

    /// Takes ownership of `rawValue` (an open descriptor nobody else will close).
    public init(owning rawValue: CInt) {
        precondition(rawValue >= 0, "not a descriptor: \(rawValue)")
        descriptor = rawValue
    }

    /// Takes ownership of the descriptor `body` returns (open, socket, shm_open, accept ...), or
    /// throws what the call reported (through `systemCall`).
    package init(
        _ call: String, on subject: @autoclosure () -> String,
        failsWith convention: SystemCallConvention<CInt, CInt> = .minusOne, _ body: () -> CInt
    ) throws(SystemCallFailure) {
        self.init(owning: try systemCall(call, on: subject(), failsWith: convention, body))
    }

    /// Opens `path` (open(2)); `flags` should include `O_CLOEXEC`, `mode` is for `O_CREAT`.
    package static func open(_ path: String, _ flags: CInt, mode: UInt32 = 0) throws(SystemCallFailure) -> Self {
        try Self("open", on: path) { Glibc.open(path, flags, mode_t(mode)) }
    }

    /// The descriptor, for calls made while this value is alive. Do not close it or keep it.
    public var rawValue: CInt { descriptor }

    /// Gives ownership away: the caller (or whatever it passes the number to, SwiftNIO say) must
    /// close it; this value no longer will.
    public consuming func take() -> CInt {
        let rawValue = descriptor
        discard self
        return rawValue
    }

    /// Closes now. Errors are ignored: Linux releases the descriptor even when close(2) reports
    /// one (EINTR, EIO), so there is nothing to retry or undo.
    public consuming func close() {
        _ = Glibc.close(descriptor)
        discard self
    }

    deinit {
        _ = Glibc.close(descriptor)
    }
}
