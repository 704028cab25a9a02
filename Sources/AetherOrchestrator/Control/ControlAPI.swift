public import AetherNet
import NIOCore

/// The JSON documents of the control API (`aether list`, `stats`, `deploy`, `rm`, `logs`, `down`),
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
    /// Requests answered 401 by the gateway (`auth:`: no, or a wrong, bearer token).
    public var unauthorized: Int
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
    /// Instances that came to serve, by kind (spawn, restore, fork), and their start latency
    /// (launch to serving) over the last 1024 of each kind.
    public var starts: [StartStats]
}

/// How many instances of one kind started, and how fast.
public struct StartStats: Codable, Sendable, Equatable {
    /// spawn, restore or fork
    public var kind: String
    public var count: Int
    public var p50Milliseconds: Double?
    public var p99Milliseconds: Double?
}

public struct FunctionStatus: Codable, Sendable, Equatable {
    public var id: String
    public var port: Int
    public var `protocol`: String
    /// starting, running, draining, stopped
    public var state: String
    /// The seed's lifecycle state, derived from the instances: Uninitialized (no instance has
    /// served yet), WarmSnapshot (none running, the next one is restored), Running (one or more
    /// serving), Suspended (none running, the next one is spawned).
    public var lifecycle: String
    public var handler: String
    public var queueDepth: Int
    public var maxInstances: Int
    public var concurrency: Int
    public var instances: [InstanceStatus]
    public var stats: StatsSummary
    /// For `snapshot: true` functions, once the image is built.
    public var snapshot: SnapshotStatus?
    /// How its instances are confined (nil: `confinement: false`).
    public var confinement: ConfinementStatus?
}

/// A confined function's identity and limits, and the system calls its sandbox refused.
public struct ConfinementStatus: Codable, Sendable, Equatable {
    public var uid: Int
    public var gid: Int
    public var network: String
    public var maxPids: Int
    /// Cores (nil: unlimited).
    public var cpuLimit: Double?
    /// Calls refused by the syscall filter (EPERM) since `up`, by system call (nil: not counted
    /// on this host, see the orchestrator's log).
    public var refusedSyscalls: [String: Int]?
}

public struct OrchestratorStatus: Codable, Sendable, Equatable {
    /// Every function of the configuration `up` started with is serving (`aether wait`).
    public var ready: Bool
    public var version: String
    public var pid: Int
    /// The configuration `up` started with (the stored state's file when it resumed).
    public var configFile: String
    /// The deployed state `aether up` without a file resumes (`state_dir`).
    public var stateFile: String
    public var controlSocket: String
    public var listenAddress: String
    public var uptimeSeconds: Double
    public var functions: [FunctionStatus]
    /// `ebpf` or `sockets`.
    public var dataplane: String
    /// Programs, links, map entries and per-port counters (`dataplane: ebpf`).
    public var ebpf: EbpfStatus?
    /// The warm pool of snapshot functions' unassigned copies.
    public var warmPool: WarmPoolStatus?
}

public struct WarmPoolStatus: Codable, Sendable, Equatable {
    /// `warm_pool_size`.
    public var capacity: Int
    /// Copies waiting now.
    public var copies: Int
    /// `warm_pool_memory_mb`, in bytes.
    public var memoryBudgetBytes: Int
    /// What the waiting copies may take (each at its function's memory limit).
    public var reservedBytes: Int
    /// Waiting copies per function.
    public var functions: [String: Int]
}

public struct DeployRequest: Codable, Sendable {
    /// Absolute path of the configuration file; the orchestrator reads and validates it.
    public var configFile: String
    /// Replace functions even when their configuration is unchanged.
    public var force: Bool
    /// Replace these functions even when their configuration and handler file are unchanged
    /// (`aether dev`: a module beside the handler was edited).
    public var replacing: [String]

    /// A name the client made up to follow the deploy's progress (`GET /v1/progress/NAME`): the
    /// virtualenvs' pip lines and each function's start, while it waits for the answer.
    public var progress: String?

    public init(configFile: String, force: Bool, replacing: [String] = [], progress: String? = nil) {
        self.configFile = configFile
        self.force = force
        self.replacing = replacing
        self.progress = progress
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        configFile = try container.decode(String.self, forKey: .configFile)
        force = try container.decode(Bool.self, forKey: .force)
        // Absent in requests of an aether from before `dev` (and before progress).
        replacing = try container.decodeIfPresent([String].self, forKey: .replacing) ?? []
        progress = try container.decodeIfPresent(String.self, forKey: .progress)
    }
}

/// The answer to `GET /v1/progress/NAME?after=N`: the lines of the deploy named NAME from line
/// N on (none for a name no deploy in progress has).
public struct ProgressDocument: Codable, Sendable, Equatable {
    public var lines: [String]
    /// The `after` of the next request.
    public var next: Int
}

public struct DeployResult: Codable, Sendable, Equatable {
    public var added: [String]
    public var replaced: [String]
    public var unchanged: [String]
    /// The replaced functions whose handler file's bytes changed (whatever else did).
    public var handlerChanged: [String]
}

/// The answer to `DELETE /v1/functions/ID` (`aether rm`).
public struct RemoveResult: Codable, Sendable, Equatable {
    public var removed: String
    /// The trigger port it gave back.
    public var port: Int
}

/// The body of `POST /v1/functions/ID/rollback` (`aether rollback`).
public struct RollbackRequest: Codable, Sendable {
    /// The version to run again; nil: the one before the version it runs.
    public var to: Int?

    public init(to: Int?) { self.to = to }
}

/// The answer to a rollback.
public struct RollbackResult: Codable, Sendable, Equatable {
    public var function: String
    /// The version it was rolled back to.
    public var to: Int
    /// The number of the version it runs now (a rollback is a new version, with `to`'s content).
    public var version: Int
    /// False when it already ran `to`'s configuration and code (nothing was started).
    public var replaced: Bool
}

/// The answer to `GET /v1/functions/ID/versions` (`aether versions`).
public struct VersionsDocument: Codable, Sendable, Equatable {
    public var function: String
    /// The version it runs: the newest kept.
    public var current: Int?
    /// `keep_versions`.
    public var keep: Int
    /// Oldest first.
    public var versions: [VersionInfo]
}

public struct VersionInfo: Codable, Sendable, Equatable {
    public var number: Int
    /// UTC, ISO 8601.
    public var deployedAt: String
    /// What made it: `aether up -c FILE`, `aether deploy FILE`, `aether rollback ID --to N`.
    public var change: String
    /// The configuration file it came from.
    public var source: String
    /// Its handler file as it was deployed.
    public var handler: String
    /// SHA-256 over its code files' names and bytes (its code copy's name).
    public var code: String
    /// SHA-256 of its handler file (with `requirements:`, of the handler's and the requirements
    /// file's digests).
    public var handlerSha256: String?
}

public struct RestartRequest: Codable, Sendable {
    /// The `aether` binary the successor runs (the one `aether restart` was run with: an upgrade
    /// installs a new binary, then restarts).
    public var executable: String

    public init(executable: String) { self.executable = executable }
}

public struct RestartResult: Codable, Sendable {
    /// The PID of the orchestrator being replaced, and of its successor.
    public var pid: Int
    public var successor: Int
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
