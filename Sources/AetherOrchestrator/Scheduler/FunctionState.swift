public import AetherCore

/// Where a function is in its life, as the seed defines it:
///
/// ```
/// Uninitialized --spawn, READY--> Running            (cold start, no snapshot)
/// Uninitialized --checkpoint----> WarmSnapshot
/// WarmSnapshot  --restore-------> Running
/// Running       --idle----------> Suspended | WarmSnapshot
/// Suspended     --request-------> Running
/// Suspended     --discard-------> WarmSnapshot
/// ```
/// Nothing returns to `uninitialized`, and staying in a state is not a transition.
public enum FunctionState: String, Sendable, CaseIterable, Codable, CustomStringConvertible {
    case uninitialized = "Uninitialized"
    case warmSnapshot = "WarmSnapshot"
    case running = "Running"
    case suspended = "Suspended"

    /// Whether the seed allows going from `self` to `next`.
    public func canTransition(to next: FunctionState) -> Bool {
        switch (self, next) {
        case (.uninitialized, .warmSnapshot),
            (.uninitialized, .running),
            (.warmSnapshot, .running),
            (.running, .suspended),
            (.running, .warmSnapshot),
            (.suspended, .running),
            (.suspended, .warmSnapshot):
            true
        default:
            false
        }
    }

    /// The states reachable in one transition, in declaration order.
    public var allowedSuccessors: [FunctionState] {
        Self.allCases.filter { canTransition(to: $0) }
    }

    /// The state after moving to `next`, or the typed error naming both ends.
    public func transitioned(
        to next: FunctionState, function: FunctionID? = nil
    ) throws(StateTransitionError)
        -> FunctionState
    {
        guard canTransition(to: next) else {
            throw StateTransitionError(function: function, from: self, to: next)
        }
        return next
    }

    public var description: String { rawValue }
}
