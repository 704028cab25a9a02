public import AetherCore

/// Why a function cannot be confined as its configuration and the host's settings require
/// (SECURITY.md). `aether up` and `deploy` fail with it: a function never runs less confined
/// than it was meant to.
public enum ConfinementError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `aether-sandbox` is not next to the `aether` binary (nor at $AETHER_SANDBOX).
    case helperMissing(path: String)
    /// The function names a `user:` this host does not have.
    case unknownUser(function: FunctionID, user: String)
    /// The function names a user with uid or gid 0.
    case privilegedUser(function: FunctionID, user: String)
    /// Every id of `uid_range` is taken by a user of the host or another function.
    case rangeExhausted(range: String)
    /// The table of function identities cannot be read or written.
    case identityTable(path: String, reason: String)
    /// The function's own uid cannot read its handler (a folder on the way is closed to it).
    case unreadable(function: FunctionID, path: String, identity: String, because: String)
    /// A setting that only a sandbox can give, with `confinement: false`.
    case needsConfinement(function: FunctionID, setting: String)
    /// A function's secret files could not be written.
    case secretFiles(path: String, reason: String)
    /// A cgroup controller a limit needs is not available to the orchestrator.
    case controllerMissing(function: FunctionID, setting: String, controller: String)

    public var description: String {
        switch self {
        case .helperMissing(let path):
            "the sandbox helper \(path) is missing: build it (`swift build --product aether-sandbox`, "
                + "scripts/setup.sh does) or set AETHER_SANDBOX to its path"
        case .unknownUser(let function, let user):
            "function '\(function)': user '\(user)' does not exist on this host"
        case .privilegedUser(let function, let user):
            "function '\(function)': user '\(user)' has uid or gid 0; a function never runs as root"
        case .rangeExhausted(let range):
            "no free user id left in uid_range \(range): every id is a user of the host or another function's"
        case .identityTable(let path, let reason):
            "cannot keep the function identities in \(path): \(reason)"
        case .unreadable(let function, let path, let identity, let because):
            "function '\(function)': its handler runs as \(identity), which cannot read \(path): \(because); "
                + "make it readable (e.g. chmod o+rx on the folders, o+r on the file) or name a `user:` who can"
        case .needsConfinement(let function, let setting):
            "function '\(function)': \(setting) needs confinement, which this orchestrator has turned off "
                + "(confinement: false)"
        case .secretFiles(let path, let reason):
            "cannot write the secret files in \(path): \(reason)"
        case .controllerMissing(let function, let setting, let controller):
            "function '\(function)': \(setting) needs the cgroup \(controller) controller, which this host "
                + "does not give the orchestrator (see `aether doctor`)"
        }
    }
}
