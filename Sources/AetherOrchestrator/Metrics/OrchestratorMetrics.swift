import AetherCore
import AetherNet
import Prometheus
import Synchronization

/// The orchestrator's Prometheus metrics (`GET /metrics` on the control socket, and on
/// `metrics_port` when set), on swift-prometheus.
///
/// Two kinds of families: those recorded as they happen, in one registry that lives as long as
/// the orchestrator (`FunctionMetrics`, one per function id); and those that are already counted
/// elsewhere (the schedulers' counters, the instances' phases, the eBPF maps), set into a fresh
/// registry from the status document at each scrape, so nothing is counted twice and a removed
/// function's gauges go with it.
final class OrchestratorMetrics: Sendable {
    static let contentType = "text/plain; version=0.0.4"

    private let registry = PrometheusCollectorRegistry()
    private let functions = Mutex<[FunctionID: FunctionMetrics]>([:])

    init() {}

    /// The function's live metrics (the same object for every generation of it).
    func function(_ id: FunctionID) -> FunctionMetrics {
        functions.withLock { functions in
            if let metrics = functions[id] { return metrics }
            let metrics = FunctionMetrics(function: id, registry: registry)
            functions[id] = metrics
            return metrics
        }
    }

    /// A function removed for good (`aether rm`): its series go (a redeploy keeps them).
    func remove(_ id: FunctionID) {
        functions.withLock { $0.removeValue(forKey: id) }?.unregister()
    }

    /// The text a scrape gets: the live families, then those read from `status`.
    func render(_ status: OrchestratorStatus) -> String {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16_384)
        registry.emit(into: &buffer)
        StatusMetrics.registry(from: status).emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}

/// The families read from the status document, in a registry made for one scrape.
enum StatusMetrics {
    static func registry(from status: OrchestratorStatus) -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        func count(_ family: MetricFamily, _ labels: [(String, String)], _ value: Int) {
            family.counter(in: registry, labels).increment(by: Int64(value))
        }
        func set(_ family: MetricFamily, _ labels: [(String, String)], _ value: Int) {
            family.gauge(in: registry, labels).set(Int64(value))
        }
        for function in status.functions {
            let id = [("function", function.id)]
            let stats = function.stats
            count(.errors, id, stats.errors)
            count(.timeouts, id, stats.timeouts)
            count(.coldStarts, id + [("start", "spawn")], stats.spawnColdStarts)
            count(.coldStarts, id + [("start", "restore")], stats.restoreColdStarts)
            set(.latencyWindow, id, stats.window)
            count(.rejected, id, stats.rejected)
            count(.unauthorized, id, stats.unauthorized)
            for (call, times) in (function.confinement?.refusedSyscalls ?? [:]).sorted(by: { $0.key < $1.key }) {
                count(.refusedSyscalls, id + [("syscall", call)], times)
            }
            count(.crashes, id, stats.crashes)
            set(.queueDepth, id, function.queueDepth)
            for phase in ["starting", "attaching", "serving", "stopping"] {
                set(.instances, id + [("phase", phase)], function.instances.count { $0.phase == phase })
            }
            count(.restores, id, stats.restores)
            count(.restoreFailures, id, stats.restoreFailures)
            count(.latencyViolations, id, stats.latencyViolations)
            if let snapshot = function.snapshot { set(.snapshotBytes, id, snapshot.imageBytes) }
        }
        // The eBPF data plane, per trigger port (packets and bytes only with an XDP program).
        if let ebpf = status.ebpf {
            let counting = ebpf.links.contains { $0.program == "aether_xdp" }
            for port in ebpf.ports {
                let labels = [("function", port.function), ("port", String(port.port))]
                func add(_ family: MetricFamily, _ value: UInt64) {
                    family.counter(in: registry, labels).increment(by: Int64(clamping: value))
                }
                add(.steered, port.steered)
                add(.steerFailures, port.steerFailures)
                add(.heldSYNs, port.held)
                if counting {
                    add(.packets, port.packets)
                    add(.bytes, port.bytes)
                    add(.dropped, port.dropped)
                }
            }
        }
        return registry
    }
}
