import AetherCore
import Prometheus
import Synchronization

/// One function's live metrics in the orchestrator's `PrometheusCollectorRegistry`: what is
/// recorded as it happens (invocations by status class and their duration, queue waits, instance
/// starts and restores, corrupted ring messages). Kept by function id, so the series go on
/// across redeploys of the function.
///
/// The handles for the request path are made once, here: recording one request is an atomic
/// increment and one histogram's own lock (the library's), nothing shared between functions.
final class FunctionMetrics: Sendable {
    let function: FunctionID
    private let registry: PrometheusCollectorRegistry
    /// Indexed by `statusIndex`: 2xx, 3xx, 4xx, 5xx (the gateway sends only final statuses).
    private let invocations: [Counter]
    private let durations: [DurationHistogram]
    private let queueWait: DurationHistogram
    private let crcErrors: Counter
    /// Start and restore histograms by family name and kind, made at the first of that kind.
    private let byKind = Mutex<[String: DurationHistogram]>([:])

    static let statusClasses = ["2xx", "3xx", "4xx", "5xx"]

    init(function: FunctionID, registry: PrometheusCollectorRegistry) {
        self.function = function
        self.registry = registry
        let id = function.rawValue
        invocations = Self.statusClasses.map {
            MetricFamily.invocations.counter(in: registry, [("function", id), ("status_class", $0)])
        }
        durations = Self.statusClasses.map {
            MetricFamily.invokeDuration.histogram(in: registry, [("function", id), ("status_class", $0)])
        }
        queueWait = MetricFamily.queueWait.histogram(in: registry, [("function", id)])
        crcErrors = MetricFamily.ringCRCErrors.counter(in: registry, [("function", id)])
    }

    /// The status class of an HTTP status as an index into `statusClasses`.
    static func statusIndex(_ status: Int) -> Int {
        min(max(status / 100 - 2, 0), statusClasses.count - 1)
    }

    /// One request answered with `status`, `duration` after it arrived.
    func invoked(status: Int, duration: Duration) {
        let index = Self.statusIndex(status)
        invocations[index].increment()
        durations[index].record(duration)
    }

    /// A request waited `duration` from its arrival until it was written to an instance's ring.
    func waited(_ duration: Duration) {
        queueWait.record(duration)
    }

    /// An instance serves, `duration` after its launch (start to READY/ATTACHED).
    func started(_ kind: InstanceOrigin, duration: Duration) {
        histogram(.startDuration, kind).record(duration)
    }

    /// criu restored (or the template forked) a copy in `duration`.
    func restored(_ kind: InstanceOrigin, duration: Duration) {
        histogram(.restoreDuration, kind).record(duration)
    }

    /// A message on a response ring failed its CRC check.
    func crcError() {
        crcErrors.increment()
    }

    /// Takes every series of the function out of the registry (`aether rm`).
    func unregister() {
        for counter in invocations + [crcErrors] { registry.unregisterCounter(counter) }
        for histogram in durations + [queueWait] { registry.unregisterDurationHistogram(histogram) }
        for histogram in byKind.withLock({ Array($0.values) }) { registry.unregisterDurationHistogram(histogram) }
    }

    private func histogram(_ family: MetricFamily, _ kind: InstanceOrigin) -> DurationHistogram {
        byKind.withLock { made in
            let key = family.name + " " + kind.rawValue
            if let histogram = made[key] { return histogram }
            let histogram = family.histogram(in: registry, [("function", function.rawValue), ("kind", kind.rawValue)])
            made[key] = histogram
            return histogram
        }
    }
}
