import AetherSystem
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The two ends of a pipe or a socket pair made for a child process, both close-on-exec and
/// each owned: `ours` stays with the orchestrator, `theirs` goes to the child (as one of the
/// descriptors `ProcessSpawner` maps into it) and is closed here once the child has it.
struct DescriptorPair: ~Copyable {
    /// A pipe's read end, or the first end of a socket pair.
    let ours: OwnedDescriptor
    /// A pipe's write end, or the second end of a socket pair.
    let theirs: OwnedDescriptor

    /// A pipe (pipe2 with O_CLOEXEC); `subject` names it in a failure.
    static func pipe(for subject: @autoclosure () -> String) throws(SystemCallFailure) -> DescriptorPair {
        var ends: [CInt] = [-1, -1]
        try systemCall("pipe2", on: subject(), failsWith: .minusOne) { aether_pipe_cloexec(&ends) }
        return DescriptorPair(ours: OwnedDescriptor(owning: ends[0]), theirs: OwnedDescriptor(owning: ends[1]))
    }

    /// A connected pair of Unix sockets of `type` (SOCK_STREAM, SOCK_SEQPACKET), close-on-exec.
    static func socketPair(
        _ type: __socket_type, for subject: @autoclosure () -> String
    ) throws(SystemCallFailure) -> DescriptorPair {
        var ends: [CInt] = [-1, -1]
        try systemCall("socketpair", on: subject(), failsWith: .minusOne) {
            socketpair(AF_UNIX, CInt(type.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &ends)
        }
        return DescriptorPair(ours: OwnedDescriptor(owning: ends[0]), theirs: OwnedDescriptor(owning: ends[1]))
    }

    /// A pipe for a child's `stream` ("stdout", "stderr"); its failure says which and of what.
    static func outputPipe(_ stream: String, of program: String) throws(SpawnError) -> DescriptorPair {
        do {
            return try .pipe(for: "the \(stream) of \(program)")
        } catch {
            throw SpawnError(program: program, failure: error)
        }
    }
}
