public import AetherCore
import AetherIPC
public import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `aether up`: runs every function of a configuration, the gateway in front of them and the
/// control API, until `aether down`, SIGTERM or Ctrl-C.
public final class Orchestrator: @unchecked Sendable {
    public let configFile: String
    private let settings: OrchestratorConfig
    private let initialFunctions: [FunctionConfig]
    private let logger: Logger
    private let group: any EventLoopGroup
    private let pythonSDK: String?
    private let registry = FunctionRegistry()
    private let gateway: Gateway
    private let startedAt = NIODeadline.now()

    private let lock = NIOLock()
    private var functions: [FunctionID: FunctionRuntime] = [:]
    private var handshakes: [FunctionID: HandshakeServer] = [:]
    private var generation = 0
    private var deploying = false
    private var criuPrimed = false
    private var control: ControlServer?
    private var metrics: MetricsServer?
    private var memory: MemoryCgroup?
    private let shutdownRequested: EventLoopPromise<Void>
    private var shutdownIsRequested = false

    public init(config: AetherConfig, configFile: String, logger: Logger) {
        self.configFile = configFile
        settings = config.orchestrator
        initialFunctions = config.functions
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(2, System.coreCount))
        pythonSDK = PythonSDKLocator.locate()
        gateway = Gateway(
            group: group, address: config.orchestrator.listenAddress, clientTimeout: config.orchestrator.clientTimeout)
        shutdownRequested = group.next().makePromise()
    }

    // MARK: Start

    /// Binds the control socket and starts every function; fails fast (stopping whatever was
    /// started) if any function cannot be started.
    public func start() async throws(AetherError) {
        let socket = settings.controlSocket
        if ControlClient.answers(socketPath: socket) {
            throw .orchestrator(.alreadyRunning(controlSocket: socket))
        }
        let folder = String(socket[..<(socket.lastIndex(of: "/") ?? socket.startIndex)])
        if !folder.isEmpty { try Self.makeFolder(folder) }
        switch MemoryCgroup.create() {
        case .success(let cgroup): memory = cgroup
        case .failure(let failure): throw .orchestrator(.memoryLimitsUnavailable(reason: failure.reason))
        }
        do {
            // Restored copies are re-parented to us when criu exits, so we can reap them.
            try ChildSubreaper.enable()
        } catch {
            throw .handler(.spawnFailed(function: initialFunctions[0].id, program: "aether", reason: error.reason))
        }
        try Self.makeFolder(settings.snapshotDirectory)
        let staleImages = SnapshotImages.removeStale(in: settings.snapshotDirectory)
        if !staleImages.isEmpty {
            logger.info("removed snapshot images left by a dead orchestrator: \(staleImages.joined(separator: ", "))")
        }
        try primeCriu(for: initialFunctions)
        let stale = SharedMemoryRegion.removeStale()
        if !stale.isEmpty {
            logger.info("removed shared memory left by a dead orchestrator: \(stale.joined(separator: ", "))")
        }

        do {
            control = try await ControlServer.bind(path: socket, orchestrator: self, group: group)
            if let port = settings.metricsPort {
                metrics = try await MetricsServer.bind(port: port, orchestrator: self, group: group)
            }
            for function in initialFunctions {
                try await startFunction(function)
            }
        } catch {
            await shutdown()
            throw error
        }
        logger.info(
            "serving \(initialFunctions.count) function(s)",
            metadata: ["control_socket": "\(socket)", "listen": "\(settings.listenAddress)"])
    }

    private static func makeFolder(_ path: String) throws(AetherError) {
        var partial = ""
        for component in path.split(separator: "/") {
            partial += "/" + component
            if mkdir(partial, 0o700) != 0 && errno != EEXIST {
                throw .orchestrator(
                    .bindFailed(
                        what: "the control socket", address: path,
                        reason: "mkdir \(partial): \(String(cString: strerror(errno)))"))
            }
        }
    }

    /// Installs criu's kernel-probe cache the first time a snapshot function is started (at
    /// `up`, or by the first deploy that brings one), so no restore pays the probe.
    private func primeCriu(for functions: [FunctionConfig]) throws(AetherError) {
        guard functions.contains(where: \.snapshot) else { return }
        let needed = lock.withLock {
            defer { criuPrimed = true }
            return !criuPrimed
        }
        guard needed else { return }
        do {
            try Criu(path: settings.criuPath).primeKernelCache()
        } catch {
            lock.withLock { criuPrimed = false }
            throw .criu(error)
        }
    }

    /// Starts one function that is not running yet.
    private func startFunction(_ config: FunctionConfig) async throws(AetherError) {
        do {
            try registry.register(config)
        } catch {
            throw .registry(error)
        }
        if config.handlerProtocol == .sdk {
            do {
                try await gateway.listen(port: config.triggerPort, function: config.id)
            } catch {
                _ = try? registry.unregister(config.id)
                throw .orchestrator(error)
            }
        }
        let runtime: FunctionRuntime
        do {
            runtime = try await launch(config)
        } catch {
            _ = try? registry.unregister(config.id)
            if config.handlerProtocol == .sdk { await gateway.close(port: config.triggerPort.rawValue) }
            throw error
        }
        _ = try? registry.transition(config.id, to: .running)
        if config.handlerProtocol == .sdk { gateway.routes.set(runtime, port: config.triggerPort.rawValue) }
        lock.withLock { functions[config.id] = runtime }
    }

    /// A new generation of a function, started and ready (not yet routed).
    private func launch(_ config: FunctionConfig) async throws(AetherError) -> FunctionRuntime {
        if config.launcher == .python && config.handlerProtocol == .sdk && pythonSDK == nil {
            throw .handler(
                .spawnFailed(
                    function: config.id, program: "python3 -m aetherless",
                    reason:
                        "the Python handler runtime (sdk/python) was not found next to the aether binary; set AETHER_PYTHON_SDK to its folder"
                ))
        }
        let handshake: HandshakeServer
        if let existing = lock.withLock({ handshakes[config.id] }) {
            handshake = existing
        } else {
            do {
                handshake = try await HandshakeServer.bind(
                    path: UnixSocketPath.handlerSocket(function: config.id, controlSocket: settings.controlSocket),
                    group: group)
            } catch {
                throw .orchestrator(error)
            }
            lock.withLock { handshakes[config.id] = handshake }
        }
        guard let memory else {
            throw .orchestrator(.memoryLimitsUnavailable(reason: "the orchestrator has not been started"))
        }
        let generation = lock.withLock {
            self.generation += 1
            return self.generation
        }
        let runtime = FunctionRuntime(
            config: config, orchestrator: settings, pythonSDK: pythonSDK, generation: generation, memory: memory,
            group: group, logger: logger)
        do {
            try await runtime.start(handshake: handshake)
        } catch {
            handshake.unregister(runtime)
            if handshake.isUnused && lock.withLock({ functions[config.id] == nil }) {
                lock.withLock { handshakes[config.id] = nil }
                await handshake.close()
            }
            throw .handler(error)
        }
        return runtime
    }

    // MARK: Deploy

    /// Adds the file's new functions and replaces its changed ones (all of them with `force`),
    /// without touching the others. A replaced sdk function keeps its port: the new generation
    /// starts, takes the route, and the old one drains before it stops.
    func deploy(_ request: DeployRequest) async throws(AetherError) -> DeployResult {
        let busy = lock.withLock {
            if deploying { return true }
            deploying = true
            return false
        }
        if busy { throw .orchestrator(.conflict("another deploy is in progress")) }
        defer { lock.withLock { deploying = false } }

        let config: AetherConfig
        do {
            config = try ConfigLoader.load(path: request.configFile)
        } catch {
            throw .config(error)
        }
        let running = lock.withLock { functions }
        for function in config.functions {
            if let owner = running.values.first(where: {
                $0.config.triggerPort == function.triggerPort && $0.id != function.id
            }) {
                throw .orchestrator(
                    .conflict(
                        "function \(function.id) asks for port \(function.triggerPort), which function \(owner.id) is serving"
                    ))
            }
        }
        // The warm pool is shared: what stays running plus what this file brings must fit.
        let staying = running.values.map(\.config).filter { current in
            !config.functions.contains { $0.id == current.id }
        }
        let demand = WarmPool.demand(of: staying + config.functions)
        if demand > settings.warmPoolSize.rawValue {
            throw .orchestrator(
                .conflict(
                    "the functions would keep \(demand) restored instances warm (min_warm of snapshot functions), over warm_pool_size \(settings.warmPoolSize.rawValue)"
                ))
        }
        try primeCriu(for: config.functions)
        var result = DeployResult(added: [], replaced: [], unchanged: [])
        for function in config.functions {
            if let current = running[function.id] {
                if current.config == function && !request.force {
                    result.unchanged.append(function.id.rawValue)
                    continue
                }
                try await replace(current, with: function)
                result.replaced.append(function.id.rawValue)
            } else {
                try await startFunction(function)
                result.added.append(function.id.rawValue)
            }
        }
        logger.info(
            "deployed \(request.configFile)",
            metadata: [
                "added": "\(result.added)", "replaced": "\(result.replaced)", "unchanged": "\(result.unchanged)",
            ])
        return result
    }

    private func replace(_ old: FunctionRuntime, with config: FunctionConfig) async throws(AetherError) {
        let oldPort = old.config.triggerPort
        if old.config.handlerProtocol == .process || config.handlerProtocol == .process {
            // A process handler holds its port itself: the old one must let go first.
            await retire(old)
            lock.withLock { functions[old.id] = nil }
            _ = try? registry.unregister(old.id)
            try await startFunction(config)
            return
        }
        if config.triggerPort != oldPort {
            do {
                try await gateway.listen(port: config.triggerPort, function: config.id)
            } catch {
                throw .orchestrator(error)
            }
        }
        let fresh: FunctionRuntime
        do {
            fresh = try await launch(config)
        } catch {
            if config.triggerPort != oldPort { await gateway.close(port: config.triggerPort.rawValue) }
            throw error
        }
        _ = try? registry.unregister(old.id)
        _ = try? registry.register(config)
        _ = try? registry.transition(config.id, to: .running)
        gateway.routes.set(fresh, port: config.triggerPort.rawValue)
        if config.triggerPort != oldPort { gateway.routes.set(nil, port: oldPort.rawValue) }
        lock.withLock { functions[config.id] = fresh }
        await retire(old)
        if config.triggerPort != oldPort { await gateway.close(port: oldPort.rawValue) }
    }

    /// Lets a generation finish its requests, then stops its instances.
    private func retire(_ runtime: FunctionRuntime) async {
        await runtime.drain()
        await runtime.stop()
        lock.withLock { handshakes[runtime.id] }?.unregister(runtime)
    }

    // MARK: Shutdown

    /// Returns when `aether down` asked for a shutdown.
    public func waitForShutdownRequest() async {
        try? await shutdownRequested.futureResult.get()
    }

    public func requestShutdown() {
        let first = lock.withLock {
            defer { shutdownIsRequested = true }
            return !shutdownIsRequested
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
        let running = lock.withLock { Array(functions.values) }
        for runtime in running { await runtime.drain() }
        await gateway.closeAll()
        for runtime in running { await runtime.stop() }
        let servers = lock.withLock {
            let servers = Array(handshakes.values)
            handshakes = [:]
            functions = [:]
            return servers
        }
        for server in servers { await server.close() }
        await metrics?.close()
        metrics = nil
        await control?.close()
        control = nil
        memory?.removeRoot()
        logger.info("stopped")
        requestShutdown()
    }

    // MARK: Status

    func status() -> OrchestratorStatus {
        let running = lock.withLock { Array(functions.values) }
        return OrchestratorStatus(
            version: AetherVersion.current, pid: Int(getpid()), configFile: configFile,
            controlSocket: settings.controlSocket, listenAddress: settings.listenAddress,
            uptimeSeconds: Double((NIODeadline.now() - startedAt).nanoseconds) / 1e9,
            functions: running.map { $0.status() }.sorted { $0.id < $1.id })
    }

    func function(_ id: String) -> FunctionRuntime? {
        lock.withLock { functions.first { $0.key.rawValue == id }?.value }
    }
}
