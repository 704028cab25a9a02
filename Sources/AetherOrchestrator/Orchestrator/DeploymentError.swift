import AetherCore

/// Why `aether deploy`, `rollback` or `rm` changed nothing.
enum DeploymentError: Error, Sendable, CustomStringConvertible {
    /// Refused before anything started: an invalid file, a port another function serves, the
    /// warm pool, another change in progress.
    case refused(AetherError)
    /// A new generation could not start: every new generation was stopped again, the running
    /// functions and the stored state are as they were. `undoProblems`: what could not be put
    /// back (empty when everything was).
    case startFailed(function: FunctionID, cause: AetherError, undoProblems: [String])
    /// The new desired state could not be stored (then nothing was applied either).
    case notStored(DesiredStateError, undoProblems: [String])
    /// `aether rm` (or `versions`, `rollback`) of an id that is not deployed.
    case unknownFunction(String)
    /// A rollback to a version that is not kept, or that cannot be read: nothing started.
    case versionRefused(VersionError)
    /// A new generation's version could not be recorded (its code copied, its file written):
    /// nothing was applied.
    case versionNotKept(VersionError, undoProblems: [String])

    var description: String {
        switch self {
        case .refused(let error):
            return error.description
        case .startFailed(let function, let cause, let problems):
            return "nothing was applied: function \(function) could not start (\(cause)); "
                + Self.unchanged(problems)
        case .notStored(let error, let problems):
            return "nothing was applied: \(error); " + Self.unchanged(problems)
        case .unknownFunction(let id):
            return "no function \(id) is deployed"
        case .versionRefused(let error):
            return error.description
        case .versionNotKept(let error, let problems):
            return "nothing was applied: \(error); " + Self.unchanged(problems)
        }
    }

    private static func unchanged(_ problems: [String]) -> String {
        if problems.isEmpty {
            return "every running function and the stored state are unchanged"
        }
        return "the stored state is unchanged, but putting the running functions back failed: "
            + problems.joined(separator: "; ")
    }
}
