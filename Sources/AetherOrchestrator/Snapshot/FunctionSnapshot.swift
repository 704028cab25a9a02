import AetherCore
import AetherIPC
import AetherSystem
import CAetherSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The CRIU image of one function generation's initialised handler, and how to restore copies
/// of it (docs/handler-protocol.md, "Snapshots").
///
/// Building: the handler starts as PID 1 of its own PID namespace with its control connection
/// as descriptor 3 (`AETHER_CONTROL_FD`, one end of a socketpair), imports and initialises,
/// sends READY; we send CHECKPOINT; it answers FROZEN and waits for its next line; criu dumps
/// it (which ends it). Restoring: criu brings back a copy in a fresh PID namespace with a fresh
/// socketpair end in place of descriptor 3 and fresh pipes as stdout and stderr; the copy reads
/// ATTACH from the new connection, reseeds its random state and serves.
final class FunctionSnapshot: Sendable {
    let directory: String
    let criu: Criu
    let budget: Duration
    /// Inodes of what the template had that each copy gets fresh.
    private let controlInode: UInt64
    private let stdoutInode: UInt64
    private let stderrInode: UInt64
    /// Size of the image on disk (tmpfs) in bytes.
    let imageBytes: Int
    let dumpDuration: Duration
    /// Started `criu swrk` processes waiting to restore the next copies.
    private let slots: RestoreSlots
    /// The image folder, open for criu swrk (see `RestoreSlot.Template`) until `remove`.
    private let imageFolder: Mutex<OwnedDescriptor?>
    /// Copies restored ahead of demand, waiting in its places of the orchestrator's warm pool
    /// (nil: it has none).
    private let shelf: CopyShelf?

    private init(
        directory: String, imageFolder: consuming sending OwnedDescriptor, criu: Criu, budget: Duration,
        sandbox: InstanceSandbox?, controlInode: UInt64, stdoutInode: UInt64, stderrInode: UInt64, imageBytes: Int,
        dumpDuration: Duration, pool: WarmPoolManager.Share?,
        prepareSlot: @escaping @Sendable (pid_t) -> String?, releaseSlot: @escaping @Sendable (String) -> Void
    ) {
        shelf = pool.map { CopyShelf(pool: $0, threadName: "pool-restore") }
        self.directory = directory
        self.criu = criu
        self.budget = budget
        self.controlInode = controlInode
        self.stdoutInode = stdoutInode
        self.stderrInode = stderrInode
        self.imageBytes = imageBytes
        self.dumpDuration = dumpDuration
        let directoryDescriptor = imageFolder.rawValue
        self.imageFolder = Mutex<OwnedDescriptor?>(imageFolder)
        slots = RestoreSlots(
            criu: criu,
            template: RestoreSlot.Template(
                directory: directory, directoryDescriptor: directoryDescriptor, controlInode: controlInode,
                stdoutInode: stdoutInode, stderrInode: stderrInode, sandbox: sandbox),
            target: Self.readySlots, prepare: prepareSlot, release: releaseSlot)
        slots.refill()
        refillWaiting()
    }

    /// How many `criu swrk` processes wait for restores of each function (a burst beyond
    /// them starts criu on the request path, about 6 ms more per copy).
    static let readySlots = 2

    /// Why a snapshot could not be built; reported as a startup failure of the function.
    struct BuildFailure: Error {
        let error: HandlerError
    }

    /// Starts the template, waits for READY, checkpoints it. Blocking: call it off the event loops.
    static func build(
        function: FunctionConfig, launch: HandlerLaunch, directory: String, criu: Criu, budget: Duration,
        memory: MemoryCgroup, limits: MemoryCgroup.Limits, sandbox: InstanceSandbox?, cgroupName: String,
        output: OutputCapture, pool: WarmPoolManager.Share?, prepareSlot: @escaping @Sendable (pid_t) -> String?
    ) throws(BuildFailure) -> FunctionSnapshot {
        let id = function.id
        func fail(_ detail: String) -> BuildFailure {
            BuildFailure(error: .snapshotFailed(function: id, detail: detail))
        }
        do {
            try systemCall("mkdir", on: directory, failsWith: .minusOne) { mkdir(directory, 0o700) }
        } catch {
            throw fail("cannot create \(directory): \(error.reason)")
        }
        guard SnapshotImages.mark(directory) else {
            RecursiveRemoval.remove(directory)
            throw fail("cannot write \(directory)/\(SnapshotImages.marker)")
        }
        do {
            return try buildMarked(
                function: function, launch: launch, directory: directory, criu: criu, budget: budget, memory: memory,
                limits: limits, sandbox: sandbox, cgroupName: cgroupName, output: output, pool: pool,
                prepareSlot: prepareSlot)
        } catch {
            // Nothing half-made stays behind: a failed dump leaves partial images.
            RecursiveRemoval.remove(directory)
            throw error
        }
    }

