import AetherCore
import AetherNet
import AetherSystem
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// `aether deploy` (all or nothing) and `aether rm`: the changes to a running orchestrator that
// the stored desired state follows.
extension Orchestrator {
    /// A new generation a deploy started, not committed yet.
    private enum Prepared {
        /// A function that was not running, started on its port (an sdk one routed while it
        /// started: nobody else serves the port).
        case added(DeployedFunction, hash: String?)
        /// A new generation beside the running one (on the same port, or on the one it moves to).
        case beside(old: DeployedFunction, fresh: DeployedFunction, hash: String?)
        /// The running generation was stopped first and its port given back; `fresh` is the new
        /// one once it started.
        case stoppedFirst(old: FunctionConfig, oldHash: String?, fresh: DeployedFunction?, hash: String?)
    }

    /// Applies a configuration file all or nothing. The file is validated; then every new
    /// generation (added and replaced functions; a function is replaced when its configuration
    /// or its code's bytes changed, or with `force`) is started while the running ones
    /// keep serving. If one cannot start, all the new ones are stopped again and the running
    /// functions and the stored state stay as they were. Otherwise the new desired state is
    /// stored, all routes swap at once, and the old generations drain and stop. Functions the
    /// file does not name are left alone.
    func deploy(_ request: DeployRequest) async throws(DeploymentError) -> DeployResult {
        try beginChange()
        defer { state.withLock { $0.changing = false } }
        // Kept until the next deploy, so the client's last poll after the answer gets the end.
        deployProgress.withLock { $0 = (request.progress, []) }

        let config: AetherConfig
        do {
            config = try ConfigLoader.load(path: request.configFile)
        } catch {
            throw .refused(.config(error.withoutContents()))
        }
        return try await apply(
            config, force: request.force, replacing: Set(request.replacing.compactMap { try? FunctionID($0) }),
            origin: .file(request.configFile)
        ).result
    }

    /// Where the functions a deploy applies come from.
    enum DeployOrigin {
        /// `aether deploy FILE` (and `aether dev`).
        case file(String)
        /// `aether rollback ID --to N`: version N, which came from `source`.
        case rollback(FunctionID, version: VersionStore.Record)

        /// What the stored state and the new versions say made them.
        var change: String {
            switch self {
            case .file(let file): "aether deploy \(file)"
            case .rollback(let id, let version): "aether rollback \(id) --to \(version.number)"
            }
        }

        /// A rollback restores the version's kept CRIU image (no init runs); a deploy builds
        /// afresh (a forced redeploy of an unchanged handler asks for a new init).
        var isRollback: Bool {
            if case .rollback = self { return true }
            return false
        }

        /// The configuration file the functions came from.
        var source: String {
            switch self {
            case .file(let file): file
            case .rollback(_, let version): version.source
            }
        }
    }

