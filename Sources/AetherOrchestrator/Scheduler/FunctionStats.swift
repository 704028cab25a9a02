/// Counters and sliding windows of latencies for one function generation, kept by its
/// scheduler (so every count changes in the same step as the state it counts).
struct FunctionStats: Sendable {
    static let window = 8192
    static let restoreWindow = 1024
    var invocations = 0
    var errors = 0
    var timeouts = 0
    var rejected = 0
    var unauthorized = 0
    var crashes = 0
    var lastStartupMilliseconds: Double?
    var restores = 0
    var restoreFailures = 0
    var latencyViolations = 0
    var spawnColdStarts = 0
    var restoreColdStarts = 0
    private var latencies = SlidingWindow(capacity: window)
    private var restoreTimes = SlidingWindow(capacity: restoreWindow)
    /// Instances that came to serve, by how they started, and how long that took.
    private var starts: [InstanceOrigin: (count: Int, times: SlidingWindow)] = [:]

    mutating func record(isError: Bool, latency: Duration) {
        invocations += 1
        if isError { errors += 1 }
        latencies.append(latency.milliseconds)
    }

    mutating func recordRestore(_ duration: Duration) {
        restores += 1
        restoreTimes.append(duration.milliseconds)
    }

    mutating func recordStart(_ origin: InstanceOrigin, _ duration: Duration) {
        starts[origin, default: (0, SlidingWindow(capacity: Self.restoreWindow))].count += 1
        starts[origin]?.times.append(duration.milliseconds)
    }

    func summary() -> StatsSummary {
        StatsSummary(
            invocations: invocations, errors: errors, timeouts: timeouts, rejected: rejected,
            unauthorized: unauthorized, crashes: crashes,
            p50Milliseconds: latencies.percentile(0.50), p95Milliseconds: latencies.percentile(0.95),
            p99Milliseconds: latencies.percentile(0.99), window: latencies.count,
            lastStartupMilliseconds: lastStartupMilliseconds.map { ($0 * 10).rounded() / 10 },
            restores: restores, restoreFailures: restoreFailures, latencyViolations: latencyViolations,
            restoreP50Milliseconds: restoreTimes.percentile(0.5), restoreP99Milliseconds: restoreTimes.percentile(0.99),
            spawnColdStarts: spawnColdStarts, restoreColdStarts: restoreColdStarts,
            starts: starts.sorted { $0.key.rawValue < $1.key.rawValue }.map { origin, figures in
                StartStats(
                    kind: origin.rawValue, count: figures.count, p50Milliseconds: figures.times.percentile(0.5),
                    p99Milliseconds: figures.times.percentile(0.99))
            })
    }
}

/// The last `capacity` values, overwriting the oldest.
struct SlidingWindow: Sendable {
    let capacity: Int
    private var values: [Double] = []
    private var next = 0

    init(capacity: Int) { self.capacity = capacity }

    var count: Int { values.count }

    mutating func append(_ value: Double) {
        if values.count < capacity {
            values.append(value)
        } else {
            values[next] = value
            next = (next + 1) % capacity
        }
    }

    /// Nearest-rank percentile, rounded to the microsecond; nil when empty.
    func percentile(_ p: Double) -> Double? {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return nil }
        let rank = Int((p * Double(sorted.count)).rounded(.up)) - 1
        return (sorted[max(0, min(rank, sorted.count - 1))] * 1000).rounded() / 1000
    }
}

/// A first-in first-out queue with O(1) operations at both ends (for the scheduler's
/// invocation queue and its request deadlines).
struct FIFO<Element: Sendable>: Sendable {
    private var items: [Element] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }
    var first: Element? { isEmpty ? nil : items[head] }

    mutating func append(_ element: Element) { items.append(element) }

    /// Puts an element back in front (a request its instance's ring had no room for).
    mutating func prepend(_ element: Element) {
        if head > 0 {
            head -= 1
            items[head] = element
        } else {
            items.insert(element, at: 0)
        }
    }

    mutating func popFirst() -> Element? {
        guard !isEmpty else { return nil }
        let element = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return element
    }

    mutating func removeAll() -> [Element] {
        let rest = Array(items[head...])
        items = []
        head = 0
        return rest
    }
}
