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
    /// A folder the orchestrator needs (for `purpose`) could not be created.
    case folderUnavailable(purpose: String, path: String, reason: String)
    /// The orchestrator could not become the reaper of the snapshot copies criu restores.
    case subreaperUnavailable(reason: String)
    /// The trace exporter for `otlp_endpoint` could not be made.
    case tracingUnavailable(endpoint: String, reason: String)

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
        case .folderUnavailable(let purpose, let path, let reason):
            "cannot create \(path) for \(purpose): \(reason)"
        case .subreaperUnavailable(let reason):
            "cannot become the child subreaper that reaps restored instances: \(reason)"
        case .tracingUnavailable(let endpoint, let reason):
            "cannot export traces to otlp_endpoint \(endpoint): \(reason)"
        }
    }
}
