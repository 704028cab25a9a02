public import AetherCore

/// A handler instance that could not be started or broke the handler protocol
/// (docs/handler-protocol.md). `aether up` fails with it at start; `aether deploy` reports it.
public enum HandlerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The program could not be executed at all.
    case spawnFailed(function: FunctionID, program: String, reason: String)
    /// No READY (or, for sdk handlers, no ATTACHED) within the startup timeout.
    case startupTimedOut(function: FunctionID, instance: Int, waitedMilliseconds: Int, awaiting: String)
    /// A process handler sent READY but no socket listened on the port it was given within the
    /// startup timeout.
    case notListening(function: FunctionID, instance: Int, waitedMilliseconds: Int)
    /// The process ended before it was ready; `output` is the end of what it wrote to stderr.
    case exitedDuringStartup(function: FunctionID, instance: Int, status: String, output: String)
    /// It sent something on AETHER_SOCKET that is not in the protocol, or reported an error.
    case protocolViolation(function: FunctionID, instance: Int, detail: String)
    /// The function's snapshot (an initialised handler checkpointed with CRIU) could not be made.
    case snapshotFailed(function: FunctionID, detail: String)
    /// An instance could not be restored from the snapshot (including over the restore budget).
    case restoreFailed(function: FunctionID, instance: Int, error: CriuError)

    /// What a client may be told (in a 503's body): the kind of failure, without the handler's
    /// output, criu's log lines or host paths, which are in the orchestrator's log.
    public var summary: String {
        switch self {
        case .spawnFailed: "its handler could not be started"
        case .startupTimedOut: "it did not become ready within startup_timeout_ms"
        case .notListening: "its handler did not listen on its port"
        case .exitedDuringStartup: "its handler exited while it was starting"
        case .protocolViolation: "its handler broke the handler protocol"
        case .snapshotFailed: "its snapshot could not be made"
        // The budget and the time it took: numbers, nothing of the host.
        case .restoreFailed(_, _, let criu) where criu.isLatencyViolation:
            "its snapshot could not be restored in time: \(criu)"
        case .restoreFailed: "its snapshot could not be restored"
        }
    }

    public var description: String {
        switch self {
        case .spawnFailed(let function, let program, let reason):
            return "function \(function): cannot start handler \(program): \(reason)"
        case .startupTimedOut(let function, let instance, let waited, let awaiting):
            return
                "function \(function): instance \(instance) sent no \(awaiting) on AETHER_SOCKET within \(waited) ms (startup_timeout_ms)"
        case .notListening(let function, let instance, let waited):
            return
                "function \(function): instance \(instance) sent READY but did not listen on its port (AETHER_TRIGGER_PORT, also given as AETHER_LISTEN_PORT) within \(waited) ms (startup_timeout_ms)"
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
