import AetherCore
import Prometheus

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
        MetricFamily.startDuration.histogram(in: registry, [("function", function.rawValue), ("kind", kind.rawValue)])
            .record(duration)
    }

    /// criu restored (or the template forked) a copy in `duration`.
    func restored(_ kind: InstanceOrigin, duration: Duration) {
        MetricFamily.restoreDuration.histogram(
            in: registry, [("function", function.rawValue), ("kind", kind.rawValue)]
        ).record(duration)
    }

    /// A message on a response ring failed its CRC check.
    func crcError() {
        crcErrors.increment()
    }
}
