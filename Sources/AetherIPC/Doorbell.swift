import Atomics
import CAetherIPC

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What `aether_futex_wait` returns when its timeout expires.
let futexTimedOut = -ETIMEDOUT

/// One direction's wake-up channel in a ring header: a futex sequence word and the flag with
/// which the waiting side announces that it is about to sleep (docs/shm-layout.md, "Waiting").
/// The data bell is rung by the producer for the consumer, the space bell the other way.
struct Doorbell {
    let sequence: UnsafeAtomic<UInt32>
    let sleeping: UnsafeAtomic<UInt32>
    /// The same word as `sequence`, as the futex system call takes it.
    let word: UnsafeMutablePointer<UInt32>
    /// When set, a wake-up is a write to this eventfd instead of the futex: the consumer waits
    /// for it in epoll (docs/shm-layout.md, "Bell").
    var event: EventBell? = nil

    /// Wakes the other side if it announced it is going to sleep.
    ///
    /// The caller has just published a position with a release store; the full fence orders
    /// that store before the load of `sleeping`, pairing with `wait`'s store-fence-load, so a
    /// wake-up cannot be lost. The waker takes the flag down itself (an exchange, so one of two
    /// racing wakers rings): the records published before the sleeper runs again need no
    /// wake-up of their own, which spares a system call per record while it is waking.
    func ring() {
        atomicFence()
        guard sleeping.load(ordering: .relaxed) != 0, sleeping.exchange(0, ordering: .relaxed) != 0 else { return }
        if let event {
            event.ring()
        } else {
            sequence.wrappingIncrement(ordering: .releasing)
            _ = aether_futex_wake(word, 1)
        }
    }

    /// Returns once `position` has moved from `seen` (or may have): polls as `policy` says,
    /// then announces itself and sleeps on the futex until rung or until `deadline`.
    ///
    /// - Parameter beforeSleeping: a last check once announced, e.g. for a poisoned ring.
    func wait(
        until position: UnsafeAtomic<UInt64>, movesFrom seen: UInt64, policy: WaitPolicy, deadline: WaitDeadline,
        beforeSleeping: () throws(SharedMemoryError) -> Void = {}
    ) throws(SharedMemoryError) {
        if policy.poll(until: deadline, { position.load(ordering: .acquiring) != seen }) { return }
        let expected = sequence.load(ordering: .acquiring)
        sleeping.store(1, ordering: .relaxed)
        atomicFence()
        defer { sleeping.store(0, ordering: .relaxed) }
        if position.load(ordering: .acquiring) != seen { return }
        try beforeSleeping()
        guard let nanoseconds = deadline.remainingNanoseconds else {
            throw .timedOut(waited: deadline.timeout ?? .zero)
        }
        if aether_futex_wait(word, expected, nanoseconds) == futexTimedOut {
            throw .timedOut(waited: deadline.timeout ?? .zero)
        }
    }
}
