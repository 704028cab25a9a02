public import AetherCore
import AetherIPC
import AetherNet
import AetherSystem
public import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `aether up`: runs every function of a configuration, the gateway in front of them and the
/// control API, until `aether down`, SIGTERM or Ctrl-C.
public final class Orchestrator: Sendable {
    public let configFile: String
    let settings: OrchestratorConfig
    private let initialFunctions: [FunctionConfig]
    let logger: Logger
    private let group: any EventLoopGroup
    private let pythonSDK: String?
    /// Copies of snapshot functions started ahead of demand (`warm_pool_size`).
    let warmPool: WarmPoolManager
    let gateway: Gateway
    /// Prometheus metrics (`/metrics`), recorded by the functions as they serve.
    let metrics = OrchestratorMetrics()
    private let startedAt = ContinuousClock.now
    /// Where the deployed state is kept (`state_dir`).
    let store: DesiredStateStore
    /// The stored state `up` resumes (`aether up` without a file), nil for `up -c FILE`.
    private let resumed: DesiredState?
    /// `up --takeover`: take over from the orchestrator running on the control socket.
    private let takesOver: Bool
    /// The virtualenvs of functions with `requirements:` (`<state_dir>/venvs`).
    let virtualenvs: VirtualenvCache
    /// Every deployed version of each function (`<state_dir>/versions`): `aether versions`,
    /// `aether rollback`.
    let versionStore: VersionStore
    /// Exports request traces (`otlp_endpoint`); nil without one, or when its exporter could not
    /// be made (`tracingFailure`, which `start()` reports).
    let tracing: RequestTracing?
    private let tracingFailure: OrchestratorError?

    struct State {
        /// The generation of each function that serves it now.
        var functions: [FunctionID: DeployedFunction] = [:]
        var handshakes: [FunctionID: HandshakeServer] = [:]
        var generation = 0
        /// A deploy or rm is in progress (one at a time).
        var changing = false
        /// SHA-256 of each running generation's handler file, taken when it was started.
        var handlerHashes: [FunctionID: String?] = [:]
        /// What is stored in `state_dir`: set once `start()` stored (or resumed) it, then by every
        /// accepted deploy and rm.
        var desired: DesiredState?
        var criuPrimed = false
        var control: ControlServer?
        var metrics: MetricsServer?
        var memory: MemoryCgroup?
        /// `confinement: true`: what sandboxes are made of (nil: handlers run unconfined).
        var sandboxHost: SandboxHost?
        /// `confinement: true`: the counter of system calls the sandboxes refused (nil where
        /// BPF cannot count them; the log says why).
        var refusals: SyscallRefusals?
        /// `dataplane: ebpf`: the sk_lookup (and XDP) programs steering trigger ports.
        var dataplane: EbpfDataplane?
        var shutdownIsRequested = false
        /// `start()` finished: every initial function serves.
        var ready = false
        /// The orchestrator this one takes over from (`aether restart`) while it does.
        var predecessor: Predecessor?
        /// Letting go for a successor: no more deploys or restarts.
        var handingOver = false
    }

    let state = Mutex(State())
    /// The progress lines of the deploy in progress, under the name its client gave.
    let deployProgress = Mutex<(name: String?, lines: [String])>((nil, []))
    private let shutdownRequested: EventLoopPromise<Void>
    var dataplane: EbpfDataplane? { state.withLock { $0.dataplane } }

