/// A validated configuration: every value here already satisfies its rule.
public struct AetherConfig: Sendable, Equatable {
    public var orchestrator: OrchestratorConfig
    public var functions: [FunctionConfig]

    public init(orchestrator: OrchestratorConfig = OrchestratorConfig(), functions: [FunctionConfig]) {
        self.orchestrator = orchestrator
        self.functions = functions
    }
}

/// Settings of the orchestrator process itself (the `orchestrator:` section).
public struct OrchestratorConfig: Sendable, Equatable {
    public static let defaultSnapshotDirectory = "/dev/shm/aetherless"

    /// Data capacity of each shared-memory ring.
    public var shmBufferSize: ShmBufferSize
    /// Restored idle instances kept ready across all functions.
    public var warmPoolSize: WarmPoolSize
    /// Budget of one snapshot restore; a slower restore is an error, not a cold start.
    public var restoreTimeout: RestoreTimeout
    /// Absolute path of the folder holding CRIU images.
    public var snapshotDirectory: String

    public init(
        shmBufferSize: ShmBufferSize = .standard,
        warmPoolSize: WarmPoolSize = .standard,
        restoreTimeout: RestoreTimeout = .standard,
        snapshotDirectory: String = Self.defaultSnapshotDirectory
    ) {
        self.shmBufferSize = shmBufferSize
        self.warmPoolSize = warmPoolSize
        self.restoreTimeout = restoreTimeout
        self.snapshotDirectory = snapshotDirectory
    }
}

/// One function (an entry of `functions:`).
public struct FunctionConfig: Sendable, Equatable {
    /// How the handler program is started.
    public enum Launcher: Sendable, Equatable {
        /// A `.py` file, run with `python3`.
        case python
        /// Any other file, executed directly.
        case executable
    }

    public var id: FunctionID
    public var memoryLimit: MemoryLimit
    public var triggerPort: Port
    /// Absolute path of the handler program (relative paths in the file are resolved against
    /// the configuration file's folder).
    public var handlerPath: String
    public var timeout: FunctionTimeout
    /// Extra environment variables for the handler process.
    public var environment: [String: String]

    public init(
        id: FunctionID,
        memoryLimit: MemoryLimit,
        triggerPort: Port,
        handlerPath: String,
        timeout: FunctionTimeout,
        environment: [String: String] = [:]
    ) {
        self.id = id
        self.memoryLimit = memoryLimit
        self.triggerPort = triggerPort
        self.handlerPath = handlerPath
        self.timeout = timeout
        self.environment = environment
    }

    public var launcher: Launcher {
        handlerPath.hasSuffix(".py") ? .python : .executable
    }
}
