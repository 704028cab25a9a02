import AetherSystem
import CLibBPF

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A map of a loaded `BPFObject`. Keys and values are the C structs of
/// `Sources/CLibBPF/aether_dataplane.h`, passed by their bytes.
struct BPFMap {
    let name: String
    let descriptor: CInt
    let valueSize: Int
    /// One value per possible CPU (PERCPU_HASH / PERCPU_ARRAY).
    let perCPU: Bool

    static var possibleCPUs: Int { Int(max(1, libbpf_num_possible_cpus())) }

    /// Per-CPU values are padded to 8 bytes each.
    private var perCPUStride: Int { (valueSize + 7) & ~7 }

    func update<Key: BitwiseCopyable, Value: BitwiseCopyable>(
        _ key: Key, _ value: Value, flags: UInt64 = UInt64(BPF_ANY)
    ) throws(EbpfError) {
        var key = key
        var value = value
        try mapCall("update", "bpf_map_update_elem") { bpf_map_update_elem(descriptor, &key, &value, flags) }
    }

    /// Creates a per-CPU entry holding `value` on every CPU.
    func updateAllCPUs<Key: BitwiseCopyable, Value: BitwiseCopyable>(
        _ key: Key, _ value: Value, flags: UInt64 = UInt64(BPF_ANY)
    ) throws(EbpfError) {
        var key = key
        let stride = perCPUStride
        var buffer = [UInt8](repeating: 0, count: stride * Self.possibleCPUs)
        buffer.withUnsafeMutableBytes { raw in
            for cpu in 0..<Self.possibleCPUs { raw.storeBytes(of: value, toByteOffset: cpu * stride, as: Value.self) }
        }
        try mapCall("update", "bpf_map_update_elem") { bpf_map_update_elem(descriptor, &key, buffer, flags) }
    }

    /// Removes an entry; an absent one is not an error.
    func delete<Key: BitwiseCopyable>(_ key: Key) throws(EbpfError) {
        var key = key
        try mapCall("delete", "bpf_map_delete_elem", ignoring: ENOENT) { bpf_map_delete_elem(descriptor, &key) }
    }

    /// Runs one libbpf map call (0, or the negated error number); its failure is
    /// `mapOperationFailed` with the kernel's reason, except for the error `ignored`.
    private func mapCall(
        _ operation: String, _ call: String, ignoring ignored: CInt? = nil, _ body: () -> CInt
    ) throws(EbpfError) {
        do throws(SystemCallFailure) {
            try systemCall(call, on: name, failsWith: .negatedErrno, body)
        } catch {
            guard error.errno != ignored else { return }
            throw .mapOperationFailed(map: name, operation: operation, reason: error.reason)
        }
    }

    /// Every CPU's value of a per-CPU entry.
    func lookupAllCPUs<Key: BitwiseCopyable, Value: BitwiseCopyable>(_ key: Key, as: Value.Type) -> [Value]? {
        var key = key
        let stride = perCPUStride
        var buffer = [UInt8](repeating: 0, count: stride * Self.possibleCPUs)
        guard bpf_map_lookup_elem(descriptor, &key, &buffer) == 0 else { return nil }
        return buffer.withUnsafeBytes { raw in
            (0..<Self.possibleCPUs).map { raw.loadUnaligned(fromByteOffset: $0 * stride, as: Value.self) }
        }
    }

    /// The keys present now.
    func keys<Key: BitwiseCopyable>(as: Key.Type) -> [Key] {
        var keys: [Key] = []
        let current = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<Key>.size, alignment: 8)
        let next = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<Key>.size, alignment: 8)
        defer {
            current.deallocate()
            next.deallocate()
        }
        var previous: UnsafeMutableRawPointer? = nil
        while bpf_map_get_next_key(descriptor, previous, next) == 0, keys.count < Int(AETHER_MAX_PORTS) {
            keys.append(next.loadUnaligned(as: Key.self))
            current.copyMemory(from: next, byteCount: MemoryLayout<Key>.size)
            previous = current
        }
        return keys
    }
}

/// A program attached through a bpf_link: closing the last descriptor (when this object goes)
/// detaches it, so an orchestrator that dies (even by SIGKILL) leaves nothing attached.
final class BPFLink: @unchecked Sendable {
    let program: String
    let target: String
    let descriptor: OwnedDescriptor
    /// Kernel ids, as `bpftool link` and `bpftool prog` show them.
    let id: UInt32
    let programID: UInt32

    init(
        program: String, programDescriptor: CInt, target: String, targetDescriptor: CInt, type: bpf_attach_type,
        flags: UInt32
    )
        throws(EbpfError)
    {
        let descriptor: OwnedDescriptor
        do throws(SystemCallFailure) {
            descriptor = try OwnedDescriptor("bpf_link_create", on: target, failsWith: .negatedErrno) {
                aether_bpf_link_create(programDescriptor, targetDescriptor, type, flags)
            }
        } catch {
            throw .attachFailed(program: program, target: target, reason: BPFObject.explain("bpf_link_create", error))
        }
        var info = bpf_link_info()
        var length = UInt32(MemoryLayout<bpf_link_info>.size)
        _ = bpf_obj_get_info_by_fd(descriptor.rawValue, &info, &length)
        self.program = program
        self.target = target
        self.descriptor = descriptor
        id = info.id
        programID = info.prog_id
    }
}