    /// `resuming`: the stored state this configuration was loaded from (`aether up` without a
    /// file); then `start()` does not store it again, and says which handlers changed since.
    /// `takingOver`: the orchestrator answering on the control socket hands its ports over to this
    /// one once it serves every function (`aether restart`).
    public init(
        config: AetherConfig, configFile: String, logger: Logger, resuming: DesiredState? = nil,
        takingOver: Bool = false
    ) {
        takesOver = takingOver
        self.configFile = configFile
        settings = config.orchestrator
        initialFunctions = config.functions
        store = DesiredStateStore(
            folder: config.orchestrator.stateDirectory ?? OrchestratorConfig.defaultStateDirectory)
        resumed = resuming
        virtualenvs = VirtualenvCache(folder: store.folder + "/venvs")
        versionStore = VersionStore(folder: store.folder + "/versions", keep: config.orchestrator.keepVersions.rawValue)
        self.logger = logger
        warmPool = WarmPoolManager(
            capacity: config.orchestrator.warmPoolSize.rawValue, memoryBudget: config.orchestrator.warmPoolMemory.bytes)
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(2, System.coreCount))
        pythonSDK = PythonSDKLocator.locate()
        var tracing: RequestTracing?
        var tracingFailure: OrchestratorError?
        if let endpoint = config.orchestrator.otlpEndpoint {
            do {
                tracing = try RequestTracing(endpoint: endpoint, logger: logger)
            } catch {
                tracingFailure = .tracingUnavailable(endpoint: endpoint.url, reason: "\(error)")
            }
        }
        self.tracing = tracing
        self.tracingFailure = tracingFailure
        gateway = Gateway(
            group: group, address: config.orchestrator.listenAddress, clientTimeout: config.orchestrator.clientTimeout,
            tracing: tracing)
        shutdownRequested = group.next().makePromise()
    }

    // MARK: Start

    /// Binds the control socket and starts every function; fails fast (stopping whatever was
    /// started) if any function cannot be started.
    public func start() async throws(AetherError) {
        let socket = settings.controlSocket
        let predecessor = takesOver ? Predecessor.find(controlSocket: socket) : nil
        if predecessor == nil && ControlClient.answers(socketPath: socket) {
            throw .orchestrator(.alreadyRunning(controlSocket: socket))
        }
        if let predecessor {
            state.withLock { $0.predecessor = predecessor }
            logger.info("taking over from the orchestrator with pid \(predecessor.pid)")
        }
        if let tracingFailure { throw .orchestrator(tracingFailure) }
        DescriptorLimit.raiseSoftToHard(logger: logger)
        let folder = String(socket[..<(socket.lastIndex(of: "/") ?? socket.startIndex)])
        if !folder.isEmpty { try Self.makeFolder(folder, for: "the control socket (control_socket)") }
        let staleSockets = HandshakeServer.removeStale(in: folder.isEmpty ? "/" : folder)
        if !staleSockets.isEmpty {
            logger.info("removed handler sockets left by a dead orchestrator: \(staleSockets.joined(separator: ", "))")
        }
        switch MemoryCgroup.create() {
        case .success(let cgroup): state.withLock { $0.memory = cgroup }
        case .failure(let failure): throw .orchestrator(.memoryLimitsUnavailable(reason: failure.reason))
        }
        do {
            // Restored copies are re-parented to us when criu exits, so we can reap them.
            try ChildSubreaper.enable()
        } catch {
            throw .orchestrator(.subreaperUnavailable(reason: error.reason))
        }
        try Self.makeFolder(settings.snapshotDirectory, for: "snapshot images (snapshot_dir)")
        do {
            try store.prepareFolder()
        } catch {
            throw .orchestrator(
                .folderUnavailable(
                    purpose: "the deployed state (state_dir)", path: store.folder, reason: error.description))
        }
        if settings.confinement {
            // An empty folder each instance mounts its private staging tmpfs on, in its own
            // mount namespace (the host only ever sees it empty).
            let staging = (folder.isEmpty ? "" : folder) + "/sandbox"
            try Self.makeFolder(staging, for: "the sandboxes' staging folder")
            do {
                let host = SandboxHost(
                    helper: try InstanceSandbox.locateHelper(), staging: staging,
                    identities: try IdentityTable(path: store.folder + "/identities", range: settings.uidRange))
                state.withLock { $0.sandboxHost = host }
            } catch {
                throw .confinement(error)
            }
            do {
                let refusals = try SyscallRefusals()
                state.withLock { $0.refusals = refusals }
            } catch {
                // Counting is how refusals are seen, not what refuses them: the filter works
                // without it, so a host without BPF still runs confined.
                logger.warning("refused system calls will not be counted: \(error)")
            }
        }
        installTokens(try loadSecrets(for: initialFunctions), for: initialFunctions)
        let staleSecrets = SecretFiles.removeStale()
        if !staleSecrets.isEmpty {
            logger.info("removed secret files left by a dead orchestrator: \(staleSecrets.joined(separator: ", "))")
        }
        let staleImages = SnapshotImages.removeStale(in: settings.snapshotDirectory)
        if !staleImages.isEmpty {
            logger.info("removed snapshot images left by a dead orchestrator: \(staleImages.joined(separator: ", "))")
        }
        try primeCriu(for: initialFunctions)
        let stale = SharedMemoryRegion.removeStale()
        if !stale.isEmpty {
            logger.info("removed shared memory left by a dead orchestrator: \(stale.joined(separator: ", "))")
        }
        if settings.dataplane == .ebpf {
            // No fallback: asked for eBPF, `up` fails if it cannot load or attach.
            do {
                // An interface takes one XDP program: a successor attaches its own once the
                // predecessor has let go.
                let loaded = try EbpfDataplane(
                    listenAddress: settings.listenAddress,
                    xdp: predecessor != nil
                        ? nil : settings.xdpInterface.map { XDPAttachment(interface: $0, mode: settings.xdpMode) })
                state.withLock { $0.dataplane = loaded }
                for link in loaded.status().links {
                    logger.info(
                        "eBPF program attached",
                        metadata: [
                            "program": "\(link.program)", "target": "\(link.target)", "link_id": "\(link.linkID)",
                        ])
                }
            } catch {
                throw .ebpf(error)
            }
        }

        // Stopped by shutdown(), which a failure from here on calls.
        if let tracing {
            tracing.run()
            logger.info("exporting traces over OTLP/HTTP", metadata: ["otlp_endpoint": "\(tracing.endpoint.tracesURL)"])
        }
        do {
            // A successor answers beside its predecessor until the hand-over, then moves its
            // socket onto the path.
            let control = try await ControlServer.bind(
                path: predecessor == nil ? socket : socket + ".next", backend: self, group: group)
            state.withLock { $0.control = control }
            if let port = settings.metricsPort {
                let metrics = try await MetricsServer.bind(port: port, backend: self, group: group)
                state.withLock { $0.metrics = metrics }
            }
            var waiting: [FunctionConfig] = []
            for function in initialFunctions {
                // With `dataplane: sockets` a process handler binds its trigger port itself: a
                // successor's can only start once the predecessor's has stopped.
                if predecessor != nil && settings.dataplane == .sockets && function.handlerProtocol == .process {
                    waiting.append(function)
                    continue
                }
                try await startFunction(function)
            }
            if predecessor != nil {
                try await completeTakeover(control: control)
                for function in waiting { try await startFunctionWhenItsPortIsFree(function) }
            }
            try storeInitialState()
        } catch {
            await shutdown()
            throw error
        }
        state.withLock { $0.ready = true }
        logger.info(
            "serving \(initialFunctions.count) function(s)",
            metadata: ["control_socket": "\(socket)", "listen": "\(settings.listenAddress)"])
    }

    /// `up -c FILE` replaces the stored state with FILE once every function serves (a failed
    /// `up` leaves it alone); a resumed `up` keeps it, and says which handler files changed since
    /// they were deployed (the current files run).
    private func storeInitialState() throws(AetherError) {
        let hashes = state.withLock { $0.handlerHashes }
        if let resumed {
            for function in initialFunctions {
                guard let record = resumed.record(of: function.id), let now = hashes[function.id] ?? nil,
                    let then = record.handlerSha256, now != then
                else { continue }
                logger.warning(
                    "the handler of function \(function.id) changed since it was deployed at \(record.deployedAt): running the file as it is now",
                    metadata: [
                        "handler": "\(function.handlerPath)", "sha256_deployed": "\(then)", "sha256_now": "\(now)",
                    ])
            }
            state.withLock { $0.desired = resumed }
            recordStartedVersions(change: "aether up")
            return
        }
        let desired = DesiredState.initial(
            config: AetherConfig(orchestrator: settings, functions: initialFunctions), file: configFile,
            hashes: hashes, at: DesiredState.now())
        do {
            try store.save(desired)
        } catch {
            throw .orchestrator(
                .folderUnavailable(
                    purpose: "the deployed state (state_dir)", path: store.path, reason: error.description))
        }
        state.withLock { $0.desired = desired }
        logger.info("stored the deployed state", metadata: ["state": "\(store.path)"])
        recordStartedVersions(change: "aether up -c \(configFile)")
    }

    /// Each function `up` started is a version of it, unless its newest kept version is the
    /// same configuration and code (an `up` that resumes what was deployed adds none). A version
    /// that cannot be recorded is a warning: the function serves, `aether rollback` lacks it.
    private func recordStartedVersions(change: String) {
        let (hashes, desired) = state.withLock { ($0.handlerHashes, $0.desired) }
        let time = DesiredState.now()
        for function in initialFunctions {
            let latest = versionStore.records(of: function.id).last.flatMap {
                try? versionStore.version($0.number, of: function.id)
            }
            if let latest, latest.isSame(as: function) { continue }
            do {
                try versionStore.record(
                    function, hash: hashes[function.id] ?? nil, change: change,
                    source: desired?.record(of: function.id)?.source ?? configFile, at: time, settings: settings)
            } catch {
                logger.warning("function \(function.id) runs, but its version was not kept: \(error)")
            }
        }
    }

    /// `mkdir -p` with mode 0700; `purpose` names the setting in the error.
    private static func makeFolder(_ path: String, for purpose: String) throws(AetherError) {
        var partial = ""
        for component in path.split(separator: "/") {
            partial += "/" + component
            do {
                try systemCall("mkdir", on: partial, failsWith: .minusOne) { mkdir(partial, 0o700) }
            } catch {
                if error.errno == EEXIST { continue }
                throw .orchestrator(.folderUnavailable(purpose: purpose, path: path, reason: error.description))
            }
        }
    }

    /// Installs criu's kernel-probe cache the first time a snapshot function is started (at
    /// `up`, or by the first deploy that brings one), so no restore pays the probe.
    func primeCriu(for functions: [FunctionConfig]) throws(AetherError) {
        guard functions.contains(where: \.usesCriu) else { return }
        let needed = state.withLock { state in
            defer { state.criuPrimed = true }
            return !state.criuPrimed
        }
        guard needed else { return }
        do {
            try Criu(path: settings.criuPath).primeKernelCache()
        } catch {
            state.withLock { $0.criuPrimed = false }
            throw .criu(error)
        }
        if let reason = Criu.keepPerfSchedulingHooksOn() {
            logger.warning("\(reason): each restore after a second of idle waits for an RCU grace period")
        }
    }

    /// Starts one function that is not running yet, on its own port: an sdk function is routed
    /// while it starts. With `installs` it is the function's generation once it serves (in
    /// `functions`); a deploy installs its new generations itself, at its commit.
    @discardableResult
    func startFunction(
        _ config: FunctionConfig, handlerHash: String?? = nil, installs: Bool = true
    ) async throws(AetherError) -> DeployedFunction {
        let hash = handlerHash ?? Self.handlerHash(of: config)
        let function = try await launch(config, routing: .whileStarting, takingPort: true)
        if installs {
            state.withLock {
                $0.functions[config.id] = function
                $0.handlerHashes[config.id] = hash
            }
        }
        return function
    }

    /// SHA-256 of a function's handler file (nil if it cannot be read). With `requirements:`,
    /// SHA-256 of the handler's and the requirements file's digests: a deploy replaces a function
    /// whose requirements changed as it does one whose handler did.
    static func handlerHash(of config: FunctionConfig) -> String? {
        guard let handler = try? SHA256.hex(ofFile: config.handlerPath) else { return nil }
        guard let requirements = config.requirements else { return handler }
        guard let listed = try? SHA256.hex(ofFile: requirements) else { return nil }
        return SHA256.hex(of: Array("\(handler) requirements \(listed)".utf8))
    }

    /// The virtualenv of a function with `requirements:`, from the cache or built now (on a
    /// background thread: pip may run for minutes), pip's lines logged as they come.
    private func virtualenv(
        for config: FunctionConfig, requirements: String
    ) async throws(VirtualenvError)
        -> Virtualenv
    {
        let promise = group.next().makePromise(of: Virtualenv.self)
        let python = VirtualenvCache.locate(python: settings.python, forOtherUsers: settings.confinement)
        let (cache, logger, id) = (virtualenvs, logger, config.id)
        let progress: @Sendable (String) -> Void = { [weak self] line in self?.reportProgress(line) }
        BackgroundThread.start(name: "venv-\(id)") {
            do throws(VirtualenvError) {
                var announced = false
                let (virtualenv, built) = try cache.prepare(function: id, requirements: requirements, python: python) {
                    line in
                    if !announced {
                        announced = true
                        logger.info("\(id): building its virtualenv from \(requirements)")
                        progress("\(id): building its virtualenv from \(requirements)")
                    }
                    logger.info("\(id): \(line)")
                    progress("\(id): \(line)")
                }
                logger.info(
                    built ? "\(id): built its virtualenv" : "\(id): reusing its virtualenv",
                    metadata: ["virtualenv": "\(virtualenv.folder)"])
                promise.succeed(virtualenv)
            } catch {
                promise.fail(error)
            }
        }
        do {
            return try await promise.futureResult.get()
        } catch let error as VirtualenvError {
            throw error
        } catch {
            throw .folderUnavailable(path: virtualenvs.folder, reason: "\(error)")
        }
    }

    /// Takes a function's trigger port: the gateway's listener for an sdk function; for a
    /// process handler with eBPF, the data plane's hold on the port (the handler binds a private
    /// port and the kernel steers the trigger port to it). Without eBPF a process handler binds
    /// the trigger port itself. Taking over, the predecessor's socket on the port is shared
    /// (a copy, pidfd_getfd) instead of a bind that would fail while it runs.
    private func takePort(of config: FunctionConfig) async throws(OrchestratorError) {
        let dataplane = dataplane
        let port = config.triggerPort.rawValue
        let inherited = state.withLock { $0.predecessor }.flatMap {
            try? HandlerSockets.takeListeningSocket(pid: $0.pid, port: port).take()
        }
        if config.handlerProtocol == .sdk {
            try await gateway.listen(
                port: config.triggerPort, function: config.id, instances: config.maxInstances.rawValue,
                dataplane: dataplane, adopting: inherited)
            return
        }
        guard let dataplane else {
            if let inherited { close(inherited) }
            return
        }
        do {
            if let inherited {
                try dataplane.reserve(port: port, adopting: OwnedDescriptor(owning: inherited))
            } else {
                try dataplane.reserve(port: port)
            }
        } catch {
            throw .bindFailed(
                what: "trigger port \(config.triggerPort) of function \(config.id)",
                address: ListeningSocket.display(address: settings.listenAddress, port: config.triggerPort.rawValue),
                reason: error.description)
        }
    }

    /// Gives a trigger port back (`takePort`'s counterpart): closes the gateway's listener (sdk)
    /// and removes the port from the data plane's maps.
    func releasePort(_ port: UInt16, of config: FunctionConfig) async {
        let dataplane = dataplane
        if config.handlerProtocol == .sdk {
            await gateway.close(port: port, dataplane: dataplane)
        } else {
            try? dataplane?.release(port: port)
        }
    }

    /// When an sdk generation gets its trigger port's route.
    enum Routing {
        /// Before it starts (its port is served by nobody else): requests that arrive while it
        /// starts wait in its queue for its first instance instead of being refused with 503. A
        /// process handler's port holds their SYNs meanwhile (the data plane).
        case whileStarting
        /// Not by `launch`: a deploy routes all its new generations at once, at its commit.
        case atCommit
    }

    /// A new generation of a function, started and ready. (A process handler with eBPF takes
    /// its trigger port when it reports READY, whatever `routing` says.)
    /// `takingPort`: take the function's trigger port too (a function new on its port), once it
    /// is routed: a request that reaches the gateway on it then always finds its function.
    /// `reusingKeptImage`: restore a kept CRIU image with the function's key instead of running
    /// init (nil: when started by `up`, `.whileStarting`; a deploy's replacement builds afresh,
    /// a rollback's reuses).
    func launch(
        _ config: FunctionConfig, routing: Routing, takingPort: Bool = false, reusingKeptImage: Bool? = nil
    ) async throws(AetherError) -> DeployedFunction {
        if config.launcher == .python && config.handlerProtocol == .sdk && pythonSDK == nil {
            throw .handler(
                .spawnFailed(
                    function: config.id, program: "\(settings.python) (the aetherless runtime)",
                    reason:
                        "the Python handler runtime (sdk/python) was not found next to the aether binary; set AETHER_PYTHON_SDK to its folder"
                ))
        }
        // The interpreter of this function's instances: its virtualenv's, with `requirements:`.
        var functionSettings = settings
        if let requirements = config.requirements {
            do {
                functionSettings.python = try await virtualenv(for: config, requirements: requirements).python
            } catch {
                throw .virtualenv(error)
            }
        }
        let handshake: HandshakeServer
        if let existing = state.withLock({ $0.handshakes[config.id] }) {
            handshake = existing
        } else {
            do {
                handshake = try await HandshakeServer.bind(
                    path: UnixSocketPath.handlerSocket(
                        function: config.id, controlSocket: settings.controlSocket, owner: getpid()),
                    group: group)
            } catch {
                throw .orchestrator(error)
            }
            state.withLock { $0.handshakes[config.id] = handshake }
        }
        let (memory, generation) = state.withLock { state in
            state.generation += 1
            return (state.memory, state.generation)
        }
        guard let memory else {
            throw .orchestrator(.memoryLimitsUnavailable(reason: "the orchestrator has not been started"))
        }
        let sandbox: InstanceSandbox?
        do {
            sandbox = try makeSandbox(
                for: config, python: functionSettings.python, generation: generation, handshake: handshake)
        } catch {
            await closeHandshakeIfUnused(config.id)
            throw .confinement(error)
        }
        // An sdk function's instances read their answers on its port's loops (Gateway, "Home loops").
        let homeLoops =
            config.handlerProtocol == .sdk
            ? gateway.homeLoops(port: config.triggerPort.rawValue, instances: config.maxInstances.rawValue) : []
        let function = DeployedFunction(
            config: config, orchestrator: functionSettings, pythonSDK: pythonSDK, generation: generation,
            memory: memory,
            sandbox: sandbox, dataplane: dataplane, handshake: handshake, group: group, homeLoops: homeLoops,
            logger: logger,
            metrics: metrics.function(config.id), reusesKeptImage: reusingKeptImage ?? (routing == .whileStarting),
            warmPool: warmPool)
        let routed = routing == .whileStarting && config.handlerProtocol == .sdk
        if routed { gateway.routes.set(function, port: config.triggerPort.rawValue) }
        if takingPort {
            do {
                try await takePort(of: config)
            } catch {
                if routed { gateway.routes.set(nil, port: config.triggerPort.rawValue) }
                await closeHandshakeIfUnused(config.id)
                throw .orchestrator(error)
            }
        }
        do {
            try await function.start()
        } catch {
            if routed { gateway.routes.set(nil, port: config.triggerPort.rawValue) }
            if takingPort { await releasePort(config.triggerPort.rawValue, of: config) }
            await closeHandshakeIfUnused(config.id)
            throw .handler(error)
        }
        return function
    }

    /// The sandbox of `config`'s instances (nil with `confinement: false`). What its handler
    /// needs from the host is bound into its view: its own folder, the Python SDK's, and for a
    /// process handler its AETHER_SOCKET, which only its identity may connect to. `python`: the
    /// interpreter its instances run with (the `python` setting, or its virtualenv's).
    private func makeSandbox(
        for config: FunctionConfig, python: String, generation: Int, handshake: HandshakeServer
    ) throws(ConfinementError) -> InstanceSandbox? {
        guard let host = state.withLock({ $0.sandboxHost }) else {
            // /run/secrets is part of the sandbox's view: without one there is nowhere to put them.
            if !config.secrets.isEmpty { throw .needsConfinement(function: config.id, setting: "secrets") }
            if config.network == .loopback { throw .needsConfinement(function: config.id, setting: "network: none") }
            return nil
        }
        let handlerFolder = String(
            config.handlerPath[..<(config.handlerPath.lastIndex(of: "/") ?? config.handlerPath.startIndex)])
        var binds = [handlerFolder.isEmpty ? "/" : handlerFolder]
        // The Python SDK, for any handler (an executable may use it too); ours and read-only.
        if let pythonSDK { binds.append(pythonSDK) }
        // The interpreter's folder (a wrapper's), when given as a path; a virtualenv's bin is
        // bound with the whole virtualenv (its packages are in lib/, beside bin/): the `python`
        // setting's, or the function's own (`requirements:`, under state_dir, which is covered).
        if config.launcher == .python, python.hasPrefix("/"),
            let slash = python.lastIndex(of: "/"), slash != python.startIndex
        {
            let folder = String(python[..<slash])
            let parent = folder.lastIndex(of: "/").map { String(folder[..<$0]) } ?? ""
            let isVirtualenv = folder.hasSuffix("/bin") && !parent.isEmpty && access(parent + "/pyvenv.cfg", F_OK) == 0
            binds.append(isVirtualenv ? parent : folder)
        }
        if config.handlerProtocol == .process { binds.append(handshake.path) }
        let identity = try host.identities.identity(for: config)
        state.withLock { $0.refusals }?.watch(uid: identity.uid)
        // Folders above the binds it cannot enter (a checkout under /root) are covered in its view.
        let covers = InstanceSandbox.covers(for: binds, identity: identity)
        // Its own code, read as it: fail here, naming the folder in the way, rather than as a
        // PermissionError in the handler's log.
        for path in [config.handlerPath] + binds.filter({ $0 != handshake.path }) {
            // Under /tmp, /run and covers the sandbox makes the folders above a bind itself.
            let bound = binds.filter { path == $0 || path.hasPrefix($0 + "/") }.max { $0.count < $1.count }
            let start =
                bound.flatMap { InstanceSandbox.viewMakesFolders(above: $0, covers: covers) ? $0 : nil } ?? "/"
            if let why = identity.whyCannotRead(path, from: start) {
                throw .unreadable(function: config.id, path: path, identity: identity.description, because: why)
            }
        }
        var secrets: String?
        if !config.secrets.isEmpty {
            let contents: [(name: SecretName, contents: [UInt8])]
            do {
                contents = try secretStore.handlerSecrets(of: config)
            } catch {
                throw .secretFiles(path: secretStore.folder, reason: error.description)
            }
            secrets = try SecretFiles.stage(contents, function: config.id, generation: generation, identity: identity)
        }
        let sandbox = try host.sandbox(for: config, binds: binds, covers: covers, secrets: secrets)
        if config.handlerProtocol == .process {
            chown(handshake.path, sandbox.identity.uid, sandbox.identity.gid)
            chmod(handshake.path, 0o600)
        }
        return sandbox
    }

    /// Lets a generation finish its requests (and a replaced process handler its connections),
    /// then stops its instances.
    func retire(_ function: DeployedFunction, handlerConnections: Bool = false) async {
        await function.drain(handlerConnections: handlerConnections)
        await function.stop()
        await closeHandshakeIfUnused(function.id)
    }

    /// Closes a function's handler socket once no generation of it uses it.
    private func closeHandshakeIfUnused(_ id: FunctionID) async {
        let unused = state.withLock { state -> HandshakeServer? in
            guard let server = state.handshakes[id], server.isUnused else { return nil }
            state.handshakes[id] = nil
            return server
        }
        await unused?.close()
    }

    // MARK: Shutdown

    /// Returns when `aether down` asked for a shutdown.
    public func waitForShutdownRequest() async {
        try? await shutdownRequested.futureResult.get()
    }

    public func requestShutdown() {
        let first = state.withLock { state in
            defer { state.shutdownIsRequested = true }
            return !state.shutdownIsRequested
        }
        if first { shutdownRequested.succeed() }
    }

    deinit {
        // A promise must not be dropped unfulfilled (an `up` that failed before serving).
        requestShutdown()
    }

    /// Stops taking requests, lets in-flight ones finish, stops every handler and removes the
    /// sockets and shared memory.
    public func shutdown() async {
        let (running, handingOver) = state.withLock { (Array($0.functions.values), $0.handingOver) }
        let dataplane = dataplane
        // With XDP attached, new connections to draining functions are dropped at the SYN
        // (clients retransmit it; an orchestrator started meanwhile takes them) instead of
        // being accepted only to be answered 503.
        for function in running {
            try? dataplane?.setDropsNewConnections(port: function.config.triggerPort.rawValue, true)
        }
        // Handing over, a process handler's open connections are its to finish (the successor's
        // handlers take the new ones).
        for function in running { await function.drain(handlerConnections: handingOver) }
        await gateway.closeAll(dataplane: dataplane)
        for function in running { await function.stop() }
        dataplane?.close()
        let (servers, metrics, control, memory) = state.withLock { state in
            defer {
                state.dataplane = nil
                state.handshakes = [:]
                state.functions = [:]
                state.metrics = nil
                state.control = nil
            }
            return (Array(state.handshakes.values), state.metrics, state.control, state.memory)
        }
        for server in servers { await server.close() }
        await metrics?.close()
        await control?.close()
        memory?.removeRoot()
        SecretFiles.removeAll()
        // The spans of the last requests are exported before the process ends.
        await tracing?.shutdown()
        logger.info("stopped")
        requestShutdown()
    }

    // MARK: Status

}

