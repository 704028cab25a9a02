import AetherCore
import AetherSystem
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
                let built = try await buildSnapshot(into: snapshotDirectory + "-r\(rebuild)")
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

    /// Builds the function's snapshot on a background thread.
    func buildSnapshot(into directory: String) async throws(HandlerError) -> FunctionSnapshot {
        let promise = group.next().makePromise(of: FunctionSnapshot.self)
        let (config, launch, criu, budget, memory) = (config, launcher.launch, criu, restoreBudget, memory)
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
        BackgroundThread.start(name: "snapshot-\(id)") {
            do throws(FunctionSnapshot.BuildFailure) {
                promise.succeed(
                    try FunctionSnapshot.build(
                        function: config, launch: launch, directory: directory, criu: criu, budget: budget,
                        memory: memory, limits: limits, sandbox: sandbox, cgroupName: cgroupName, output: output,
                        prepareSlot: prepareSlot))
            } catch {
                promise.fail(error.error)
            }
        }
        do {
            return try await promise.futureResult.get()
        } catch let error as HandlerError {
            throw error
        } catch {
            throw .snapshotFailed(function: id, detail: "\(error)")
        }
    }
}
