import AetherSystem
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Blocking line I/O on a handler control connection (docs/handler-protocol.md): the
/// orchestrator's side for restored copies, and the Swift handler runtime's side.
package enum ControlLine {
    package struct Failure: Error, CustomStringConvertible {
        package let description: String
    }

    /// The longest line either side sends, without its newline.
    package static let maximumLength = 4096

    /// Writes `text`; with `passing`, those descriptors (at most 8) go along with its first byte
    /// (SCM_RIGHTS: ATTACH hands the handler its region and its doorbell this way).
    package static func write(_ fd: CInt, _ text: String, passing descriptors: [CInt] = []) throws(Failure) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let sent: Int
            do throws(SystemCallFailure) {
                if offset == 0, !descriptors.isEmpty {
                    sent = try systemCall("sendmsg", on: "the control connection", failsWith: .minusOne) {
                        bytes.withUnsafeBytes { bytes in
                            descriptors.withUnsafeBufferPointer {
                                aether_send_with_descriptors(
                                    fd, bytes.baseAddress, UInt(bytes.count), $0.baseAddress, CInt($0.count))
                            }
                        }
                    }
                } else {
                    sent = try systemCall("send", on: "the control connection", failsWith: .minusOne) {
                        bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
                    }
                }
            } catch {
                throw Failure(description: "cannot write to the control connection: \(error.reason)")
            }
            guard sent > 0 else { throw Failure(description: "the control connection was closed") }
            offset += sent
        }
    }

    /// One line without its newline; at most `maximumLength` bytes. `timeout` nil waits for ever.
    package static func read(_ fd: CInt, timeout: Duration?) throws(Failure) -> String {
        var passed: [CInt] = []
        defer { passed.forEach { close($0) } }
        return try read(fd, timeout: timeout, passed: &passed)
    }

    /// `read`, keeping the descriptors that came with the line's bytes (in `passed`, which the
    /// caller then owns).
    package static func read(_ fd: CInt, timeout: Duration?, passed: inout [CInt]) throws(Failure) -> String {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var line: [UInt8] = []
        while line.count <= maximumLength {
            var milliseconds: CInt = -1
            if let deadline, let timeout {
                let left = deadline - ContinuousClock.now
                guard left > .zero else { throw Failure(description: "no answer within \(timeout)") }
                // Clamped: a timeout over Int32.max ms (24 days) must not trap the conversion.
                let (seconds, attoseconds) = left.components
                let whole =
                    seconds >= Int64.max / 1000 ? Int64.max : seconds * 1000 + attoseconds / 1_000_000_000_000_000
                milliseconds = CInt(clamping: max(1, whole))
            }
            var byte: UInt8 = 0
            let received: Int
            do throws(SystemCallFailure) {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = try systemCall("poll", on: "the control connection", failsWith: .minusOne) {
                    poll(&poller, 1, milliseconds)
                }
                guard ready > 0 else { continue }
                var descriptors: (CInt, CInt, CInt, CInt) = (-1, -1, -1, -1)
                var count: CInt = 0
                // recvmsg, not recv: a descriptor passed with a byte is dropped by a recv of it.
                received = try systemCall("recvmsg", on: "the control connection", failsWith: .minusOne) {
                    withUnsafeMutableBytes(of: &descriptors) {
                        aether_receive_with_descriptors(
                            fd, &byte, 1, $0.baseAddress!.assumingMemoryBound(to: CInt.self), 4, &count)
                    }
                }
                withUnsafeBytes(of: descriptors) { passed += $0.bindMemory(to: CInt.self).prefix(Int(count)) }
            } catch {
                throw Failure(description: "cannot read the control connection: \(error.reason)")
            }
            guard received == 1 else { throw Failure(description: "the control connection was closed") }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        throw Failure(description: "a line longer than \(maximumLength) bytes")
    }
}