extension Orchestrator: ControlAPIBackend {
    func status() -> OrchestratorStatus {
        let running = state.withLock { Array($0.functions.values) }
        return OrchestratorStatus(
            ready: state.withLock { $0.ready }, version: AetherVersion.current, pid: Int(getpid()),
            configFile: configFile, stateFile: store.path,
            controlSocket: settings.controlSocket, listenAddress: settings.listenAddress,
            uptimeSeconds: Double((ContinuousClock.now - startedAt).milliseconds) / 1000,
            functions: running.map { withRefusals($0.status()) }.sorted { $0.id < $1.id },
            dataplane: settings.dataplane.rawValue, ebpf: dataplane?.status(), warmPool: warmPool.status)
    }

    func metricsText() -> String {
        metrics.render(status())
    }

    func functionStatus(_ id: String) -> FunctionStatus? {
        state.withLock { $0.functions.first { $0.key.rawValue == id }?.value }.map { withRefusals($0.status()) }
    }

    /// `status` with the system calls its sandbox refused (counted per uid, so across generations).
    private func withRefusals(_ status: FunctionStatus) -> FunctionStatus {
        guard let confinement = status.confinement, let refusals = state.withLock({ $0.refusals }) else {
            return status
        }
        var status = status
        status.confinement?.refusedSyscalls = refusals.counts(uid: UInt32(confinement.uid))
        return status
    }

    func progress(of name: String, after: Int) -> ProgressDocument {
        deployProgress.withLock { progress in
            guard progress.name == name else { return ProgressDocument(lines: [], next: after) }
            return ProgressDocument(
                lines: Array(progress.lines.dropFirst(after)), next: max(after, progress.lines.count))
        }
    }

    /// A line for the client following the deploy in progress (`aether deploy` prints it).
    func reportProgress(_ line: String) {
        deployProgress.withLock { progress in
            if progress.name != nil && progress.lines.count < 100_000 { progress.lines.append(line) }
        }
    }

    func logs(of id: String, lines: Int) -> LogsDocument? {
        guard let function = state.withLock({ $0.functions.first { $0.key.rawValue == id }?.value }) else {
            return nil
        }
        return LogsDocument(function: id, lines: function.logs.tail(lines))
    }
}
