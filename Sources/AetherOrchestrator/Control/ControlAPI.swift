public import AetherNet
import NIOCore

/// The JSON documents of the control API (`aether list`, `stats`, `deploy`, `logs`, `down`),
/// shared by the orchestrator and the CLI.

public struct InstanceStatus: Codable, Sendable, Equatable {
    public var number: Int
    public var pid: Int
    /// starting, attaching, serving, stopping, exited
    public var phase: String
    public var inFlight: Int
    public var served: Int
    public var uptimeSeconds: Double
    /// Shared-memory region (sdk handlers).
    public var region: String?
    /// Memory in use by the instance's cgroup.
    public var memoryBytes: Int?
    /// spawn or restore
    public var origin: String
    public var startupMilliseconds: Double?
}

public struct SnapshotStatus: Codable, Sendable, Equatable {
    public var image: String
    public var imageBytes: Int
    public var dumpMilliseconds: Double
    public var restoreBudgetMilliseconds: Double
}

public struct StatsSummary: Codable, Sendable, Equatable {
    public var invocations: Int
    /// Answers with status 500 and above, including 502 and 504 made by the orchestrator.
    public var errors: Int
    public var timeouts: Int
    /// Requests refused with 429 because the queue was full.
    public var rejected: Int
    /// Instances that ended without being asked to.
    public var crashes: Int
    /// Latency percentiles over the last `window` requests, in milliseconds (nil before any).
    public var p50Milliseconds: Double?
    public var p95Milliseconds: Double?
    public var p99Milliseconds: Double?
    public var window: Int
    public var lastStartupMilliseconds: Double?
    /// Restores from the snapshot that succeeded, failed (any cause), or took longer than
    /// restore_timeout_ms (counted in failures too; the copy was killed, not used).
    public var restores: Int
    public var restoreFailures: Int
    public var latencyViolations: Int
    public var restoreP50Milliseconds: Double?
    public var restoreP99Milliseconds: Double?
    /// Requests that waited for their instance to be started: by a new process, by a restore.
    public var spawnColdStarts: Int
    public var restoreColdStarts: Int
}

public struct FunctionStatus: Codable, Sendable, Equatable {
    public var id: String
    public var port: Int
    public var `protocol`: String
    /// starting, running, draining, stopped
    public var state: String
    public var handler: String
    public var queueDepth: Int
    public var maxInstances: Int
    public var concurrency: Int
    public var instances: [InstanceStatus]
    public var stats: StatsSummary
    /// For `snapshot: true` functions, once the image is built.
    public var snapshot: SnapshotStatus?
}

public struct OrchestratorStatus: Codable, Sendable, Equatable {
    public var version: String
    public var pid: Int
    public var configFile: String
    public var controlSocket: String
    public var listenAddress: String
    public var uptimeSeconds: Double
    public var functions: [FunctionStatus]
    /// `ebpf` or `sockets`.
    public var dataplane: String
    /// Programs, links, map entries and per-port counters (`dataplane: ebpf`).
    public var ebpf: EbpfStatus?
}

public struct DeployRequest: Codable, Sendable {
    /// Absolute path of the configuration file; the orchestrator reads and validates it.
    public var configFile: String
    /// Replace functions even when their configuration is unchanged.
    public var force: Bool

    public init(configFile: String, force: Bool) {
        self.configFile = configFile
        self.force = force
    }
}

public struct DeployResult: Codable, Sendable {
    public var added: [String]
    public var replaced: [String]
    public var unchanged: [String]
}

/// The body of every non-2xx answer.
public struct ErrorDocument: Codable, Sendable {
    public var error: String
    /// For a configuration that failed validation: one entry per problem, `file:line:column: ...`.
    public var diagnostics: [String]?

    public init(error: String, diagnostics: [String]? = nil) {
        self.error = error
        self.diagnostics = diagnostics
    }
}

public struct LogsDocument: Codable, Sendable {
    public var function: String
    public var lines: [LogBuffer.Line]
}

/// Counters and a sliding window of latencies for one function (guarded by its runtime's lock).
struct FunctionStats {
    static let window = 8192
    var invocations = 0
    var errors = 0
    var timeouts = 0
    var rejected = 0
    var crashes = 0
    var lastStartupMilliseconds: Double?
    var restoreFailures = 0
    var latencyViolations = 0
    var spawnColdStarts = 0
    var restoreColdStarts = 0
    private var restoreTimes: [Double] = []
    private var latencies: [Double] = []
    private var next = 0

    mutating func record(status: Int, latency: TimeAmount) {
        invocations += 1
        if status >= 500 { errors += 1 }
        let milliseconds = Double(latency.nanoseconds) / 1e6
        if latencies.count < Self.window {
            latencies.append(milliseconds)
        } else {
            latencies[next] = milliseconds
            next = (next + 1) % Self.window
        }
    }

    mutating func recordRestore(milliseconds: Double) {
        if restoreTimes.count >= 1024 { restoreTimes.removeFirst() }
        restoreTimes.append(milliseconds)
    }

    func summary() -> StatsSummary {
        func percentile(_ p: Double, of values: [Double]) -> Double? {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return nil }
            let rank = Int((p * Double(sorted.count)).rounded(.up)) - 1
            return (sorted[max(0, min(rank, sorted.count - 1))] * 1000).rounded() / 1000
        }
        func percentile(_ p: Double) -> Double? { percentile(p, of: latencies) }
        return StatsSummary(
            invocations: invocations, errors: errors, timeouts: timeouts, rejected: rejected, crashes: crashes,
            p50Milliseconds: percentile(0.50), p95Milliseconds: percentile(0.95), p99Milliseconds: percentile(0.99),
            window: latencies.count, lastStartupMilliseconds: lastStartupMilliseconds.map { ($0 * 10).rounded() / 10 },
            restores: restoreTimes.count, restoreFailures: restoreFailures, latencyViolations: latencyViolations,
            restoreP50Milliseconds: percentile(0.5, of: restoreTimes),
            restoreP99Milliseconds: percentile(0.99, of: restoreTimes), spawnColdStarts: spawnColdStarts,
            restoreColdStarts: restoreColdStarts)
    }
}