    /// A snapshot of an image already in `directory` (a kept one, copied and checked there).
    static func adopt(
        function: FunctionID, directory: String, manifest: KeptImages.Manifest, criu: Criu, budget: Duration,
        sandbox: InstanceSandbox?, pool: WarmPoolManager.Share?,
        prepareSlot: @escaping @Sendable (pid_t) -> String?, releaseSlot: @escaping @Sendable (String) -> Void
    ) throws(BuildFailure) -> FunctionSnapshot {
        let imageFolder: OwnedDescriptor
        do {
            imageFolder = try .open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        } catch {
            throw BuildFailure(
                error: .snapshotFailed(function: function, detail: "cannot open \(directory): \(error.reason)"))
        }
        return FunctionSnapshot(
            directory: directory, imageFolder: imageFolder, criu: criu, budget: budget, sandbox: sandbox,
            controlInode: manifest.controlInode, stdoutInode: manifest.stdoutInode, stderrInode: manifest.stderrInode,
            imageBytes: Self.diskUsage(directory), dumpDuration: .zero, pool: pool, prepareSlot: prepareSlot,
            releaseSlot: releaseSlot)
    }

    /// Inodes of the template's control connection and output pipes (what a kept image's
    /// manifest records).
    var inodes: (UInt64, UInt64, UInt64) { (controlInode, stdoutInode, stderrInode) }

    /// `build` once the image folder exists and carries the marker.
    private static func buildMarked(
        function: FunctionConfig, launch: HandlerLaunch, directory: String, criu: Criu, budget: Duration,
        memory: MemoryCgroup, limits: MemoryCgroup.Limits, sandbox: InstanceSandbox?, cgroupName: String,
        output: OutputCapture, pool: WarmPoolManager.Share?, prepareSlot: @escaping @Sendable (pid_t) -> String?
    ) throws(BuildFailure) -> FunctionSnapshot {
        let template = try FrozenTemplate.start(
            function: function, launch: launch, memory: memory, limits: limits, sandbox: sandbox,
            cgroupName: cgroupName, output: output)
        let dumpDuration: Duration
        do {
            dumpDuration = try criu.dump(
                pid: template.pid, into: directory, externalUnixSockets: [template.controlInode],
                externalMounts: sandbox?.dumpExternals ?? [],
                realUser: sandbox.map { ($0.helper, $0.identity) })
        } catch {
            template.stop()
            throw BuildFailure(error: .snapshotFailed(function: function.id, detail: error.description))
        }
        let (controlInode, stdoutInode, stderrInode) = (
            template.controlInode, template.stdoutInode, template.stderrInode
        )
        template.stop()
        let imageFolder: OwnedDescriptor
        do {
            imageFolder = try .open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        } catch {
            throw BuildFailure(
                error: .snapshotFailed(function: function.id, detail: "cannot open \(directory): \(error.reason)"))
        }
        return FunctionSnapshot(
            directory: directory, imageFolder: imageFolder, criu: criu, budget: budget, sandbox: sandbox,
            controlInode: controlInode,
            stdoutInode: stdoutInode, stderrInode: stderrInode, imageBytes: Self.diskUsage(directory),
            dumpDuration: dumpDuration, pool: pool, prepareSlot: prepareSlot, releaseSlot: { memory.remove($0) })
    }

    /// A restored copy: its PID, our end of its control connection and its output pipes.
    struct Copy: ~Copyable {
        let pid: pid_t
        let control: OwnedDescriptor
        let stdout: OwnedDescriptor
        let stderr: OwnedDescriptor
        let duration: Duration
        /// The memory cgroup the copy was restored in (nil: not confined).
        let cgroup: String?
    }

