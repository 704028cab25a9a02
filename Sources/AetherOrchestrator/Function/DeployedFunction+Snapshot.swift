import AetherCore
import AetherSystem
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A `snapshot: true` function's CRIU image: built at start (and again when restores of it keep
/// failing), on a background thread.
extension DeployedFunction {
    /// A restore failed for a reason other than time. After a few in a row the image itself is
    /// suspect (corrupted, or removed from under us): a new one is built from the handler in
    /// the background, as at start, and restores use it once it is ready. Meanwhile requests get
    /// 503 (with Retry-After), never a silent cold start.
    func imageFailed() {
        let rebuild = imageRepair.withLock { repair -> Int? in
            repair.failures += 1
            guard repair.failures >= Self.restoreFailuresBeforeRebuild, !repair.rebuilding else { return nil }
            repair.rebuilding = true
            repair.rebuilds += 1
            return repair.rebuilds
        }
        guard let rebuild else { return }
        logger.warning("\(Self.restoreFailuresBeforeRebuild) restores in a row failed: building the snapshot again")
        Task {
            defer { imageRepair.withLock { $0.rebuilding = false } }
            do {
                let built = try await buildSnapshot(into: snapshotDirectory + "-r\(rebuild)", reusingKept: false)
                let old = snapshot.withLock { current in
                    defer { current = built }
                    return current
                }
                old?.remove()
                imageRepair.withLock { $0.failures = 0 }
                logger.info(
                    "snapshot rebuilt", metadata: ["image": "\(built.directory)", "bytes": "\(built.imageBytes)"])
            } catch {
                logger.error("the snapshot could not be built again: \(error)")
            }
        }
    }

    /// Starts the live template of a `snapshot: fork` function on a background thread. When it
    /// ends unexpectedly (killed, crashed) it is started again, with a fresh init; starts fail
    /// meanwhile (requests get 503), never a silent cold start.
    func startForkTemplate() async throws(HandlerError) -> ForkTemplate {
        let promise = group.next().makePromise(of: ForkTemplate.self)
        let pool = poolShare
        let (config, launch, budget, memory, limits, sandbox, output) = (
            config, launcher.launch, restoreBudget, memory, launcher.limits, launcher.sandbox, launcher.output
        )
        let start = imageRepair.withLock { $0.rebuilds }
        let cgroupName = "\(id)-g\(generation)-template" + (start == 0 ? "" : "-r\(start)")
        let ended = Mutex<ForkTemplate?>(nil)
        // Each copy's cgroups are made when it is forked, ahead of demand (`ForkTemplate`).
        let copyNames = Atomic<Int>(0)
        let confine: @Sendable (pid_t) -> Result<String, CgroupFailure> = { pid in
            let copy = copyNames.wrappingAdd(1, ordering: .relaxed).oldValue
            return memory.confine(pid: pid, name: "\(cgroupName)-f\(copy)", limits: limits)
        }
        // The reaper holds `ended` (and so this function) until the template has ended, which
        // `stop` makes happen.
        BackgroundThread.start(name: "template-\(id)") { [self] in
            do throws(FunctionSnapshot.BuildFailure) {
                let template = try ForkTemplate.start(
                    function: config, launch: launch, budget: budget, memory: memory, limits: limits, sandbox: sandbox,
                    cgroupName: cgroupName, output: output, pool: pool, confine: confine,
                    ended: { status in
                        if let template = ended.withLock({ $0 }) { self.forkTemplateEnded(template, status: status) }
                    })
                ended.withLock { $0 = template }
                promise.succeed(template)
            } catch {
                promise.fail(error.error)
            }
        }
        return try await result(of: promise)
    }

    /// The live template ended: unless it was stopped on purpose (it is no longer the current
    /// one), a new one is started in the background.
    private func forkTemplateEnded(_ template: ForkTemplate, status: ExitStatus) {
        let current = forkTemplate.withLock { current -> Bool in
            guard current === template else { return false }
            current = nil
            return true
        }
        guard current else { return }
        template.stop()
        let restart = imageRepair.withLock { repair -> Bool in
            guard !repair.rebuilding else { return false }
            repair.rebuilding = true
            repair.rebuilds += 1
            return true
        }
        logger.warning(
            "the fork template \(status): starting it again (its copies ended with it)",
            metadata: ["pid": "\(template.pid)"])
        guard restart else { return }
        Task {
            defer { imageRepair.withLock { $0.rebuilding = false } }
            do {
                let started = try await startForkTemplate()
                forkTemplate.withLock { $0 = started }
                logger.info("fork template ready", metadata: ["pid": "\(started.pid)"])
            } catch {
                logger.error("the fork template could not be started again: \(error)")
            }
        }
    }

