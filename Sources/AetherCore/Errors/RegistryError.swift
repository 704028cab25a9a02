/// A registry operation that contradicts what the registry holds.
public enum RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    case duplicateFunction(FunctionID)
    case portInUse(Port, by: FunctionID)
    case unknownFunction(FunctionID)
    case illegalTransition(StateTransitionError)

    public var description: String {
        switch self {
        case .duplicateFunction(let id): "function \(id) is already registered"
        case .portInUse(let port, let owner): "trigger port \(port) is already used by function \(owner)"
        case .unknownFunction(let id): "no function with id \(id) is registered"
        case .illegalTransition(let error): error.description
        }
    }
}
