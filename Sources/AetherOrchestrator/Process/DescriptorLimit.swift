import AetherSystem
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// RLIMIT_NOFILE: how many descriptors the orchestrator may have open at once. Every client
/// connection takes one, every instance several (its control connection, output pipes, pidfd,
/// shared memory), so the common default soft limit of 1024 is reached long before the machine's
/// limits. The hard limit is usually far higher (systemd's default is 524288), and raising the
/// soft limit up to it needs no privilege: `aether up` does that first.
///
/// When the limit is reached anyway, the gateway's listeners back off (`ServerBootstrap.http`):
/// connections wait in the backlog until descriptors are free again, and nothing else stops.
/// Handlers inherit the raised soft limit.
enum DescriptorLimit {
    struct Limits: Sendable, Equatable, CustomStringConvertible {
        var soft: rlim_t
        var hard: rlim_t

        var description: String { "soft \(Self.text(soft)), hard \(Self.text(hard))" }

        private static func text(_ value: rlim_t) -> String {
            value == rlim_t.max ? "unlimited" : String(value)
        }
    }

    #if canImport(Glibc)
    private static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let resource = RLIMIT_NOFILE
    #endif

    /// The current limits. The corresponding C function is `getrlimit`.
    static func current() throws(SystemCallFailure) -> Limits {
        var limit = rlimit()
        try systemCall("getrlimit", on: "RLIMIT_NOFILE", failsWith: .minusOne) { getrlimit(resource, &limit) }
        return Limits(soft: limit.rlim_cur, hard: limit.rlim_max)
    }

    /// Raises the soft limit to the hard limit and logs both, as they were and as they are. A
    /// failure is logged and the orchestrator goes on with the limit it has (fewer connections at
    /// once, never a crash). Returns the limits in force afterwards (nil: unknown).
    @discardableResult
    static func raiseSoftToHard(logger: Logger) -> Limits? {
        let before: Limits
        do {
            before = try current()
        } catch {
            logger.info("cannot read the descriptor limit (RLIMIT_NOFILE): \(error.reason)")
            return nil
        }
        guard before.soft != before.hard else {
            logger.info("descriptor limit (RLIMIT_NOFILE): \(before)")
            return before
        }
        var raised = rlimit(rlim_cur: before.hard, rlim_max: before.hard)
        do {
            try systemCall("setrlimit", on: "RLIMIT_NOFILE", failsWith: .minusOne) { setrlimit(resource, &raised) }
        } catch {
            logger.info("descriptor limit (RLIMIT_NOFILE): \(before); raising the soft limit failed: \(error.reason)")
            return before
        }
        let after = (try? current()) ?? Limits(soft: before.hard, hard: before.hard)
        logger.info("descriptor limit (RLIMIT_NOFILE): soft \(before.soft) raised to the hard limit: \(after)")
        return after
    }
}