    /// Starts one instance restored now, its ATTACH written with the restore: the way when no
    /// copy waits in the pool (`takeWaiting`). Blocking. `forRequest` (a request waits for it):
    /// over `budget`, `latencyViolation`, the copy killed; ahead of demand only a hung criu fails.
    func start(logName: String, attach: (text: String, passing: [CInt]), forRequest: Bool) throws(CriuError) -> Copy {
        defer { refillWaiting(after: WarmPoolManager.refillDelay) }
        return try restore(
            logName: logName, firstLine: attach, budget: forRequest ? budget : WarmPoolManager.aheadOfDemandLimit)
    }

    /// A copy restored ahead of demand, attached and stopped, for a start to take; nil when
    /// none waits. Not blocking (the request path calls it); a refill follows.
    func takeWaiting() -> WaitingCopy? {
        guard let copy = shelf?.take() else { return nil }
        refillWaiting(after: WarmPoolManager.refillDelay)
        return copy
    }

    /// Restores copies in the background while the warm pool gives this function places.
    private func refillWaiting(after delay: Duration = .zero) {
        guard let shelf else { return }
        let pool = shelf.pool
        shelf.refill(after: delay) { [self] number in
            do throws(CriuError) {
                let slot = try slots.take()
                // Off the request path: the budget is not this restore's to meet (the start
                // that takes the copy is timed instead).
                let copy = try slot.restore(
                    template: slots.template, logName: "pool-\(getpid())-\(number)",
                    budget: WarmPoolManager.aheadOfDemandLimit,
                    begun: .now)
                return WaitingCopy(
                    pid: copy.pid, control: copy.control.take(), stdout: copy.stdout.take(), stderr: copy.stderr.take(),
                    cgroup: copy.cgroup, isChild: true, memory: pool.memory, release: pool.release)
            } catch {
                return nil
            }
        }
    }

    /// Restores one copy; blocking. Over `budget`: `latencyViolation`, the copy killed.
    ///
    /// `firstLine` (the copy's `ATTACH <region>`) is written to the copy's control connection
    /// before criu starts: the restored copy, blocked reading its next line, finds it at once and
    /// attaches while we are still taking criu's answer, instead of waiting a round trip for it.
    private func restore(
        logName: String, firstLine: (text: String, passing: [CInt])? = nil, budget: Duration
    ) throws(CriuError)
        -> Copy
    {
        let begun = ContinuousClock.now
        let slot = try slots.take()
        if let firstLine {
            do throws(ControlLine.Failure) {
                try ControlLine.write(slot.control, firstLine.text, passing: firstLine.passing)
            } catch {
                slots.discard(slot)
                throw .restoreFailed(image: directory, log: "cannot queue the first line for the copy: \(error)")
            }
        }
        return try slot.restore(template: slots.template, logName: logName, budget: budget, begun: begun)
    }

    func remove() {
        shelf?.close()
        slots.close()
        _ = imageFolder.withLock { $0.take() }
        RecursiveRemoval.remove(directory)
    }

    static func diskUsage(_ directory: String) -> Int {
        (Posix.entries(of: directory) ?? []).reduce(0) { total, entry in
            var status = stat()
            return stat(directory + "/" + entry.name, &status) == 0 ? total + Int(status.st_blocks) * 512 : total
        }
    }
}

/// `rm -rf` for the orchestrator's own folders (snapshot images).
enum RecursiveRemoval {
    static func remove(_ path: String) {
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        if (status.st_mode & S_IFMT) == S_IFDIR {
            for entry in Posix.entries(of: path) ?? [] { remove(path + "/" + entry.name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }
}

/// Image folders are named `<orchestrator pid>-<function>-g<generation>` under `snapshot_dir`
/// and carry a marker file: only folders with it are ever removed (`snapshot_dir` may be shared
/// with other things; a folder that merely has a name of that shape is not ours).
enum SnapshotImages {
    static let marker = ".aetherless-image"

    /// Writes the marker into a new image folder.
    static func mark(_ directory: String) -> Bool {
        let path = directory + "/" + marker
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    /// Removes the image folders of orchestrators that are no longer running; returns their names.
    static func removeStale(in directory: String) -> [String] {
        let stale = (Posix.entries(of: directory) ?? []).filter(\.isDirectory).map(\.name).filter { name in
            guard let owner = name.split(separator: "-").first.flatMap({ pid_t($0) }),
                access(directory + "/" + name + "/" + marker, F_OK) == 0
            else { return false }
            return kill(owner, 0) != 0 && errno == ESRCH
        }
        for name in stale { RecursiveRemoval.remove(directory + "/" + name) }
        return stale
    }
}