    /// The kept image with `key`, copied into `directory` and checked, as the function's
    /// snapshot; nil (and `directory` gone) when there is none or it is corrupted.
    private static func adoptKept(
        _ kept: KeptImages, function: FunctionID, key: String, into directory: String, criu: Criu, budget: Duration,
        sandbox: InstanceSandbox?, pool: WarmPoolManager.Share?, prepareSlot: @escaping @Sendable (pid_t) -> String?,
        releaseSlot: @escaping @Sendable (String) -> Void, logger: Logger
    ) -> FunctionSnapshot? {
        guard mkdir(directory, 0o700) == 0 else { return nil }
        guard SnapshotImages.mark(directory) else {
            RecursiveRemoval.remove(directory)
            return nil
        }
        switch kept.copy(function: function, key: key, into: directory) {
        case .success(let manifest):
            if let snapshot = try? FunctionSnapshot.adopt(
                function: function, directory: directory, manifest: manifest, criu: criu, budget: budget,
                sandbox: sandbox, pool: pool, prepareSlot: prepareSlot, releaseSlot: releaseSlot)
            {
                logger.info(
                    "snapshot taken from the kept image (no init ran)",
                    metadata: ["kept": "\(kept.path(function: function, key: key))"])
                return snapshot
            }
        case .failure(.none):
            break
        case .failure(let refusal):
            logger.warning("\(refusal): building the image again", metadata: ["key": "\(key)"])
        }
        RecursiveRemoval.remove(directory)
        return nil
    }

    /// The function's snapshot, on a background thread: its kept image when one with the
    /// current key is intact (`reusingKept`; no init runs), else built from the handler and
    /// kept for the next start.
    func buildSnapshot(
        into directory: String, reusingKept: Bool = true
    ) async throws(HandlerError)
        -> FunctionSnapshot
    {
        let promise = group.next().makePromise(of: FunctionSnapshot.self)
        let (config, launch, criu, budget, memory) = (config, launcher.launch, criu, restoreBudget, memory)
        let pool = poolShare
        let output = launcher.output
        // Cgroup names of this build's template and copies: a rebuilt image's copies run beside
        // the old image's for a while, so each build has its own (`-r1`, `-r2`, ...).
        let build =
            "\(id)-g\(generation)"
            + (directory == snapshotDirectory ? "" : directory.dropFirst(snapshotDirectory.count))
        let cgroupName = "\(build)-template"
        let slotNames = Atomic<Int>(0)
        let (limits, sandbox) = (launcher.limits, launcher.sandbox)
        // Each criu swrk waiting to restore a copy sits in the cgroups that copy will have.
        let prepareSlot: @Sendable (pid_t) -> String? = { pid in
            let slot = slotNames.wrappingAdd(1, ordering: .relaxed).oldValue
            return try? memory.confine(pid: pid, name: "\(build)-s\(slot)", limits: limits).get()
        }
        let (kept, pythonSDK, logger, id) = (keptImages, pythonSDK, logger, id)
        BackgroundThread.start(name: "snapshot-\(id)") {
            let key = ImageKey.make(
                config: config, launch: launch, sandbox: sandbox, criuVersion: (try? criu.version()) ?? "unknown",
                pythonSDK: pythonSDK)
            if reusingKept,
                let adopted = Self.adoptKept(
                    kept, function: id, key: key, into: directory, criu: criu, budget: budget, sandbox: sandbox,
                    pool: pool, prepareSlot: prepareSlot, releaseSlot: { memory.remove($0) }, logger: logger)
            {
                promise.succeed(adopted)
                return
            }
            do throws(FunctionSnapshot.BuildFailure) {
                let built = try FunctionSnapshot.build(
                    function: config, launch: launch, directory: directory, criu: criu, budget: budget,
                    memory: memory, limits: limits, sandbox: sandbox, cgroupName: cgroupName, output: output,
                    pool: pool, prepareSlot: prepareSlot)
                do {
                    try kept.keep(
                        function: id, key: key, from: directory, inodes: built.inodes,
                        skipping: [SnapshotImages.marker])
                } catch {
                    logger.warning("the snapshot could not be kept for the next start: \(error)")
                }
                promise.succeed(built)
            } catch {
                promise.fail(error.error)
            }
        }
        return try await result(of: promise)
    }

    /// What a build on a background thread made, or its start error.
    private func result<Built: Sendable>(of promise: EventLoopPromise<Built>) async throws(HandlerError) -> Built {
        do {
            return try await promise.futureResult.get()
        } catch let error as HandlerError {
            throw error
        } catch {
            throw .snapshotFailed(function: id, detail: "\(error)")
        }
    }
}
