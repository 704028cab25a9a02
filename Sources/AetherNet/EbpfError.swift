/// Failures of the eBPF data plane. When eBPF was asked for, these stop `aether up`; running
/// without eBPF is an explicit configuration choice, never a downgrade.
public enum EbpfError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kernel refused to load a program; `verifierLog` is the verifier's explanation.
    case loadFailed(program: String, reason: String, verifierLog: String)
    /// A loaded program could not be attached to its hook.
    case attachFailed(program: String, target: String, reason: String)
    case mapNotFound(name: String)
    case programNotFound(object: String, program: String)
    case mapOperationFailed(map: String, operation: String, reason: String)

    public var description: String {
        switch self {
        case .loadFailed(let program, let reason, let log):
            "eBPF program \(program) failed to load: \(reason)" + (log.isEmpty ? "" : "\nverifier log:\n\(log)")
        case .attachFailed(let program, let target, let reason):
            "eBPF program \(program) could not attach to \(target): \(reason)"
        case .mapNotFound(let name):
            "eBPF map \(name) is not in the loaded object"
        case .programNotFound(let object, let program):
            "eBPF program \(program) is not in the object \(object)"
        case .mapOperationFailed(let map, let operation, let reason):
            "eBPF map \(map): \(operation) failed: \(reason)"
        }
    }
}
