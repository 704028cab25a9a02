public import AetherCore

/// Why a function's virtualenv (`requirements:`) could not be made or used.
public enum VirtualenvError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The interpreter could not be run, or it cannot make virtualenvs (no `venv`/`ensurepip`:
    /// Debian's python3-venv is not installed). `output`: what it printed.
    case interpreterUnusable(python: String, output: String)
    /// `pip install -r` (or making the virtualenv) failed: `status` is how it ended, `output` the
    /// tail of what it printed (pip's error included).
    case installFailed(function: FunctionID, requirements: String, status: String, output: String)
    /// The cache folder (`<state_dir>/venvs`) or a virtualenv in it could not be made or used.
    case folderUnavailable(path: String, reason: String)

    public var description: String {
        switch self {
        case .interpreterUnusable(let python, let output):
            "the Python interpreter \(python) cannot make virtualenvs for `requirements:` "
                + "(it needs the venv and ensurepip modules: on Debian, apt-get install python3-venv): "
                + (output.isEmpty ? "it printed nothing" : output)
        case .installFailed(let function, let requirements, let status, let output):
            "the virtualenv of function \(function) could not be built from \(requirements): "
                + "pip install \(status); its output ends:\n\(output)"
        case .folderUnavailable(let path, let reason):
            "cannot use the virtualenv folder \(path): \(reason)"
        }
    }
}
