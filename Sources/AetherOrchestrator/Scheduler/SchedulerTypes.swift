/// The vocabulary of `FunctionScheduler`: what it is told (ids, the request protocol), what it
/// decides (`SchedulerAction`) and how a request ends (`InvocationOutcome`). Plain values only:
/// no I/O, no NIO, no clock.

/// Time as the scheduler sees it: passed in with every event, never read.
typealias SchedulerInstant = ContinuousClock.Instant

/// One instance of one function generation. Numbers start at 0 in each generation; they are
/// the `AETHER_INSTANCE` of the process and the `x-aether-instance` of its answers.
public struct InstanceID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let number: Int

    public init(_ number: Int) { self.number = number }

    public static func < (lhs: InstanceID, rhs: InstanceID) -> Bool { lhs.number < rhs.number }
    public var description: String { String(number) }
}

/// One submitted request, for as long as the scheduler holds it.
struct InvocationID: Hashable, Sendable {
    let rawValue: UInt64
}

/// What the scheduler needs to know about a request it carries: only how to name it in a log.
protocol SchedulableRequest: Sendable {
    /// e.g. `GET /hello?x=1`
    var summary: String { get }
}

/// How an instance came to be.
public enum InstanceOrigin: String, Sendable, Equatable {
    /// A new process that ran the handler's initialisation.
    case spawn
    /// A copy of the function's CRIU snapshot.
    case restore
    /// A child forked from the function's live template (`snapshot: fork`).
    case fork

    /// A copy of an initialised template (restored or forked): its READY was the template's.
    var isCopy: Bool { self != .spawn }
}

/// The conversation on a new instance's control connection before it serves
/// (docs/handler-protocol.md).
enum HandshakeKind: Sendable, Equatable {
    /// sdk: READY, then ATTACH <region> / ATTACHED. A restored copy starts at ATTACH: its READY
    /// was sent by the template.
    case attach
    /// process handler binding the trigger port itself (`dataplane: sockets`): READY.
    case ready
    /// process handler with the eBPF data plane: READY, then the trigger port is steered to its
    /// listening socket.
    case readyThenSteer
}

/// The signals the scheduler sends. How they reach a process is the shell's business (a
/// restored copy is PID 1 of its namespace: `terminate` closes its control connection).
enum StopSignal: Sendable, Equatable {
    /// Stop gracefully; `kill` follows after the grace period.
    case terminate
    case kill
}

/// What an invocation that waited for its instance to start reports about that start.
public struct ColdStart: Sendable, Equatable {
    public var origin: InstanceOrigin
    /// From launch to serving.
    public var milliseconds: Double
    /// criu's part of it, for a restored copy.
    public var restoreMilliseconds: Double?
}

/// Why a function does not take a request.
public enum FunctionMode: String, Sendable, Equatable {
    /// First instances (or the snapshot) are being made.
    case starting
    case running
    /// A newer generation took over, or the orchestrator stops: what is queued and in flight
    /// finishes, nothing new is taken.
    case draining
    case stopped
}

/// How one request ended, as the scheduler reports it to whoever submitted it. HTTP is not
/// decided here: the gateway maps each case to a status.
public enum InvocationOutcome<Response: Sendable>: Sendable {
    /// The handler answered.
    case response(Response, instance: InstanceID, coldStart: ColdStart?)
    /// `max_queue` requests were already waiting.
    case queueFull(busyInstances: Int, queued: Int)
    /// Not answered within `timeout_ms` (its instance, if it had one, was killed).
    case timedOut(afterMilliseconds: Int)
    /// The instance serving it ended (crash, OOM kill, or killed for breaking the protocol).
    case instanceFailed(instance: InstanceID, cause: String)
    /// Its instance answered with a message that breaks the protocol.
    case malformedResponse(instance: InstanceID, reason: String)
    /// The function is draining or stopped.
    case notAccepting(FunctionMode)
    /// It waited while every attempt to start an instance failed.
    case unavailable(HandlerError)

    /// Whether it counts as an error in the function's statistics (like an HTTP 5xx).
    var isError: Bool {
        switch self {
        case .response, .queueFull: false
        case .timedOut, .instanceFailed, .malformedResponse, .notAccepting, .unavailable: true
        }
    }
}

/// A line for the orchestrator's log.
struct SchedulerLogEntry: Sendable, Equatable {
    enum Level: Sendable, Equatable {
        case debug, info, warning, error
    }

    var level: Level
    var message: String
    var instance: InstanceID?
    var metadata: [String: String] = [:]
}

/// A duration the scheduler measured, for the metrics (`SchedulerAction.observe`).
enum SchedulerObservation: Sendable, Equatable {
    /// A request waited this long from its arrival until it was handed to an instance.
    case queueWait(Duration)
    /// An instance serves, this long after its launch.
    case started(InstanceOrigin, Duration)
    /// criu restored (or the template forked) a copy in this long.
    case restored(InstanceOrigin, Duration)
}

/// What the shell must do after an event. Performed in order, outside the scheduler's lock,
/// except that what `onlyReports` comes after the rest.
enum SchedulerAction<Request: SchedulableRequest, Response: Sendable>: Sendable {
    /// Start a new instance: spawn a process, or restore a copy of the snapshot. The shell
    /// answers with `launched` / `restored` or `launchFailed`, and later `exited`.
    /// `forRequest`: a request waits for it (it was queued when the start was decided), so a
    /// copy's start is held to `restore_timeout_ms`; otherwise it is a start ahead of demand
    /// (`min_warm` at start, or keeping it after an exit), made off the request path like the
    /// warm pool's copies and not held to the request budget.
    case launch(InstanceID, InstanceOrigin, forRequest: Bool)
    /// Write `ATTACH <region>` on the instance's control connection.
    case attach(InstanceID)
    /// Steer the trigger port to the instance's listening socket; answer with `steered`.
    case steer(InstanceID)
    /// Write the request into the instance's request ring with this id. A full ring is
    /// reported with `requestNotWritten`, a failed one with `requestRingFailed`.
    case writeRequest(Request, requestID: UInt64, instance: InstanceID)
    /// Hand the outcome to whoever submitted the request.
    case complete(Request, InvocationOutcome<Response>)
    case signal(InstanceID, StopSignal)
    /// Call `wakeUp` at this time (or earlier: an early wake-up is harmless).
    case wakeUp(at: SchedulerInstant)
    case log(SchedulerLogEntry)
    /// Record a measurement in the function's metrics.
    case observe(SchedulerObservation)
    /// The first instances are serving (nil), or one of them failed to start.
    case startFinished(HandlerError?)
    /// Draining: nothing is queued or in flight any more.
    case drained
    /// Stopped: every instance has exited.
    case stopped

    /// A log line or a measurement: changes nothing that another action depends on, so the
    /// shell may perform it after the others (after a request is written, not before it).
    var onlyReports: Bool {
        switch self {
        case .log, .observe: true
        default: false
        }
    }

    /// What may wait until a started copy runs: reports, and the timer for deadlines (arming
    /// it wakes another event loop's thread, which would compete with the copy for a CPU).
    var canWaitForAStart: Bool {
        switch self {
        case .log, .observe, .wakeUp: true
        default: false
        }
    }
}
