#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How a C function reports that it failed, and where its error number is then.
///
/// C functions do it in a few ways; `systemCall(_:on:failsWith:_:)` takes the convention so that
/// every call, whatever its way, goes through the same errno capture and `EINTR` retry:
/// - `.minusOne`: -1 with `errno` set (open, read, socket, shm_open, ftruncate, ...);
/// - `.errnoReturned`: 0, or the error number itself (posix_spawn, pthread_create);
/// - `.negatedErrno`: a negative error number (libbpf);
/// - `.null`: a nil pointer with `errno` set (opendir, fopen); the result is the pointer unwrapped;
/// - `.mapFailed`: `MAP_FAILED` with `errno` set (mmap).
package struct SystemCallConvention<Value, Result> {
    package enum Outcome {
        case result(Result)
        case failure(errno: CInt)
    }

    /// What the value a call returned means.
    package let interpret: (Value) -> Outcome

    package init(interpret: @escaping (Value) -> Outcome) {
        self.interpret = interpret
    }
}

extension SystemCallConvention where Value: FixedWidthInteger & SignedInteger, Result == Value {
    /// -1 with `errno` set; any other value is the result.
    package static var minusOne: Self {
        Self { $0 == -1 ? .failure(errno: currentErrno()) : .result($0) }
    }

    /// 0 on success, otherwise the error number (`errno` is left alone).
    package static var errnoReturned: Self {
        Self { $0 == 0 ? .result($0) : .failure(errno: CInt(truncatingIfNeeded: $0)) }
    }

    /// A negative value is the negated error number; zero and above are results.
    package static var negatedErrno: Self {
        Self { $0 < 0 ? .failure(errno: CInt(truncatingIfNeeded: -$0)) : .result($0) }
    }
}

extension SystemCallConvention where Value == Result? {
    /// nil with `errno` set; any other pointer is the result.
    package static var null: Self {
        Self { $0.map { .result($0) } ?? .failure(errno: currentErrno()) }
    }
}

extension SystemCallConvention where Value == UnsafeMutableRawPointer?, Result == UnsafeMutableRawPointer {
    /// `MAP_FAILED` (or nil) with `errno` set: mmap's way.
    package static var mapFailed: Self {
        Self { pointer in
            guard let pointer, pointer != MAP_FAILED else { return .failure(errno: currentErrno()) }
            return .result(pointer)
        }
    }
}

/// Calls `body` (one C function) and returns its result, or throws the failure it reported:
/// the call's name, its subject and the error number, captured right after the call. An
/// interrupted call (`EINTR`) is made again unless `retryOnInterrupt` is false.
///
/// The package's one way into the C library for calls that can fail, after swift-system's
/// `valueOrErrno(retryOnInterrupt:_:)`. Not for `close`: Linux releases the descriptor even when
/// close reports EINTR, so a retry could close a descriptor another thread has just opened
/// (`OwnedDescriptor` closes once). Pass `retryOnInterrupt: false` for `connect`, whose
/// interrupted attempt goes on in the background.
///
/// ```swift
/// let fd = try systemCall("shm_open", on: name, failsWith: .minusOne) { shm_open(name, O_RDWR, 0) }
/// try systemCall("pthread_create", on: name, failsWith: .errnoReturned) { pthread_create(&thread, nil, run, box) }
/// let base = try systemCall("mmap", on: name, failsWith: .mapFailed) { mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0) }
/// ```
@discardableResult
package func systemCall<Value, Result>(
    _ call: String, on subject: @autoclosure () -> String, failsWith convention: SystemCallConvention<Value, Result>,
    retryOnInterrupt: Bool = true, _ body: () -> Value
) throws(SystemCallFailure) -> Result {
    while true {
        switch convention.interpret(body()) {
        case .result(let result):
            return result
        case .failure(let code):
            if code == EINTR && retryOnInterrupt { continue }
            throw SystemCallFailure(call: call, subject: subject(), errno: code)
        }
    }
}

/// `errno` of the calling thread (a function, so the conventions' closures need not name the
/// global, which `SystemCallFailure.errno` shadows in places).
private func currentErrno() -> CInt {
    errno
}
