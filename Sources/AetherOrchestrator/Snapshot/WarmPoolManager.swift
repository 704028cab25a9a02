import AetherCore
import AetherIPC
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The orchestrator's warm pool (`warm_pool_size`, `warm_pool_memory_mb`): copies of snapshot
/// functions started ahead of demand and not yet assigned (`WaitingCopy`: restored by criu or
/// forked, stopped), across all functions. Each snapshot function keeps up to `perFunction`
/// of them, refilled in the background after each start, as long as the pool has a place and
/// the memory budget room (a copy is counted at its function's `memory_limit_mb`, the most its
/// cgroup lets it take). A start draws from its function's copies; with none there, it restores
/// or forks on the request path (and is held to `restore_timeout_ms` all the same).
final class WarmPoolManager: Sendable {
    let capacity: Int
    let memoryBudget: Int
    /// Copies each function keeps ready when the pool has room.
    static let perFunction = 2
    /// How long after a start its function's refill begins: a restore or fork (and its cgroup
    /// move) is milliseconds of CPU, which on a small machine would otherwise compete with the
    /// new instance's first response.
    static let refillDelay = Duration.milliseconds(25)
    /// The limit of a copy started off the request path (the pool's, and `min_warm` starts that
    /// no request waits for): not `restore_timeout_ms`, which is a request's budget, only a
    /// bound on a criu (or fork) that hangs.
    static let aheadOfDemandLimit = Duration.seconds(30)

    private let state = Mutex<(copies: [FunctionID: Int], bytes: Int)>(([:], 0))

    init(capacity: Int, memoryBudget: Int) {
        self.capacity = capacity
        self.memoryBudget = memoryBudget
    }

    /// Takes a place for one more copy of `function` (of `bytes`), if the pool, the budget and
    /// the function's share allow; the caller gives it back with `release` when the copy is
    /// used or dropped.
    func reserve(_ function: FunctionID, bytes: Int) -> Bool {
        state.withLock { state in
            let total = state.copies.values.reduce(0, +)
            guard total < capacity, state.bytes + bytes <= memoryBudget,
                state.copies[function, default: 0] < Self.perFunction
            else { return false }
            state.copies[function, default: 0] += 1
            state.bytes += bytes
            return true
        }
    }

    func release(_ function: FunctionID, bytes: Int) {
        state.withLock { state in
            state.copies[function, default: 0] -= 1
            if state.copies[function] == 0 { state.copies[function] = nil }
            state.bytes -= bytes
        }
    }

    /// One function's places in the pool: what its template's copies reserve and give back.
    struct Share: Sendable {
        let pool: WarmPoolManager
        let function: FunctionID
        /// What one copy may take: the function's memory limit.
        let bytes: Int
        /// For removing a dropped copy's cgroup.
        let memory: MemoryCgroup
        /// Rings for the copy of this PID to attach in the pool.
        let makeRings: @Sendable (pid_t) -> InstanceRings?
        /// Where the responses of parked copies are read.
        let group: any EventLoopGroup

        func reserve() -> Bool { pool.reserve(function, bytes: bytes) }
        @Sendable func release() { pool.release(function, bytes: bytes) }

        /// Attaches `copy` ahead of demand and stops it (`WaitingCopy.park`); false when it did
        /// not attach (it is killed, its place given back).
        func park(_ copy: WaitingCopy) -> Bool {
            guard let rings = makeRings(copy.pid), copy.park(attaching: rings, readingOn: group.next()) == nil
            else {
                copy.kill()
                return false
            }
            return true
        }
    }

    /// What `aether stats` shows.
    var status: WarmPoolStatus {
        state.withLock { state in
            WarmPoolStatus(
                capacity: capacity, copies: state.copies.values.reduce(0, +), memoryBudgetBytes: memoryBudget,
                reservedBytes: state.bytes,
                functions: Dictionary(uniqueKeysWithValues: state.copies.map { ($0.key.rawValue, $0.value) }))
        }
    }
}
