import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The last lines a function's handler processes wrote to stdout and stderr (`aether logs ID`).
/// Bounded: the oldest lines go first, and a line longer than `maximumLineLength` is cut.
public final class LogBuffer: Sendable {
    public struct Line: Sendable, Codable, Equatable {
        /// Seconds since the epoch, with milliseconds.
        public let time: Double
        public let instance: Int
        public let stream: String
        public let text: String
    }

    public static let maximumLineLength = 8192
    public let capacity: Int
    private let state: Mutex<(lines: [Line], next: Int, dropped: Int)>

    public init(capacity: Int = 2000) {
        self.capacity = capacity
        state = Mutex(([], 0, 0))
    }

    func append(instance: Int, stream: String, text: String) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let line = Line(
            time: Double(now.tv_sec) + Double(now.tv_nsec / 1_000_000) / 1000, instance: instance, stream: stream,
            text: text)
        state.withLock { state in
            if state.lines.count < capacity {
                state.lines.append(line)
            } else {
                state.lines[state.next] = line
                state.next = (state.next + 1) % capacity
                state.dropped += 1
            }
        }
    }

    /// The last `count` lines, oldest first.
    public func tail(_ count: Int) -> [Line] {
        state.withLock { state in
            let ordered = Array(state.lines[state.next...] + state.lines[..<state.next])
            return Array(ordered.suffix(count))
        }
    }
}
