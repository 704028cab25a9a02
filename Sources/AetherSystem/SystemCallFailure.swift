#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call: which call, on what, and the `errno` it left.
///
/// The underlying cause of every OS failure the package reports (`SharedMemoryError.systemCall`,
/// a bind that failed, a handler that could not be spawned). `systemCall(_:on:failsWith:_:)`
/// makes them.
public struct SystemCallFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The C function, e.g. `shm_open`.
    public let call: String
    /// What it was called on, e.g. `/aetherless-hello-0`.
    public let subject: String
    public let errno: CInt

    public init(call: String, subject: String, errno: CInt) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    /// The C library's sentence for `errno`, e.g. "No such file or directory": for messages that
    /// name the call and its subject their own way. The one place the package calls `strerror`.
    public var reason: String {
        String(cString: strerror(errno))
    }

    public var description: String {
        "\(call)(\(subject)) failed: \(reason) (errno \(errno))"
    }
}
