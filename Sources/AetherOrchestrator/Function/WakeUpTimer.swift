import NIOCore
import NIOPosix
import Synchronization

/// The one timer of a function generation: its scheduler asks to be woken at a time
/// (`SchedulerAction.wakeUp`), and this keeps the earliest time asked for, on whichever event
/// loop asked (its own loop when asked from another thread). Actions are
/// performed outside the scheduler's lock and may arrive out of order, so a later request never
/// replaces an earlier one; a wake-up that finds nothing due is harmless.
final class WakeUpTimer: Sendable {
    private struct Pending {
        var at: ContinuousClock.Instant
        var task: Scheduled<Void>
        var serial: UInt64
    }

    private let eventLoop: any EventLoop
    private let pending = Mutex<(timer: Pending?, serial: UInt64)>((nil, 0))

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Runs `fire` on the event loop at `instant`, unless an earlier wake-up is pending (which
    /// replaces this one: the scheduler asks again for what is still due then).
    func schedule(at instant: ContinuousClock.Instant, fire: @escaping @Sendable () -> Void) {
        pending.withLock { state in
            if let current = state.timer, current.at <= instant { return }
            state.timer?.task.cancel()
            state.serial &+= 1
            let serial = state.serial
            let delay = ContinuousClock.now.duration(to: instant)
            let nanoseconds = max(
                0, delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000)
            // On the loop asking, if it is one: arming a timer of another loop wakes its thread
            // (on the request path, a start's first request competed with it for a CPU).
            let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? eventLoop
            let task = loop.scheduleTask(in: .nanoseconds(nanoseconds)) { [self] in
                let current = pending.withLock { state -> Bool in
                    guard state.timer?.serial == serial else { return false }
                    state.timer = nil
                    return true
                }
                if current { fire() }
            }
            state.timer = Pending(at: instant, task: task, serial: serial)
        }
    }

    func cancel() {
        pending.withLock { state in
            state.timer?.task.cancel()
            state.timer = nil
        }
    }
}
