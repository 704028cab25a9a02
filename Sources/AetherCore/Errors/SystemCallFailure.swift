#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call: which call, on what, and the `errno` it left.
public struct SystemCallFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The C function, e.g. `shm_open`.
    public let call: String
    /// What it was called on, e.g. `/aetherless-hello-0`.
    public let subject: String
    public let errno: Int32

    public init(call: String, subject: String, errno: Int32) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    public var description: String {
        "\(call)(\(subject)) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}
