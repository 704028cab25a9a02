import AetherIPC

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
    public static let defaultControlSocket = "/run/aetherless/aether.sock"
    public static let defaultListenAddress = "127.0.0.1"
    public static let defaultCriuPath = "/opt/aetherless/criu/bin/criu"
    public static let defaultPython = "python3"
    /// Where the deployed state lives when neither the file, `--state-dir` nor
    /// `$AETHER_STATE_DIR` says otherwise.
    public static let defaultStateDirectory = "/var/lib/aetherless"
    /// The environment variable naming the state folder (after `--state-dir` and `state_dir`).
    public static let stateDirectoryVariable = "AETHER_STATE_DIR"

    /// Data capacity of each shared-memory ring.
    public var shmBufferSize: ShmBufferSize
    /// The warm pool across all snapshot functions: copies started ahead of demand and not yet
    /// assigned (restored or forked, stopped), and the cap on their `min_warm` in all.
    public var warmPoolSize: WarmPoolSize
    /// Memory the warm pool's copies may take in all (each counted at its `memory_limit_mb`).
    public var warmPoolMemory: WarmPoolMemory
    /// Budget of one snapshot restore; a slower restore is an error, not a cold start.
    public var restoreTimeout: RestoreTimeout
    /// Absolute path of the folder holding CRIU images.
    public var snapshotDirectory: String
    /// Absolute path of the control API's Unix socket; the functions' handler sockets live in
    /// the same folder.
    public var controlSocket: String
    /// The IP address the gateway binds trigger ports on (an IPv4 or IPv6 literal).
    public var listenAddress: String
    /// Slow or idle clients are cut off after this long.
    public var clientTimeout: ClientTimeout
    /// The criu binary used for `snapshot: true` functions.
    public var criuPath: String
    /// Serve Prometheus metrics on 127.0.0.1 at this port (nil: only on the control socket).
    public var metricsPort: Port?
    /// Export traces of every request over OTLP/HTTP to this collector (nil: no tracing at all).
    public var otlpEndpoint: OTLPEndpoint?
    /// How connections to trigger ports reach their function.
    public var dataplane: Dataplane
    /// The interface the XDP counter program attaches to (nil: no XDP program). Only with
    /// `dataplane: ebpf`.
    public var xdpInterface: String?
    public var xdpMode: XDPMode
    /// The interpreter that runs `.py` handlers: an absolute path, or a command looked up in
    /// PATH (the default, `python3`).
    public var python: String
    /// Absolute path of the folder keeping the deployed state (what `aether up` without a file
    /// resumes). nil: the file does not set `state_dir` (the command line decides:
    /// `--state-dir`, else `$AETHER_STATE_DIR`, else `defaultStateDirectory`).
    public var stateDirectory: String?
    /// Confine every handler (its own unprivileged user, namespaces, syscall filter, limits).
    /// false: handlers run as root in the host's namespaces, unconfined (benchmarks, hosts that
    /// cannot confine).
    public var confinement: Bool
    /// The user and group ids handlers of functions without `user:` are given one of.
    public var uidRange: UIDRange
    /// `orchestrator.keep_versions`: versions kept per function (`aether versions`, `rollback`).
    public var keepVersions: KeptVersions

    public enum Dataplane: String, Sendable, Equatable, CaseIterable {
        /// An sk_lookup BPF program steers each trigger port to its socket (the gateway's, or a
        /// process handler's own); nothing binds the trigger ports themselves.
        case ebpf
        /// The gateway binds the sdk functions' trigger ports; process handlers bind theirs.
        case sockets
    }

    public enum XDPMode: String, Sendable, Equatable, CaseIterable {
        /// SKB mode: every interface, `lo` included.
        case generic
        /// Driver mode: only where the driver supports XDP (veth does, lo does not).
        case native
    }

    public init(
        shmBufferSize: ShmBufferSize = .standard,
        warmPoolSize: WarmPoolSize = .standard,
        warmPoolMemory: WarmPoolMemory = .standard,
        restoreTimeout: RestoreTimeout = .standard,
        snapshotDirectory: String = Self.defaultSnapshotDirectory,
        controlSocket: String = Self.defaultControlSocket,
        listenAddress: String = Self.defaultListenAddress,
        clientTimeout: ClientTimeout = .standard,
        criuPath: String = Self.defaultCriuPath,
        metricsPort: Port? = nil,
        otlpEndpoint: OTLPEndpoint? = nil,
        dataplane: Dataplane = .ebpf,
        xdpInterface: String? = nil,
        xdpMode: XDPMode = .generic,
        python: String = Self.defaultPython,
        stateDirectory: String? = nil,
        confinement: Bool = true,
        uidRange: UIDRange = .standard,
        keepVersions: KeptVersions = .standard
    ) {
        self.shmBufferSize = shmBufferSize
        self.warmPoolSize = warmPoolSize
        self.warmPoolMemory = warmPoolMemory
        self.restoreTimeout = restoreTimeout
        self.snapshotDirectory = snapshotDirectory
        self.controlSocket = controlSocket
        self.listenAddress = listenAddress
        self.clientTimeout = clientTimeout
        self.criuPath = criuPath
        self.metricsPort = metricsPort
        self.otlpEndpoint = otlpEndpoint
        self.dataplane = dataplane
        self.xdpInterface = xdpInterface
        self.xdpMode = xdpMode
        self.python = python
        self.stateDirectory = stateDirectory
        self.confinement = confinement
        self.uidRange = uidRange
        self.keepVersions = keepVersions
    }

    /// The largest message one ring carries (docs/shm-layout.md, the ring's `max_payload`).
    public var maximumMessage: Int { RingLayout.maximumPayload(capacity: shmBufferSize.bytes) }

    /// The largest request body that fits in one request message next to a maximal request head.
    public var largestBodyFitting: Int {
        maximumMessage - InvocationLimits.maximumHead - InvocationFormat.requestFixedSize
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

    /// How requests reach the handler.
    public enum HandlerProtocol: String, Sendable, Equatable, CaseIterable {
        /// The gateway terminates HTTP and passes each request through the instance's rings.
        case sdk
        /// The handler serves HTTP on the trigger port itself (the seed's protocol).
        case process
    }

    /// The network a confined handler sees.
    public enum Network: String, Sendable, Equatable, CaseIterable {
        /// The host's network namespace (the default).
        case host
        /// `none`: a network namespace of its own with only loopback (sdk handlers only: a process
        /// handler must serve on a host port). Not named `none`, which Optional's `.none` shadows.
        case loopback = "none"
    }

    /// Who may invoke the function: checked by the gateway before a request is queued.
    public struct Auth: Sendable, Equatable {
        public enum Kind: String, Sendable, Equatable, CaseIterable {
            /// `Authorization: Bearer <the secret's contents>`.
            case bearer
        }

        public var kind: Kind
        /// The secret holding the token (not handed to the handler unless `secrets:` names it too).
        public var secret: SecretName

        public init(kind: Kind = .bearer, secret: SecretName) {
            self.kind = kind
            self.secret = secret
        }
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
    public var handlerProtocol: HandlerProtocol
    /// Instances the orchestrator may run at once (always 1 for `process` handlers, which bind
    /// the trigger port themselves).
    public var maxInstances: InstanceLimit
    /// Requests in flight per instance (sdk only).
    public var concurrency: Concurrency
    /// Requests waiting for a free instance before 429 (sdk only).
    public var maxQueue: QueueLimit
    /// Largest request body the gateway accepts (sdk only); larger is 413.
    public var maxBody: BodyLimit
    /// Time a new instance has to report READY (and ATTACHED, for sdk handlers).
    public var startupTimeout: StartupTimeout
    /// Start instances from an initialised template instead of cold (sdk only): `snapshot:
    /// true`, `criu` or `fork`; how, `snapshotMode` says.
    public var snapshot: Bool
    /// With `snapshot`: restore copies of a CRIU image of the template, or fork the template
    /// itself, kept alive and frozen (docs/handler-protocol.md, "Snapshots").
    public var snapshotMode: SnapshotMode

    /// `asgi: ATTRIBUTE` or `wsgi: ATTRIBUTE`: the handler file's app object, served by the
    /// Python SDK's adapter straight from the ring (`AETHER_APP`); nil: an `@aetherless.handler`.
    public var app: PythonApp?

    /// An ASGI or WSGI app object of a Python handler module.
    public struct PythonApp: Sendable, Equatable {
        public enum Interface: String, Sendable, CaseIterable { case asgi, wsgi }
        public let interface: Interface
        /// A dotted attribute path of the module (`app`, `api.app`).
        public let attribute: String

        public static let expectation =
            "the name of the app object in the handler module: Python identifiers joined by '.' (e.g. app, api.app)"

        public init(_ interface: Interface, attribute: String) throws(InvalidValueError) {
            let parts = attribute.split(separator: ".", omittingEmptySubsequences: false)
            let identifier = { (part: Substring) -> Bool in
                guard let first = part.unicodeScalars.first, first == "_" || first.properties.isXIDStart else {
                    return false
                }
                return part.unicodeScalars.dropFirst().allSatisfy { $0 == "_" || $0.properties.isXIDContinue }
            }
            guard !parts.isEmpty, parts.allSatisfy(identifier), attribute.utf8.count <= 200 else {
                throw InvalidValueError(
                    what: "\(interface.rawValue) app", value: "\"\(attribute)\"", expected: Self.expectation)
            }
            self.interface = interface
            self.attribute = attribute
        }

        /// What the runtime reads: `asgi:ATTRIBUTE` or `wsgi:ATTRIBUTE`.
        public var environmentValue: String { "\(interface.rawValue):\(attribute)" }
    }

    /// Whether its instances are restored from a CRIU image (criu must be installed).
    public var usesCriu: Bool { snapshot && snapshotMode == .criu }

    /// How a `snapshot` function's instances are made from its initialised template.
    public enum SnapshotMode: String, Sendable, Equatable, CaseIterable {
        /// Each instance is a CRIU restore of the template's image, alone in its own PID, mount
        /// and IPC namespaces (BENCHMARKS.md, "Start modes": why this is what `true` means).
        case criu
        /// Each instance is a child forked from the live template: fastest, pages shared
        /// copy-on-write, but the copies share the template's namespaces (SECURITY.md).
        case fork

        /// What `snapshot: true` means.
        public static let standard = SnapshotMode.criu
    }
    /// Instances kept running while idle (0 = scale to zero).
    public var minWarm: WarmCount
    /// An instance idle this long is stopped, down to `minWarm`.
    public var idleTimeout: IdleTimeout
    /// Run the handler as this existing user (resolved at `up`) instead of an id from
    /// `orchestrator.uid_range`.
    public var user: UserName?
    public var network: Network
    /// Processes and threads per instance (cgroup `pids.max`).
    public var maxPIDs: PidsLimit
    /// CPU per instance (cgroup `cpu.max`); nil: unlimited.
    public var cpuLimit: CPULimit?
    /// The secrets the handler may read, at `/run/secrets/NAME`, in the order the file lists them.
    public var secrets: [SecretName]
    /// Invocation auth at the gateway; nil: anyone who reaches the port may call.
    public var auth: Auth?
    /// Absolute path of a pip requirements file (`requirements:`, relative in the file to its
    /// folder): the handler runs with a virtualenv built from it (Python sdk handlers only).
    public var requirements: String?

    public init(
        id: FunctionID,
        memoryLimit: MemoryLimit,
        triggerPort: Port,
        handlerPath: String,
        timeout: FunctionTimeout,
        environment: [String: String] = [:],
        handlerProtocol: HandlerProtocol = .sdk,
        maxInstances: InstanceLimit = .standard,
        concurrency: Concurrency = .standard,
        maxQueue: QueueLimit = .standard,
        maxBody: BodyLimit = .standard,
        startupTimeout: StartupTimeout = .standard,
        snapshot: Bool = false,
        snapshotMode: SnapshotMode = .standard,
        app: PythonApp? = nil,
        minWarm: WarmCount = .standard,
        idleTimeout: IdleTimeout = .standard,
        user: UserName? = nil,
        network: Network = .host,
        maxPIDs: PidsLimit = .standard,
        cpuLimit: CPULimit? = nil,
        secrets: [SecretName] = [],
        auth: Auth? = nil,
        requirements: String? = nil
    ) {
        self.id = id
        self.memoryLimit = memoryLimit
        self.triggerPort = triggerPort
        self.handlerPath = handlerPath
        self.timeout = timeout
        self.environment = environment
        self.handlerProtocol = handlerProtocol
        self.maxInstances = maxInstances
        self.concurrency = concurrency
        self.maxQueue = maxQueue
        self.maxBody = maxBody
        self.startupTimeout = startupTimeout
        self.snapshot = snapshot
        self.snapshotMode = snapshotMode
        self.app = app
        self.minWarm = minWarm
        self.idleTimeout = idleTimeout
        self.user = user
        self.network = network
        self.maxPIDs = maxPIDs
        self.cpuLimit = cpuLimit
        self.secrets = secrets
        self.auth = auth
        self.requirements = requirements
    }

    /// Every secret the function needs stored: `secrets:` and the `auth:` token's, each once.
    public var referencedSecrets: [SecretName] {
        var names = secrets
        if let auth, !names.contains(auth.secret) { names.append(auth.secret) }
        return names
    }

    public var launcher: Launcher {
        handlerPath.hasSuffix(".py") ? .python : .executable
    }
}