    /// `deploy` once the file is read (and a rollback): returns what changed and the number of
    /// the version each added or replaced function now runs.
    private func apply(
        _ config: AetherConfig, force: Bool, replacing: Set<FunctionID>, origin: DeployOrigin
    ) async throws(DeploymentError) -> (result: DeployResult, versions: [FunctionID: Int]) {
        // Every secret the file's functions name must be stored; the auth tokens are read now.
        let tokens = try Self.refusing { () throws(AetherError) in try loadSecrets(for: config.functions) }
        let running = state.withLock { $0.functions }
        for function in config.functions {
            if let owner = running.values.first(where: {
                $0.config.triggerPort == function.triggerPort && $0.id != function.id
            }) {
                throw .refused(
                    .orchestrator(
                        .conflict(
                            "function \(function.id) asks for port \(function.triggerPort), which function \(owner.id) is serving"
                        )))
            }
        }
        // The warm pool is shared: what stays running plus what this file brings must fit.
        let staying = running.values.map(\.config).filter { current in
            !config.functions.contains { $0.id == current.id }
        }
        let demand = WarmPool.demand(of: staying + config.functions)
        if demand > settings.warmPoolSize.rawValue {
            throw .refused(
                .orchestrator(
                    .conflict(
                        "the functions would keep \(demand) restored instances warm (min_warm of snapshot functions), over warm_pool_size \(settings.warmPoolSize.rawValue)"
                    )))
        }
        do {
            try primeCriu(for: config.functions)
        } catch {
            // Only snapshot functions need criu: the error names the first, like any function
            // that cannot start, and says nothing was applied.
            let needing = config.functions.first(where: \.usesCriu)?.id
            guard let needing else { throw .refused(error) }
            throw .startFailed(function: needing, cause: error, undoProblems: [])
        }
        var hashes: [FunctionID: String?] = [:]
        for function in config.functions { hashes[function.id] = Self.handlerHash(of: function) }
        // A Python module beside an unchanged handler file is code too: a function whose code
        // (`FunctionCode.files`) differs from its running version's is replaced.
        var replacing = replacing
        for function in config.functions where running[function.id] != nil {
            guard let latest = versionStore.records(of: function.id).last,
                let files = try? VersionStore.codeFiles(of: function),
                VersionStore.codeDigest(of: files) != latest.code
            else { continue }
            replacing.insert(function.id)
        }
        let runningHashes = state.withLock { $0.handlerHashes }
        let plan = DeployPlan(
            file: config.functions, hashes: hashes,
            running: running.mapValues {
                DeployPlan.Running(config: $0.config, handlerHash: runningHashes[$0.id] ?? nil)
            },
            force: force, replacing: replacing, ebpf: dataplane != nil)

        // 1. Every new generation starts; the running ones serve meanwhile.
        var prepared: [Prepared] = []
        for step in plan.startOrder {
            reportProgress("starting \(step.id)")
            do {
                try await prepare(step, running: running, reusingKeptImage: origin.isRollback, into: &prepared)
            } catch {
                let problems = await undo(prepared)
                logger.warning(
                    "`\(origin.change)` not applied: function \(step.id) could not start",
                    metadata: ["error": "\(error)"])
                throw .startFailed(function: step.id, cause: error, undoProblems: problems)
            }
        }
        // 2. Each new generation is the next version of its function (its code copied), and the
        // deploy is accepted once the new desired state is on disk.
        let time = DesiredState.now()
        var recorded: [FunctionID: Int] = [:]
        func forgetRecorded() { for (id, number) in recorded { versionStore.forget(number, of: id) } }
        for step in plan.steps where step.action != .keep {
            do {
                var deployedAs: (handler: String, requirements: String?)?
                if case .rollback(let id, let version) = origin, id == step.id {
                    deployedAs = (version.handlerPath, version.requirements)
                }
                recorded[step.id] =
                    try versionStore.record(
                        step.config, hash: step.handlerHash, change: origin.change, source: origin.source, at: time,
                        settings: settings, deployedAs: deployedAs
                    ).number
            } catch {
                forgetRecorded()
                let problems = await undo(prepared)
                throw .versionNotKept(error, undoProblems: problems)
            }
        }
        let desired = currentDesired().deploying(
            config.functions, changed: plan.changed, hashes: hashes, from: origin.source, change: origin.change,
            at: time)
        do {
            try store.save(desired)
        } catch {
            forgetRecorded()
            let problems = await undo(prepared)
            throw .notStored(error, undoProblems: problems)
        }
        state.withLock { $0.desired = desired }
        // 3. The routes swap (the file's functions' tokens with them), the old generations retire.
        installTokens(tokens, for: config.functions)
        await commit(prepared)
        let result = plan.result
        logger.info(
            "applied `\(origin.change)`",
            metadata: [
                "added": "\(result.added)", "replaced": "\(result.replaced)", "unchanged": "\(result.unchanged)",
                "handler_changed": "\(result.handlerChanged)", "versions": "\(recorded)",
            ])
        return (result, recorded)
    }

    /// `aether rollback ID [--to N]`: deploys version N of a running function (by default the
    /// version before the one it runs) the way `deploy` replaces it, all or nothing, beside the
    /// running generation; the rollback is itself a new version (its content N's). It runs from
    /// the files it was deployed from when they still hold its code (its kept CRIU image, if
    /// any, is restored without running init again), else from its code copy.
    func rollback(_ id: String, to number: Int?) async throws(DeploymentError) -> RollbackResult {
        try beginChange()
        defer { state.withLock { $0.changing = false } }
        guard let function = state.withLock({ $0.functions.first { $0.key.rawValue == id }?.value }) else {
            throw .unknownFunction(id)
        }
        let records = versionStore.records(of: function.id)
        let current = records.last?.number
        let target: Int
        if let number {
            target = number
        } else {
            guard let current, let earlier = records.last(where: { $0.number < current }) else {
                throw .versionRefused(.noEarlierVersion(function: id, current: current))
            }
            target = earlier.number
        }
        let version: VersionStore.Version
        do {
            version = try versionStore.version(target, of: function.id)
        } catch {
            throw .versionRefused(error)
        }
        let config = AetherConfig(orchestrator: settings, functions: [version.runnable()])
        let (result, made) = try await apply(
            config, force: false, replacing: [], origin: .rollback(function.id, version: version.record))
        return RollbackResult(
            function: id, to: target, version: made[function.id] ?? current ?? target,
            replaced: !result.replaced.isEmpty)
    }

