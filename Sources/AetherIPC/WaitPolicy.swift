#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How a ring side waits for data (consumer) or space (producer).
///
/// It polls first — re-reading the other side's position, yielding the CPU between polls so
/// that on a 2-core machine the peer can run — and then sleeps on the ring's futex word until the
/// peer rings the doorbell. Polling buys latency with CPU; sleeping buys CPU with a wake-up
/// (a few microseconds). `scripts/bench-ipc.sh` measures both.
public struct WaitPolicy: Sendable, Equatable {
    /// How long to poll before sleeping. Zero sleeps at once.
    public var pollFor: Duration
    /// Whether to `sched_yield` between polls.
    public var yieldWhilePolling: Bool

    public init(pollFor: Duration, yieldWhilePolling: Bool = true) {
        self.pollFor = pollFor
        self.yieldWhilePolling = yieldWhilePolling
    }

    /// Poll for 50 µs, then sleep: round trips stay in the polling window under load, an idle
    /// side costs nothing.
    public static let standard = WaitPolicy(pollFor: .microseconds(50))
    /// Poll for 5 µs, then sleep: a handler waiting for its next request, which the gateway
    /// cannot send while the handler holds the CPU it needs (a 2-vCPU host).
    public static let briefly = WaitPolicy(pollFor: .microseconds(5))
    /// Never poll: every wait is a futex sleep.
    public static let sleepAtOnce = WaitPolicy(pollFor: .zero)
    /// Poll without ever sleeping (burns a core; for measurement).
    public static let pollOnly = WaitPolicy(pollFor: .seconds(1_000_000))

    /// Polls `ready` until it returns true or the polling window (or the deadline, if sooner)
    /// ends; returns whether it did.
    @inline(__always)
    func poll(until deadline: WaitDeadline, _ ready: () -> Bool) -> Bool {
        if ready() { return true }
        if pollFor == .zero { return false }
        let clock = ContinuousClock()
        var end = clock.now.advanced(by: pollFor)
        if let last = deadline.end, last < end { end = last }
        var rounds = 0
        while true {
            if ready() { return true }
            rounds &+= 1
            if rounds & 15 == 0, clock.now >= end { return false }
            if yieldWhilePolling { sched_yield() }
        }
    }
}

/// A deadline for blocking calls, or none.
struct WaitDeadline {
    let end: ContinuousClock.Instant?
    let timeout: Duration?

    init(_ timeout: Duration?) {
        self.timeout = timeout
        end = timeout.map { ContinuousClock.now.advanced(by: $0) }
    }

    /// Nanoseconds left for futex_wait (-1 = unbounded), or nil if the deadline passed. A wait
    /// longer than Int64 nanoseconds (292 years) is cut to that.
    var remainingNanoseconds: Int64? {
        guard let end else { return -1 }
        let left = ContinuousClock.now.duration(to: end)
        guard left > .zero else { return nil }
        let (seconds, attoseconds) = left.components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let (total, carry) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflow || carry ? .max : total
    }

    /// Whether there was a deadline and it has passed.
    var hasPassed: Bool {
        guard let end else { return false }
        return ContinuousClock.now >= end
    }
}
