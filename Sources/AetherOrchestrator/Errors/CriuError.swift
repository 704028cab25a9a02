/// Failures of checkpoint and restore. Per the seed's "no fallbacks" rule none of these is
/// ever answered by a silent cold start: they reach the caller, the stats and the metrics.
public enum CriuError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No usable criu binary at the configured path.
    case notInstalled(path: String)
    /// `criu check` reported the kernel or the installation unfit.
    case checkFailed(output: String)
    /// Dumping a process failed; `log` holds criu's own last lines.
    case dumpFailed(pid: Int32, log: String)
    /// Restoring an image failed; `log` holds criu's own last lines.
    case restoreFailed(image: String, log: String)
    /// `snapshot: fork`: the live template did not fork a copy.
    case forkFailed(template: Int32, reason: String)
    /// A restore finished, or was cut off, later than the configured budget.
    case latencyViolation(actual: Duration, limit: Duration)

    private static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let value = Double(seconds) * 1000 + Double(attoseconds) / 1e15
        return value == value.rounded() ? String(Int(value)) : String((value * 10).rounded() / 10)
    }

    /// A restore that finished (or was cut off) over its budget.
    public var isLatencyViolation: Bool {
        if case .latencyViolation = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .notInstalled(let path):
            "no usable criu at \(path); run scripts/setup.sh to install it"
        case .checkFailed(let output):
            "criu check failed: \(output)"
        case .dumpFailed(let pid, let log):
            "criu dump of pid \(pid) failed: \(log)"
        case .restoreFailed(let image, let log):
            "criu restore of \(image) failed: \(log)"
        case .forkFailed(let template, let reason):
            "fork of the template (pid \(template)) failed: \(reason)"
        case .latencyViolation(let actual, let limit):
            "restore took \(Self.milliseconds(actual)) ms, over the \(Self.milliseconds(limit)) ms restore budget (restore_timeout_ms)"
        }
    }
}
