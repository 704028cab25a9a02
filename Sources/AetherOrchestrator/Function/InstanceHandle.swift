import AetherIPC
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What an instance's process, rings and connection report, addressed by the scheduler's id.
/// `DeployedFunction` implements it.
protocol InstanceEvents: AnyObject, Sendable {
    func launched(_ instance: InstanceID, pid: pid_t)
    /// A copy started; `attached`: it attached in the warm pool (its ATTACHED is not to come).
    /// `resume` lets a copy still stopped run: called once its first request is written, before
    /// what can wait (`SchedulerAction.canWaitForAStart`).
    func restored(_ instance: InstanceID, pid: pid_t, duration: Duration, attached: Bool, resume: () -> Void)
    func launchFailed(_ instance: InstanceID, error: HandlerError)
    func exited(_ instance: InstanceID, status: ExitStatus, outOfMemory: Bool)
    func controlLine(_ line: String, instance: InstanceID)
    func controlOverflow(instance: InstanceID)
    func responseArrived(instance: InstanceID, requestID: UInt64, response: HandlerResponse)
    func malformedResponse(instance: InstanceID, requestID: UInt64?, reason: String)
    func responseRingFailed(instance: InstanceID, reason: String)
    /// A message on the response ring failed its CRC check (then `responseRingFailed`).
    func responseCorrupted(instance: InstanceID)
}

/// The orchestrator's side of one instance (what the scheduler's `InstanceID` stands for): its
/// process, its control connection, its rings and its memory cgroup. The scheduler decides;
/// this holds the resources and does what it is told to them.
final class InstanceHandle: Sendable, ControlLineSink {
    enum WriteResult {
        case written
        case full
        case failed(String)
    }

    let id: InstanceID
    let origin: InstanceOrigin
    /// sdk handlers: the region (request ring 0, response ring 1) and the reader of its responses.
    let rings: InstanceRings?
    var region: SharedMemoryRegion? { rings?.region }
    var reader: ResponseReader? { rings?.reader }
    /// process handlers: the port the handler binds (AETHER_LISTEN_PORT).
    let listenPort: UInt16?
    let events: any InstanceEvents
    /// One producer at a time: requests are written from any event loop. With it, the request
    /// ids written and where each record ends, oldest first, until the handler has taken them:
    /// when it ends, those it never took can go to another instance (`unreadRequests`).
    private let requests: Mutex<(producer: RingProducer?, written: [(requestID: UInt64, end: UInt64)])>

    private struct State {
        var pid: pid_t?
        /// The process has ended (it may still be a zombie): no more signals.
        var gone = false
        var control: ControlConnection?
        var cgroup: String?
    }

    private let state = Mutex(State())
    /// A spawned sdk instance's control connection, our end (a copy of what the NIO channel
    /// has), kept until ATTACH goes out: ATTACH carries the region's memfd (SCM_RIGHTS), which a
    /// NIO channel cannot send. -1 when there is none.
    private let attachSocket = Mutex<CInt>(-1)

    init(
        id: InstanceID, origin: InstanceOrigin, rings: InstanceRings?, listenPort: UInt16?,
        events: any InstanceEvents
    ) {
        self.id = id
        self.origin = origin
        self.rings = rings
        self.listenPort = listenPort
        self.events = events
        requests = Mutex((rings?.region.producer(ring: 0), []))
    }

    deinit {
        let fd = attachSocket.withLock { $0 }
        if fd >= 0 { close(fd) }
    }

    /// Keeps `fd` (owned from now on) to send ATTACH on.
    func keepForAttach(_ fd: CInt) {
        attachSocket.withLock { $0 = fd }
    }

    /// Sends `ATTACH <region>` with the region's descriptor and the reader's bell (once); why
    /// not, if it could not.
    func attach() -> String? {
        guard let rings else { return "the instance has no region" }
        let fd = attachSocket.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        guard fd >= 0 else { return "the instance has no control connection to send ATTACH on" }
        defer { close(fd) }
        do {
            try ControlLine.write(fd, rings.attach.text, passing: rings.attach.passing)
            return nil
        } catch {
            return error.description
        }
    }

    var pid: pid_t? { state.withLock { $0.pid } }
    var cgroup: String? { state.withLock { $0.cgroup } }
    var control: ControlConnection? { state.withLock { $0.control } }

    func started(pid: pid_t, cgroup: String?) {
        state.withLock {
            $0.pid = pid
            $0.cgroup = cgroup
        }
    }

    /// Marks the process ended (called while it is still a zombie); returns what to clean up.
    func markGone() -> (control: ControlConnection?, cgroup: String?) {
        state.withLock { state in
            state.gone = true
            return (state.control, state.cgroup)
        }
    }

    /// Stops the process: its process group (the handler leads one, so its children go too).
    /// An sdk handler may be PID 1 of its namespace (a restored copy, a confined instance),
    /// where SIGTERM without a handler does nothing: its runtime exits when its control
    /// connection ends instead.
    func signal(_ signal: StopSignal) {
        state.withLock { state in
            guard !state.gone, let pid = state.pid else { return }
            if signal == .terminate && region != nil, let control = state.control {
                control.close()
            } else {
                kill(-pid, signal == .kill ? SIGKILL : SIGTERM)
            }
        }
    }

    /// Writes a request into the request ring, then wakes the handler if it sleeps: after the
    /// lock, since both event loops write here and a wake-up is a system call.
    func write(_ invocation: Invocation, requestID: UInt64) -> WriteResult {
        let (result, written) = requests.withLock { requests -> (WriteResult, RingProducer?) in
            guard let producer = requests.producer else { return (.failed("the instance has no request ring"), nil) }
            do {
                guard try invocation.write(requestID: requestID, to: producer) else { return (.full, nil) }
            } catch {
                return (.failed("\(error)"), nil)
            }
            // Forget what the handler has taken already; remember this one.
            if let consumed = producer.consumedPosition() {
                requests.written.removeAll { $0.end <= consumed }
            }
            requests.written.append((requestID, producer.position))
            return (.written, producer)
        }
        written?.ringConsumer()
        return result
    }

    /// The requests written to the ring that the handler never took (once it has ended): they
    /// were not executed, so another instance may serve them. An unbelievable tail word counts
    /// as every request taken (answered 502, never executed twice).
    func unreadRequests() -> Set<UInt64> {
        requests.withLock { requests in
            guard let consumed = requests.producer?.consumedPosition() else { return [] }
            return Set(requests.written.filter { $0.end > consumed }.map(\.requestID))
        }
    }

    // MARK: ControlLineSink

    func connected(_ connection: ControlConnection) {
        let gone = state.withLock { state -> Bool in
            state.control = connection
            return state.gone
        }
        if gone { connection.close() }
    }

    func controlLine(_ line: String) { events.controlLine(line, instance: id) }
    func controlOverflow() { events.controlOverflow(instance: id) }
}