    /// `aether versions ID`: the kept versions of a running function, oldest first.
    func versions(of id: String) -> VersionsDocument? {
        guard let function = state.withLock({ $0.functions.first { $0.key.rawValue == id }?.value }) else {
            return nil
        }
        let records = versionStore.records(of: function.id)
        return VersionsDocument(
            function: id, current: records.last?.number, keep: versionStore.keep,
            versions: records.map {
                VersionInfo(
                    number: $0.number, deployedAt: $0.deployedAt, change: $0.change, source: $0.source,
                    handler: $0.handlerPath, code: $0.code, handlerSha256: $0.handlerSha256)
            })
    }

    /// Starts a step's new generation (a stop-first replacement stops the old one before).
    private func prepare(
        _ step: DeployPlan.Step, running: [FunctionID: DeployedFunction], reusingKeptImage: Bool,
        into prepared: inout [Prepared]
    ) async throws(AetherError) {
        let config = step.config
        let hash = step.handlerHash
        switch step.action {
        case .keep:
            return
        case .add:
            let fresh = try await startFunction(config, handlerHash: .some(hash), installs: false)
            prepared.append(.added(fresh, hash: hash))
        case .replaceBeside:
            guard let old = running[config.id] else { return }
            // Moving to another port takes that port now (nobody else serves it); the old one is
            // given back at the commit. On the same port the route swaps at the commit.
            let fresh =
                config.triggerPort != old.config.triggerPort
                ? try await startFunction(config, handlerHash: .some(hash), installs: false)
                : try await launch(config, routing: .atCommit, reusingKeptImage: reusingKeptImage)
            prepared.append(.beside(old: old, fresh: fresh, hash: hash))
        case .replaceStoppingFirst:
            guard let old = running[config.id] else { return }
            let oldHash = state.withLock { $0.handlerHashes[old.id] ?? nil }
            await retire(old)
            state.withLock {
                $0.functions[old.id] = nil
                $0.handlerHashes[old.id] = nil
            }
            if old.config.handlerProtocol == .sdk { gateway.routes.set(nil, port: old.config.triggerPort.rawValue) }
            await releasePort(old.config.triggerPort.rawValue, of: old.config)
            prepared.append(.stoppedFirst(old: old.config, oldHash: oldHash, fresh: nil, hash: hash))
            let fresh = try await startFunction(config, handlerHash: .some(hash), installs: false)
            prepared[prepared.count - 1] = .stoppedFirst(old: old.config, oldHash: oldHash, fresh: fresh, hash: hash)
        }
    }

    /// Stops the new generations again (last started first) and puts back what they changed;
    /// returns what could not be put back.
    private func undo(_ prepared: [Prepared]) async -> [String] {
        var problems: [String] = []
        for item in prepared.reversed() {
            switch item {
            case .added(let fresh, _):
                await withdraw(fresh)
            case .beside(let old, let fresh, _):
                if fresh.config.triggerPort != old.config.triggerPort {
                    await withdraw(fresh)
                } else {
                    if let problem = steerBack(to: old) { problems.append(problem) }
                    await retire(fresh, handlerConnections: true)
                }
            case .stoppedFirst(let old, let oldHash, let fresh, _):
                if let fresh { await withdraw(fresh) }
                do {
                    try await startFunction(old, handlerHash: .some(oldHash))
                } catch {
                    problems.append("function \(old.id), stopped to be replaced, could not be started again: \(error)")
                }
            }
        }
        return problems
    }

    /// Stops a new generation that has a port of its own, and gives the port back.
    private func withdraw(_ fresh: DeployedFunction) async {
        let port = fresh.config.triggerPort.rawValue
        await retire(fresh, handlerConnections: true)
        if fresh.config.handlerProtocol == .sdk { gateway.routes.set(nil, port: port) }
        await releasePort(port, of: fresh.config)
    }

