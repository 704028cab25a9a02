import Prometheus

/// Every metric family `/metrics` serves: its name, type and help, in one place (the registry
/// requires one help text per name). Names follow the OpenTelemetry FaaS conventions (`faas_*`)
/// where one exists; the rest are `aether_*`. README's metrics section lists the same families.
struct MetricFamily {
    enum Kind: String { case counter, gauge, histogram }

    /// The name without its unit suffix, and the suffix (`total`, `seconds`, or empty).
    let base: String
    let unit: String
    let kind: Kind
    let help: String

    init(name: String, kind: Kind, help: String) {
        let suffix = ["_total", "_seconds", "_bytes"].first { name.hasSuffix($0) }
        base = suffix.map { String(name.dropLast($0.count)) } ?? name
        unit = suffix.map { String($0.dropFirst()) } ?? ""
        self.kind = kind
        self.help = help
    }

    /// The full name, as scraped.
    var name: String { descriptor.name }

    private var descriptor: MetricNameDescriptor {
        MetricNameDescriptor(metricName: base, unitName: unit, helpText: help)
    }

    /// Latency buckets in seconds, from a ring round trip (tens of µs) to a slow handler (30 s).
    static let durationBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
        .seconds(10), .seconds(30),
    ]

    func counter(in registry: PrometheusCollectorRegistry, _ labels: [(String, String)]) -> Counter {
        registry.makeCounter(descriptor: descriptor, labels: labels)
    }

    func gauge(in registry: PrometheusCollectorRegistry, _ labels: [(String, String)]) -> Gauge {
        registry.makeGauge(descriptor: descriptor, labels: labels)
    }

    func histogram(in registry: PrometheusCollectorRegistry, _ labels: [(String, String)]) -> DurationHistogram {
        registry.makeDurationHistogram(descriptor: descriptor, labels: labels, buckets: Self.durationBuckets)
    }

    // MARK: Recorded as they happen (FunctionMetrics)

    static let invocations = Self(
        name: "faas_invocations_total", kind: .counter,
        help: "Requests answered, by function and status class (401 and 429 included).")
    static let invokeDuration = Self(
        name: "faas_invoke_duration_seconds", kind: .histogram,
        help: "Arrival at the gateway to the answer, by function and status class.")
    static let queueWait = Self(
        name: "faas_queue_wait_seconds", kind: .histogram,
        help: "Arrival to being written to an instance's ring, for requests that reached an instance.")
    static let startDuration = Self(
        name: "faas_start_duration_seconds", kind: .histogram,
        help: "Instance launch to serving, by kind (spawn, restore, fork).")
    static let restoreDuration = Self(
        name: "aether_restore_duration_seconds", kind: .histogram,
        help: "criu's restore (kind restore) or the template's fork (kind fork) of one copy.")
    static let ringCRCErrors = Self(
        name: "aether_ring_crc_errors_total", kind: .counter,
        help: "Messages on a response ring whose CRC-32 did not match (the instance was killed).")

    // MARK: Read from the status at each scrape (StatusMetrics)

    static let errors = Self(
        name: "faas_errors_total", kind: .counter,
        help: "Answers with status 500 or above (502 and 504 included), current generation.")
    static let timeouts = Self(
        name: "faas_timeouts_total", kind: .counter,
        help: "Requests that ran over timeout_ms (answered 504), current generation.")
    static let coldStarts = Self(
        name: "faas_coldstarts_total", kind: .counter,
        help: "Requests that waited for their instance to start, by start (spawn, restore).")
    static let latencyWindow = Self(
        name: "aether_latency_window", kind: .gauge,
        help: "Requests the latency percentiles of aether stats cover.")
    static let rejected = Self(
        name: "aether_rejected_total", kind: .counter, help: "Requests refused with 429 (queue full).")
    static let unauthorized = Self(
        name: "aether_unauthorized_total", kind: .counter,
        help: "Requests refused with 401 (auth: no or a wrong bearer token).")
    static let refusedSyscalls = Self(
        name: "aether_refused_syscalls_total", kind: .counter,
        help: "System calls the sandbox's filter refused with EPERM (confinement), by call.")
    static let crashes = Self(
        name: "aether_instance_crashes_total", kind: .counter, help: "Instances that ended without being asked to.")
    static let queueDepth = Self(
        name: "aether_queue_depth", kind: .gauge, help: "Requests waiting for an instance.")
    static let instances = Self(
        name: "aether_instances", kind: .gauge,
        help: "Instances by phase (starting, attaching, serving, stopping).")
    static let restores = Self(
        name: "aether_restores_total", kind: .counter, help: "Instances restored from the function's snapshot.")
    static let restoreFailures = Self(
        name: "aether_restore_failures_total", kind: .counter,
        help: "Restores that failed, latency violations included.")
    static let latencyViolations = Self(
        name: "aether_restore_latency_violations_total", kind: .counter,
        help: "Restores slower than restore_timeout_ms (the copy was killed, never used).")
    static let snapshotBytes = Self(
        name: "aether_snapshot_bytes", kind: .gauge, help: "Size of the function's CRIU image.")
    static let steered = Self(
        name: "aether_ebpf_steered_connections_total", kind: .counter,
        help: "New connections sk_lookup handed to the port's socket.")
    static let steerFailures = Self(
        name: "aether_ebpf_steer_failures_total", kind: .counter,
        help: "Connections whose socket could not take them.")
    static let heldSYNs = Self(
        name: "aether_ebpf_held_syns_total", kind: .counter,
        help: "SYNs dropped while the port's function had no socket yet (clients retry them).")
    static let packets = Self(
        name: "aether_ebpf_packets_total", kind: .counter, help: "Packets to the port seen by XDP.")
    static let bytes = Self(
        name: "aether_ebpf_bytes_total", kind: .counter, help: "Bytes (frame length) to the port seen by XDP.")
    static let dropped = Self(
        name: "aether_ebpf_dropped_connections_total", kind: .counter,
        help: "New connections dropped at XDP.")

    /// Every family, for the README and the tests.
    static let all: [Self] = [
        invocations, invokeDuration, queueWait, startDuration, restoreDuration, ringCRCErrors, errors, timeouts,
        coldStarts, latencyWindow, rejected, unauthorized, refusedSyscalls, crashes, queueDepth, instances, restores,
        restoreFailures, latencyViolations, snapshotBytes, steered, steerFailures, heldSYNs, packets, bytes, dropped,
    ]
}
