public import AetherCore
public import AetherIPC
public import AetherNet

/// The root of every error the orchestrator reports.
///
/// Each area has its own error type carrying the values that explain the failure, defined
/// beside its code (configuration and lifecycle in AetherCore, shared memory in AetherIPC, eBPF
/// in AetherNet, CRIU, handlers and the orchestrator itself here); this enum only says which
/// area failed, so callers can switch exhaustively and print one sentence.
public enum AetherError: Error, Sendable, CustomStringConvertible {
    case config(ConfigError)
    case state(StateTransitionError)
    case sharedMemory(SharedMemoryError)
    case criu(CriuError)
    case ebpf(EbpfError)
    case handler(HandlerError)
    case orchestrator(OrchestratorError)
    case secrets(SecretStoreError)
    case confinement(ConfinementError)
    case virtualenv(VirtualenvError)

    public var description: String {
        switch self {
        case .config(let error): error.description
        case .state(let error): error.description
        case .sharedMemory(let error): error.description
        case .criu(let error): error.description
        case .ebpf(let error): error.description
        case .handler(let error): error.description
        case .orchestrator(let error): error.description
        case .secrets(let error): error.description
        case .confinement(let error): error.description
        case .virtualenv(let error): error.description
        }
    }
}