    /// The new generations take their routes (all at once: no await in between), then the old
    /// ones finish their requests and stop, side by side.
    private func commit(_ prepared: [Prepared]) async {
        var retiring: [(old: DeployedFunction, moved: Bool)] = []
        for item in prepared {
            switch item {
            case .added(let fresh, let hash):
                install(fresh, hash: hash)
            case .beside(let old, let fresh, let hash):
                install(fresh, hash: hash)
                let moved = old.config.triggerPort != fresh.config.triggerPort
                if moved && old.config.handlerProtocol == .sdk {
                    gateway.routes.set(nil, port: old.config.triggerPort.rawValue)
                } else if !moved {
                    old.handOver(to: fresh)
                }
                retiring.append((old, moved))
            case .stoppedFirst(_, _, let fresh, let hash):
                if let fresh { install(fresh, hash: hash) }
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for (old, moved) in retiring {
                group.addTask {
                    await self.retire(old, handlerConnections: true)
                    if moved { await self.releasePort(old.config.triggerPort.rawValue, of: old.config) }
                }
            }
        }
    }

    /// A committed generation serves its function from now on.
    private func install(_ fresh: DeployedFunction, hash: String?) {
        if fresh.config.handlerProtocol == .sdk {
            gateway.routes.set(fresh, port: fresh.config.triggerPort.rawValue)
        }
        state.withLock {
            $0.functions[fresh.id] = fresh
            $0.handlerHashes[fresh.id] = hash
        }
    }

    /// Undoing a process handler's replacement with eBPF: the new generation took the trigger
    /// port when it reported READY, so the old one's listening socket is steered to it again
    /// (one map update) before the new one stops. Nil when done or not needed, else why not.
    private func steerBack(to old: DeployedFunction) -> String? {
        guard let dataplane, old.config.handlerProtocol == .process else { return nil }
        let port = old.config.triggerPort.rawValue
        for instance in old.status().instances where instance.phase == "serving" {
            let pid = pid_t(instance.pid)
            guard let listenPort = Self.listenPort(of: pid) else { continue }
            do {
                let socket = try HandlerSockets.takeListeningSocket(pid: pid, port: listenPort)
                try dataplane.steer(
                    port: port, function: old.id.rawValue, socket: socket.rawValue, owner: pid, kind: .handler)
                return nil
            } catch {
                return "trigger port \(port) could not be steered back to function \(old.id) (pid \(pid)): \(error)"
            }
        }
        return "trigger port \(port) could not be steered back to function \(old.id): it has no serving instance"
    }

    /// The private port a process handler was given to bind (`AETHER_LISTEN_PORT` in the
    /// environment it was started with).
    private static func listenPort(of pid: pid_t) -> UInt16? {
        let name = "AETHER_LISTEN_PORT="
        guard let environment = Posix.readBytes("/proc/\(pid)/environ") else { return nil }
        for entry in environment.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            if text.hasPrefix(name) { return UInt16(text.dropFirst(name.count)) }
        }
        return nil
    }

    /// Removes a function for good (`aether rm`): it leaves the stored state first (a failure
    /// there changes nothing), then drains, stops and gives its port back.
    func remove(_ id: String) async throws(DeploymentError) -> RemoveResult {
        try beginChange()
        defer { state.withLock { $0.changing = false } }
        guard let function = state.withLock({ $0.functions.first { $0.key.rawValue == id }?.value }) else {
            throw .unknownFunction(id)
        }
        let desired = currentDesired().removing(function.id, at: DesiredState.now())
        do {
            try store.save(desired)
        } catch {
            throw .notStored(error, undoProblems: [])
        }
        state.withLock { $0.desired = desired }
        let config = function.config
        await retire(function)
        if config.handlerProtocol == .sdk { gateway.routes.set(nil, port: config.triggerPort.rawValue) }
        gateway.routes.tokens.remove(function.id)
        await releasePort(config.triggerPort.rawValue, of: config)
        state.withLock {
            $0.functions[function.id] = nil
            $0.handlerHashes[function.id] = nil
        }
        // Its processes are gone: its uid may go to another function, and its kept image goes.
        state.withLock { $0.sandboxHost }?.identities.release(function.id)
        function.keptImages.remove(function: function.id)
        versionStore.remove(function.id)
        metrics.remove(function.id)
        logger.info("removed function \(function.id)", metadata: ["port": "\(config.triggerPort)"])
        return RemoveResult(removed: id, port: Int(config.triggerPort.rawValue))
    }

    /// One deploy or rm at a time, and none before `up` serves (its state is not stored yet).
    private func beginChange() throws(DeploymentError) {
        let refusal = state.withLock { state -> String? in
            if !state.ready { return "the orchestrator is still starting its functions; try again once it serves" }
            if state.changing { return "another deploy or rm is in progress" }
            state.changing = true
            return nil
        }
        if let refusal { throw .refused(.orchestrator(.conflict(refusal))) }
    }

    /// The stored desired state (set by `start()`; built from what runs if it is not).
    private func currentDesired() -> DesiredState {
        let (desired, running, hashes) = state.withLock { ($0.desired, $0.functions, $0.handlerHashes) }
        if let desired { return desired }
        let functions = running.values.map(\.config).sorted { $0.id.rawValue < $1.id.rawValue }
        return DesiredState.initial(
            config: AetherConfig(orchestrator: settings, functions: functions), file: configFile, hashes: hashes,
            at: DesiredState.now())
    }
}
