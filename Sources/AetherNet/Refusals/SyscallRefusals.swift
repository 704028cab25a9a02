import AetherSystem
import CAetherSystem
import CLibBPF
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Counts, per function uid and system call, the calls the sandbox's syscall filter refused
/// with EPERM (SECURITY.md): a BPF program at every system call's exit
/// (bpf/refusals.bpf.c), attached while the orchestrator runs with `confinement: true`.
/// `aether stats` and /metrics show the counts.
public final class SyscallRefusals: Sendable {
    private struct State {
        var object: BPFObject
        var confined: BPFMap
        var refusals: BPFMap
        /// The raw tracepoint's descriptor: the program is detached when it closes.
        var link: CInt
    }

    private let state: Mutex<State>
    /// System call numbers to names, from the filter's own list.
    private let names: [UInt32: String]

    public init() throws(EbpfError) {
        let object = try BPFObject(.refusals)
        let refused = try object.map("refused_calls")
        var names: [UInt32: String] = [:]
        for index in 0..<aether_refused_call_count() {
            let number = UInt32(aether_refused_call_number(index))
            names[number] = String(cString: aether_refused_call_name(index))
            try refused.update(number, UInt8(1))
        }
        // clone refused for its namespace flags counts too.
        let clone = UInt32(aether_clone_syscall_number())
        names[clone] = "clone (namespace flags)"
        try refused.update(clone, UInt8(1))
        self.names = names
        let program = try object.programDescriptor("aether_count_refusals")
        let link: CInt
        do throws(SystemCallFailure) {
            link = try systemCall("bpf_raw_tracepoint_open", on: "sys_exit", failsWith: .negatedErrno) {
                bpf_raw_tracepoint_open("sys_exit", program)
            }
        } catch {
            throw .attachFailed(
                program: "aether_count_refusals", target: "raw tracepoint sys_exit",
                reason: BPFObject.explain("cannot attach", error))
        }
        state = Mutex(
            State(
                object: object, confined: try object.map("confined_uids"), refusals: try object.map("refusals"),
                link: link))
    }

    deinit {
        _ = state.withLock { Glibc.close($0.link) }
    }

    /// Counts the refusals of processes running as `uid` from now on.
    public func watch(uid: UInt32) {
        state.withLock { _ = try? $0.confined.update(uid, UInt8(1)) }
    }

    /// Refusals counted for `uid` so far, by system call name.
    public func counts(uid: UInt32) -> [String: Int] {
        state.withLock { state in
            var counts: [String: Int] = [:]
            for key in state.refusals.keys(as: UInt64.self) where UInt32(truncatingIfNeeded: key) == uid {
                let number = UInt32(truncatingIfNeeded: key >> 32)
                let total = (state.refusals.lookupAllCPUs(key, as: UInt64.self) ?? []).reduce(0, +)
                counts[names[number] ?? "syscall \(number)", default: 0] += Int(total)
            }
            return counts
        }
    }
}
