import AetherCore
import AetherNet

/// The orchestrator's figures in the Prometheus text format (`GET /metrics` on the control
/// socket, and on `metrics_port` when set). Names follow the OpenTelemetry FaaS conventions
/// (`faas_*`) where one exists; the rest are `aether_*`.
enum PrometheusText {
    static let contentType = "text/plain; version=0.0.4"

    static func render(_ status: OrchestratorStatus) -> String {
        var families: [(name: String, help: String, type: String, samples: [String])] = []
        func family(_ name: String, _ type: String, _ help: String, _ value: (FunctionStatus) -> [(String, Double)]) {
            var samples: [String] = []
            for function in status.functions {
                for (labels, number) in value(function) {
                    let extra = labels.isEmpty ? "" : "," + labels
                    samples.append("\(name){function=\"\(function.id)\"\(extra)} \(format(number))")
                }
            }
            families.append((name, help, type, samples))
        }
        func one(_ number: Int) -> [(String, Double)] { [("", Double(number))] }
        func quantiles(_ p50: Double?, _ p95: Double?, _ p99: Double?) -> [(String, Double)] {
            [("quantile=\"0.5\"", p50), ("quantile=\"0.95\"", p95), ("quantile=\"0.99\"", p99)].compactMap {
                label, value in
                value.map { (label, $0 / 1000) }
            }
        }

        family("faas_invocations_total", "counter", "Requests answered, by function.") { one($0.stats.invocations) }
        family("faas_errors_total", "counter", "Answers with status 500 or above (502 and 504 included).") {
            one($0.stats.errors)
        }
        family("faas_timeouts_total", "counter", "Requests that ran over timeout_ms (answered 504).") {
            one($0.stats.timeouts)
        }
        family("faas_coldstarts_total", "counter", "Requests that waited for their instance to start.") {
            [
                ("start=\"spawn\"", Double($0.stats.spawnColdStarts)),
                ("start=\"restore\"", Double($0.stats.restoreColdStarts)),
            ]
        }
        family(
            "faas_invoke_duration_seconds", "summary",
            "Arrival to response, over the last requests (window: aether_latency_window)."
        ) { quantiles($0.stats.p50Milliseconds, $0.stats.p95Milliseconds, $0.stats.p99Milliseconds) }
        family("aether_latency_window", "gauge", "Requests the latency quantiles cover.") { one($0.stats.window) }
        family("aether_rejected_total", "counter", "Requests refused with 429 (queue full).") { one($0.stats.rejected) }
        family("aether_unauthorized_total", "counter", "Requests refused with 401 (auth: no or a wrong bearer token).")
        {
            one($0.stats.unauthorized)
        }
        family(
            "aether_refused_syscalls_total", "counter",
            "System calls the sandbox's filter refused with EPERM (confinement), by call."
        ) { function in
            (function.confinement?.refusedSyscalls ?? [:]).sorted { $0.key < $1.key }.map {
                ("syscall=\"\($0.key)\"", Double($0.value))
            }
        }
        family("aether_instance_crashes_total", "counter", "Instances that ended without being asked to.") {
            one($0.stats.crashes)
        }
        family("aether_queue_depth", "gauge", "Requests waiting for an instance.") { one($0.queueDepth) }
        family("aether_instances", "gauge", "Instances by phase.") { function in
            ["starting", "attaching", "serving", "stopping"].map { phase in
                ("phase=\"\(phase)\"", Double(function.instances.count { $0.phase == phase }))
            }
        }
        family("aether_restores_total", "counter", "Instances restored from the function's snapshot.") {
            one($0.stats.restores)
        }
        family("aether_restore_failures_total", "counter", "Restores that failed, latency violations included.") {
            one($0.stats.restoreFailures)
        }
        family(
            "aether_restore_latency_violations_total", "counter",
            "Restores slower than restore_timeout_ms (the copy was killed, never used)."
        ) { one($0.stats.latencyViolations) }
        family("aether_restore_duration_seconds", "summary", "criu's part of a restore.") {
            quantiles($0.stats.restoreP50Milliseconds, nil, $0.stats.restoreP99Milliseconds)
        }
        family("aether_snapshot_bytes", "gauge", "Size of the function's CRIU image.") { function in
            function.snapshot.map { [("", Double($0.imageBytes))] } ?? []
        }

        // The eBPF data plane, per trigger port (packets and bytes only with an XDP program).
        if let ebpf = status.ebpf {
            func port(_ name: String, _ help: String, _ value: (EbpfStatus.Port) -> UInt64) {
                let samples = ebpf.ports.map {
                    "\(name){function=\"\($0.function)\",port=\"\($0.port)\"} \(value($0))"
                }
                families.append((name, help, "counter", samples))
            }
            port("aether_ebpf_steered_connections_total", "New connections sk_lookup handed to the port's socket.") {
                $0.steered
            }
            port("aether_ebpf_steer_failures_total", "Connections whose socket could not take them.") {
                $0.steerFailures
            }
            port(
                "aether_ebpf_held_syns_total",
                "SYNs dropped while the port's function had no socket yet (clients retry them)."
            ) { $0.held }
            if ebpf.links.contains(where: { $0.program == "aether_xdp" }) {
                port("aether_ebpf_packets_total", "Packets to the port seen by XDP.") { $0.packets }
                port("aether_ebpf_bytes_total", "Bytes (frame length) to the port seen by XDP.") { $0.bytes }
                port("aether_ebpf_dropped_connections_total", "New connections dropped at XDP.") { $0.dropped }
            }
        }

        var text = ""
        for family in families {
            text += "# HELP \(family.name) \(family.help)\n# TYPE \(family.name) \(family.type)\n"
            for sample in family.samples { text += sample + "\n" }
        }
        return text
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
