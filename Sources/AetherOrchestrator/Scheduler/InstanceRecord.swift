/// Where one instance is in its life: the ONE place its state lives. Everything that only makes
/// sense in a phase (its PID, its requests, its deadline) is carried by that phase.
///
/// ```
///            launched / restored                 READY (+ATTACH/ATTACHED or steer)
/// launching ─────────────────────> handshaking ─────────────────────────────────> serving
///     │                                 │                                           │
///     └──── stop, timeout, protocol violation, ring failure ──> stopping <──────────┘
///                                                                  │ exited
///                 (any phase) ── exited ──────────────────────────> (removed)
/// ```
enum InstancePhase: Sendable {
    /// The shell is spawning the process or criu is restoring the copy: no PID known yet.
    case launching(Launching)
    /// Its process runs; the control-connection handshake is under way.
    case handshaking(Handshaking)
    /// Takes requests.
    case serving(Serving)
    /// Told to stop (or killed); takes nothing new. Requests it still holds end when it exits.
    case stopping(Stopping)

    struct Launching: Sendable {
        var deadline: SchedulerInstant
        /// Control lines of a spawned process that connected before its launch was reported.
        var earlyLines: [String] = []
    }

    struct Handshaking: Sendable {
        var pid: Int32
        var step: HandshakeStep
        var deadline: SchedulerInstant
    }

    struct Serving: Sendable {
        var pid: Int32
        /// Request id in the instance's ring -> the invocation it carries.
        var inFlight: [UInt64: InvocationID] = [:]
        /// The request ring had no room for the last request; nothing more is sent until a
        /// response shows the handler is consuming again.
        var ringFull = false
        var lastActive: SchedulerInstant
        var readyAt: SchedulerInstant
    }

    struct Stopping: Sendable {
        /// nil while a launch is still running (it is killed once it reports).
        var pid: Int32?
        var inFlight: [UInt64: InvocationID]
        /// SIGKILL then, if it has not exited (nil: killed already, or no grace).
        var killAt: SchedulerInstant?
        /// Why, when it is not a plain stop (logged with its exit, and the 502's cause).
        var reason: String?
        /// What to report if it never served.
        var startupFailure: HandlerError?
        var wasServing: Bool
        /// Stopped for breaking the protocol: counts towards the back-off like a crash.
        var fault = false
    }

    enum HandshakeStep: Sendable, Equatable {
        case awaitingReady
        case awaitingAttached
        case steering

        var awaiting: String { self == .awaitingAttached ? "ATTACHED" : "READY" }
    }

    /// The name `aether list` and the metrics show.
    var name: String {
        switch self {
        case .launching: "starting"
        case .handshaking(let handshake): handshake.step == .awaitingAttached ? "attaching" : "starting"
        case .serving: "serving"
        case .stopping: "stopping"
        }
    }

    var pid: Int32? {
        switch self {
        case .launching: nil
        case .handshaking(let handshake): handshake.pid
        case .serving(let serving): serving.pid
        case .stopping(let stopping): stopping.pid
        }
    }

    var inFlight: [UInt64: InvocationID] {
        switch self {
        case .serving(let serving): serving.inFlight
        case .stopping(let stopping): stopping.inFlight
        case .launching, .handshaking: [:]
        }
    }

    var isServing: Bool {
        if case .serving = self { return true }
        return false
    }

    var isStopping: Bool {
        if case .stopping = self { return true }
        return false
    }

    var isStarting: Bool {
        switch self {
        case .launching, .handshaking: true
        case .serving, .stopping: false
        }
    }
}

/// One instance as the scheduler keeps it.
struct InstanceRecord: Sendable {
    let id: InstanceID
    let origin: InstanceOrigin
    let launchedAt: SchedulerInstant
    var phase: InstancePhase
    /// Ids of the requests written to its ring, unique while in flight.
    var nextRequestID: UInt64 = 1
    var served = 0
    /// Measured once: launch to serving, and criu's part of a restore.
    var startup: Duration?
    var restore: Duration?
}

extension InstanceRecord {
    /// Runs `body` on the serving state in place; nil (and nothing run) if it is not serving.
    /// The phase holds a placeholder meanwhile, so `body` has the only reference to the state's
    /// dictionary: an insert or removal there is not a copy of the whole dictionary
    /// (copy-on-write), which `case .serving(var s)` + write-back would be on every request.
    mutating func withServing<Result>(_ body: (inout InstancePhase.Serving) -> Result) -> Result? {
        guard case .serving(var serving) = phase else { return nil }
        phase = .launching(.init(deadline: launchedAt))
        defer { phase = .serving(serving) }
        return body(&serving)
    }

    /// `withServing` for the stopping state.
    mutating func withStopping<Result>(_ body: (inout InstancePhase.Stopping) -> Result) -> Result? {
        guard case .stopping(var stopping) = phase else { return nil }
        phase = .launching(.init(deadline: launchedAt))
        defer { phase = .stopping(stopping) }
        return body(&stopping)
    }
}

/// What `aether list` / `stats ID` show of an instance (the shell adds what it owns: region,
/// memory).
struct InstanceSnapshot: Sendable, Equatable {
    var id: InstanceID
    var pid: Int32?
    var phase: String
    var origin: InstanceOrigin
    var inFlight: Int
    var served: Int
    var launchedAt: SchedulerInstant
    var startupMilliseconds: Double?
}
