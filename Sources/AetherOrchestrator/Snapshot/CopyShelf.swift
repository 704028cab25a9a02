import AetherSystem
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The copies of one function generation waiting in the warm pool (restored or forked ahead of
/// demand, attached and stopped: `WaitingCopy.park`), and the background refill that fills the
/// places the pool gives it. Shared by `FunctionSnapshot` (copies restored by criu) and
/// `ForkTemplate` (copies forked from the template), which only say how a copy is made.
///
/// It does not hold its owner: each refill is handed the function that makes a copy, so an
/// owner that is stopped and dropped is not kept alive by its shelf.
final class CopyShelf: Sendable {
    private let state = Mutex<(copies: [WaitingCopy], refilling: Bool, closed: Bool)>(([], false, false))
    let pool: WarmPoolManager.Share
    /// The refill thread's name (`pool-restore`, `fork-refill`).
    private let threadName: String

    init(pool: WarmPoolManager.Share, threadName: String) {
        self.pool = pool
        self.threadName = threadName
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// A waiting copy for a start to take, oldest first; nil when none waits. Not blocking (the
    /// request path calls it). The caller starts a refill.
    func take() -> WaitingCopy? {
        state.withLock { $0.closed || $0.copies.isEmpty ? nil : $0.copies.removeFirst() }
    }

    /// Parks `copy`, made on a place of the pool already reserved, and keeps it for a start;
    /// false when it did not attach or the shelf was closed meanwhile (it is killed, its place
    /// given back).
    @discardableResult
    func shelve(_ copy: WaitingCopy) -> Bool {
        guard pool.park(copy) else { return false }
        let kept = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.copies.append(copy)
            return true
        }
        if !kept { copy.kill() }
        return kept
    }

    /// Makes copies on a background thread, after `delay`, while the pool gives this function
    /// places (one refill at a time). `make(number)` makes the refill's `number`th copy, with
    /// `pool.release` as what gives its place back, or nil when it cannot (the refill stops).
    func refill(after delay: Duration = .zero, make: @escaping @Sendable (_ number: Int) -> WaitingCopy?) {
        let start = state.withLock { state -> Bool in
            guard !state.refilling, !state.closed else { return false }
            state.refilling = true
            return true
        }
        guard start else { return }
        // On an event loop (a start on the request path), the delay is a timer of that loop:
        // making the refill's thread now would put a thread's creation, and its first run, before
        // the start's first request is written.
        if delay > .zero, let loop = MultiThreadedEventLoopGroup.currentEventLoop {
            loop.scheduleTask(in: TimeAmount(delay)) { [self] in
                runRefill(after: .zero, make: make)
            }
            return
        }
        runRefill(after: delay, make: make)
    }

    private func runRefill(after delay: Duration, make: @escaping @Sendable (_ number: Int) -> WaitingCopy?) {
        BackgroundThread.start(name: threadName) { [self] in
            // The whole delay (seconds too), in microseconds.
            if delay > .zero { usleep(UInt32(delay / .microseconds(1))) }
            defer { state.withLock { $0.refilling = false } }
            var number = 0
            while !isClosed, pool.reserve() {
                number += 1
                guard let copy = make(number) else {
                    pool.release()
                    return
                }
                guard shelve(copy) else { return }
            }
        }
    }

    /// No more copies: those waiting are killed, a running refill stops after its current one.
    func close() {
        let copies = state.withLock { state in
            state.closed = true
            defer { state.copies = [] }
            return state.copies
        }
        copies.forEach { $0.kill() }
    }
}
