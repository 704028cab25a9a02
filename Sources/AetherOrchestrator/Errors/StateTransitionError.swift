public import AetherCore

/// A lifecycle transition the state machine does not allow.
public struct StateTransitionError: Error, Sendable, Equatable, CustomStringConvertible {
    public let function: FunctionID?
    public let from: FunctionState
    public let to: FunctionState

    public init(function: FunctionID? = nil, from: FunctionState, to: FunctionState) {
        self.function = function
        self.from = from
        self.to = to
    }

    public var description: String {
        let subject = function.map { "function \($0)" } ?? "a function"
        let allowed = from.allowedSuccessors.map(\.rawValue).joined(separator: ", ")
        return
            "\(subject) cannot go from \(from) to \(to); from \(from) it may go to: \(allowed.isEmpty ? "nothing" : allowed)"
    }
}
