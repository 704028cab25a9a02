import AetherCore
import AetherNet
import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `aether restart`: a successor orchestrator takes over without a refused connection.
///
/// 1. The running orchestrator (the predecessor) is asked to restart: it starts its successor,
///    `aether up --takeover --state-dir STATE_DIR` (the binary `aether restart` ran), which
///    resumes the deployed state and logs where the predecessor does.
/// 2. The successor answers on `control_socket.next`, shares the predecessor's sockets on the
///    trigger ports (copies taken with pidfd_getfd: the ports are never unbound), attaches its own
///    data plane (the kernel runs the predecessor's sk_lookup program first, which keeps
///    choosing the predecessor's sockets), and starts every function.
/// 3. Once all serve, it tells the predecessor to hand over (`POST /v1/handover`) and moves its
///    control socket onto the path. The predecessor detaches its data plane (new connections
///    now reach the successor's sockets), answers the rest of its open connections with
///    `Connection: close` (clients reconnect, to the successor), then stops like `aether down`.
extension Orchestrator {
    /// The orchestrator being taken over.
    struct Predecessor: Sendable {
        let pid: pid_t
        let controlSocket: String

        /// The orchestrator answering on `controlSocket`, if one does.
        static func find(controlSocket: String) -> Predecessor? {
            guard let status = try? ControlClient(socketPath: controlSocket).status() else { return nil }
            return Predecessor(pid: pid_t(status.pid), controlSocket: controlSocket)
        }
    }

    /// Every function serves: the predecessor hands over, and the control socket takes its path.
    func completeTakeover(control: ControlServer) async throws(AetherError) {
        guard let predecessor = state.withLock({ $0.predecessor }) else { return }
        do {
            try ControlClient(socketPath: predecessor.controlSocket).handOver()
        } catch {
            // It stopped meanwhile: nothing to hand over; the ports are ours already.
            logger.warning("the orchestrator taken over did not answer: \(error)")
        }
        do {
            try control.move(to: predecessor.controlSocket)
        } catch {
            throw .orchestrator(
                .bindFailed(what: "the control API", address: predecessor.controlSocket, reason: error.reason))
        }
        if let dataplane, let interface = settings.xdpInterface {
            do {
                try dataplane.attachXDP(XDPAttachment(interface: interface, mode: settings.xdpMode))
            } catch {
                logger.error("XDP could not be attached again after the hand-over: \(error)")
            }
        }
        state.withLock { $0.predecessor = nil }
        logger.info("took over from the orchestrator with pid \(predecessor.pid)")
    }

    /// A process handler of `dataplane: sockets` binds its trigger port itself: once the
    /// predecessor's handler lets it go (at most its drain, a few seconds), the successor's starts.
    func startFunctionWhenItsPortIsFree(_ config: FunctionConfig) async throws(AetherError) {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                try await startFunction(config)
                return
            } catch {
                guard ContinuousClock.now < deadline else { throw error }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// `POST /v1/restart`: starts the successor; it takes over once it serves.
    func restart(_ request: RestartRequest) throws(OrchestratorError) -> RestartResult {
        let refusal = state.withLock { state -> String? in
            if !state.ready { return "the orchestrator is still starting" }
            if state.handingOver { return "the orchestrator is already handing over" }
            if state.changing { return "a deploy or rm is in progress" }
            return nil
        }
        if let refusal { throw .conflict("cannot restart now: \(refusal)") }
        guard access(request.executable, X_OK) == 0 else {
            throw .conflict("cannot restart: \(request.executable) is not an executable aether")
        }
        var environment: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") {
                environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            entry += 1
        }
        let successor: pid_t
        do {
            successor = try ProcessSpawner.spawnSharingOutput(
                program: request.executable, arguments: ["up", "--takeover", "--state-dir", store.folder],
                environment: environment)
        } catch {
            throw .conflict("cannot start the successor: \(error)")
        }
        let logger = logger
        try? ChildReaper.shared.watch(
            successor,
            reaped: { status in
                logger.error("the successor orchestrator (pid \(successor)) \(status)")
            })
        logger.info("restarting: the successor has pid \(successor)")
        return RestartResult(pid: Int(getpid()), successor: Int(successor))
    }

    /// `POST /v1/handover`: the successor serves every function. Lets go of the ports (the data
    /// plane detaches; with `dataplane: sockets` the gateway stops accepting) and of the control
    /// socket's path, answers what is still open with `Connection: close`, then stops.
    func handOver() {
        let first = state.withLock { state -> Bool in
            defer { state.handingOver = true }
            return !state.handingOver
        }
        guard first else { return }
        let (dataplane, control, functions) = state.withLock { ($0.dataplane, $0.control, Array($0.functions.values)) }
        control?.letGoOfPath()
        dataplane?.detach()
        let longest = functions.map { $0.config.timeout.milliseconds }.max() ?? 0
        let deadline = ContinuousClock.now + .milliseconds(min(30_000, longest + 1000))
        Task {
            await gateway.handOver(dataplane: dataplane)
            logger.info("handing over to the successor: finishing the open connections")
            while gateway.routes.connections.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
            requestShutdown()
        }
    }
}
