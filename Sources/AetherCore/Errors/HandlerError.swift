/// A handler instance that could not be started or broke the handler protocol
/// (docs/handler-protocol.md). `aether up` fails with it at start; `aether deploy` reports it.
public enum HandlerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The program could not be executed at all.
    case spawnFailed(function: FunctionID, program: String, reason: String)
    /// No READY (or, for sdk handlers, no ATTACHED) within the startup timeout.
    case startupTimedOut(function: FunctionID, instance: Int, waitedMilliseconds: Int, awaiting: String)
    /// The process ended before it was ready; `output` is the end of what it wrote to stderr.
    case exitedDuringStartup(function: FunctionID, instance: Int, status: String, output: String)
    /// It sent something on AETHER_SOCKET that is not in the protocol, or reported an error.
    case protocolViolation(function: FunctionID, instance: Int, detail: String)
    /// The function's snapshot (an initialised handler checkpointed with CRIU) could not be made.
    case snapshotFailed(function: FunctionID, detail: String)
    /// An instance could not be restored from the snapshot (including over the restore budget).
    case restoreFailed(function: FunctionID, instance: Int, error: CriuError)

    public var description: String {
        switch self {
        case .spawnFailed(let function, let program, let reason):
            return "function \(function): cannot start handler \(program): \(reason)"
        case .startupTimedOut(let function, let instance, let waited, let awaiting):
            return
                "function \(function): instance \(instance) sent no \(awaiting) on AETHER_SOCKET within \(waited) ms (startup_timeout_ms)"
        case .exitedDuringStartup(let function, let instance, let status, let output):
            let tail = output.isEmpty ? "" : "; its last output:\n\(output)"
            return "function \(function): instance \(instance) \(status) before it was ready\(tail)"
        case .protocolViolation(let function, let instance, let detail):
            return "function \(function): instance \(instance) broke the handler protocol: \(detail)"
        case .snapshotFailed(let function, let detail):
            return "function \(function): cannot make its snapshot: \(detail)"
        case .restoreFailed(let function, let instance, let error):
            return "function \(function): instance \(instance) was not restored: \(error)"
        }
    }
}

/// Problems of the orchestrator process itself and of talking to it.
public enum OrchestratorError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A trigger port (or the control socket) could not be bound.
    case bindFailed(what: String, address: String, reason: String)
    /// Another orchestrator answers on the control socket.
    case alreadyRunning(controlSocket: String)
    /// No orchestrator answers on the control socket.
    case notRunning(controlSocket: String, reason: String)
    /// The control API answered with an error.
    case requestFailed(status: Int, message: String)
    /// A deploy would give a port to two functions, or names a function that does not exist.
    case conflict(String)
    /// `memory_limit_mb` cannot be enforced on this host (no usable cgroup memory controller).
    case memoryLimitsUnavailable(reason: String)

    public var description: String {
        switch self {
        case .bindFailed(let what, let address, let reason):
            "cannot listen for \(what) on \(address): \(reason)"
        case .alreadyRunning(let socket):
            "an orchestrator is already running (it answers on \(socket)); stop it with `aether down` first"
        case .notRunning(let socket, let reason):
            "no orchestrator is running: cannot reach its control socket \(socket) (\(reason)); start one with `aether up -c FILE`"
        case .requestFailed(let status, let message):
            "the orchestrator refused the request (HTTP \(status)): \(message)"
        case .conflict(let message):
            message
        case .memoryLimitsUnavailable(let reason):
            "cannot enforce memory_limit_mb on this host: \(reason)"
        }
    }
}
