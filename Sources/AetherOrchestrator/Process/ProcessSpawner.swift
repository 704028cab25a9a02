import AetherSystem
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why a handler process could not be started.
public struct SpawnError: Error, Sendable, CustomStringConvertible {
    public let program: String
    public let reason: String

    public var description: String { "cannot start \(program): \(reason)" }

    init(program: String, reason: String) {
        self.program = program
        self.reason = reason
    }

    /// A system call that failed while starting `program`: the reason reads "posix_spawnp: No
    /// such file or directory".
    init(program: String, failure: SystemCallFailure) {
        self.init(program: program, reason: "\(failure.call): \(failure.reason)")
    }
}

/// A child process with the read ends of its stdout and stderr pipes, which the caller owns.
struct SpawnedProcess: ~Copyable {
    let pid: pid_t
    let stdout: OwnedDescriptor
    let stderr: OwnedDescriptor
}

/// Starts handler programs with posix_spawn: stdin from /dev/null, stdout and stderr into pipes,
/// its own process group (a Ctrl-C at the terminal reaches the orchestrator, which stops its
/// children in order) and default signal dispositions (NIO ignores SIGPIPE, and ignored signals
/// would otherwise be inherited across exec).
enum ProcessSpawner {
    /// - Parameters:
    ///   - inheriting: descriptors the child gets as 3, 4, 5, ... in this order (all others close);
    ///     the caller still owns them.
    static func spawn(
        program: String, arguments: [String], environment: [String: String], searchPath: Bool,
        inheriting: [CInt] = []
    ) throws(SpawnError) -> SpawnedProcess {
        let stdout = try DescriptorPair.outputPipe("stdout", of: program)
        let stderr = try DescriptorPair.outputPipe("stderr", of: program)

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout.theirs.rawValue, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr.theirs.rawValue, 2)
        addInherited(inheriting, to: &actions)

        let pid = try launch(
            program: program, arguments: arguments, environment: environment, searchPath: searchPath,
            actions: &actions)
        // The write ends close on return: the child holds the only ones, so its exit is our EOF.
        return SpawnedProcess(pid: pid, stdout: stdout.ours, stderr: stderr.ours)
    }

    /// Like `spawn`, with stdout and stderr to /dev/null; returns the child's PID.
    static func spawnDiscardingOutput(
        program: String, arguments: [String], environment: [String: String], searchPath: Bool,
        inheriting: [CInt] = []
    ) throws(SpawnError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        addInherited(inheriting, to: &actions)
        return try launch(
            program: program, arguments: arguments, environment: environment, searchPath: searchPath,
            actions: &actions)
    }

    /// Like `spawn`, writing to our own stdout and stderr (an orchestrator's successor logs where
    /// it did); returns the child's PID.
    static func spawnSharingOutput(
        program: String, arguments: [String], environment: [String: String]
    ) throws(SpawnError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        addInherited([], to: &actions)
        return try launch(
            program: program, arguments: arguments, environment: environment, searchPath: false, actions: &actions)
    }

    /// Maps `inheriting` to 3, 4, ... and closes everything above. Nothing else of the
    /// orchestrator's leaks into a child: a handler that outlived a crashed orchestrator must
    /// not keep its control socket or trigger ports open.
    private static func addInherited(_ inheriting: [CInt], to actions: inout posix_spawn_file_actions_t) {
        // Move the sources out of the way first, so a source numbered 3... is not overwritten
        // before it is copied.
        let parking: CInt = 1000
        for (index, fd) in inheriting.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, fd, parking + CInt(index))
        }
        for index in inheriting.indices {
            posix_spawn_file_actions_adddup2(&actions, parking + CInt(index), 3 + CInt(index))
        }
        aether_spawn_close_from(&actions, 3 + CInt(inheriting.count))
    }

    private static func launch(
        program: String, arguments: [String], environment: [String: String], searchPath: Bool,
        actions: inout posix_spawn_file_actions_t
    ) throws(SpawnError) -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        do {
            try systemCall(searchPath ? "posix_spawnp" : "posix_spawn", on: program, failsWith: .errnoReturned) {
                searchPath
                    ? posix_spawnp(&pid, program, &actions, &attributes, argv, envp)
                    : posix_spawn(&pid, program, &actions, &attributes, argv, envp)
            }
        } catch {
            throw SpawnError(program: program, failure: error)
        }
        return pid
    }
}

/// How a child process ended.
enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    case exited(CInt)
    case signalled(CInt)
    /// There never was a process (a restore that failed).
    case notStarted
    /// Ended, with a status only its parent saw (a copy forked from a live template, which
    /// reaped it).
    case unknown

    init(waitStatus status: CInt) {
        if status & 0x7f == 0 {
            self = .exited((status >> 8) & 0xff)
        } else {
            self = .signalled(status & 0x7f)
        }
    }

    var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signalled(let signal): "killed by signal \(signal) (\(String(cString: strsignal(signal))))"
        case .notStarted: "was not started"
        case .unknown: "ended (a forked copy: its template reaped it, so its status is unknown)"
        }
    }
}
