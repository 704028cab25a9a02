import AetherCore
import AetherSystem
import CLibBPF

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A BPF ELF object opened and loaded into the kernel through libbpf: its programs verified,
/// its maps created. Closing it (deinit) releases programs and maps that no link or map
/// entry still holds.
final class BPFObject {
    let name: String
    private let object: OpaquePointer

    /// Verifier log kept per program (the kernel writes it when a load fails).
    private static let logSize = 1 << 20

    init(_ embedded: EmbeddedBPFObject) throws(EbpfError) {
        LibbpfMessages.install()
        LibbpfMessages.clear()
        name = embedded.name
        let opened: OpaquePointer
        do throws(SystemCallFailure) {
            opened = try systemCall("bpf_object__open_mem", on: embedded.name, failsWith: .null) {
                embedded.bytes.withUnsafeBytes { bytes in
                    aether_bpf_object_open_mem(bytes.baseAddress, bytes.count, embedded.name)
                }
            }
        } catch {
            throw .loadFailed(
                program: embedded.name, reason: Self.explain("libbpf cannot open the object", error), verifierLog: "")
        }
        var logs: [(program: String, buffer: UnsafeMutablePointer<CChar>)] = []
        defer { for log in logs { log.buffer.deallocate() } }
        var program = bpf_object__next_program(opened, nil)
        while let current = program {
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Self.logSize)
            buffer[0] = 0
            logs.append((String(cString: bpf_program__name(current)), buffer))
            _ = bpf_program__set_log_buf(current, buffer, Self.logSize)
            program = bpf_object__next_program(opened, current)
        }
        do throws(SystemCallFailure) {
            try systemCall("bpf_object__load", on: embedded.name, failsWith: .negatedErrno, retryOnInterrupt: false) {
                bpf_object__load(opened)
            }
        } catch {
            // Only the program the kernel refused has a log (libbpf retries it with logging on).
            let refused = logs.first { $0.buffer[0] != 0 }
            let log = refused.map { String(cString: $0.buffer) } ?? ""
            bpf_object__close(opened)
            throw .loadFailed(
                program: refused?.program ?? embedded.name, reason: Self.explain("the kernel refused it", error),
                verifierLog: log.trimmingCharacters(in: "\n"))
        }
        object = opened
    }

    deinit {
        bpf_object__close(object)
    }

    /// A loaded program's descriptor (owned by the object).
    func programDescriptor(_ program: String) throws(EbpfError) -> CInt {
        guard let pointer = bpf_object__find_program_by_name(object, program) else {
            throw .programNotFound(object: name, program: program)
        }
        return bpf_program__fd(pointer)
    }

    /// A created map (owned by the object).
    func map(_ map: String) throws(EbpfError) -> BPFMap {
        guard let pointer = bpf_object__find_map_by_name(object, map) else {
            throw .mapNotFound(name: map)
        }
        return BPFMap(
            name: map, descriptor: bpf_map__fd(pointer), valueSize: Int(bpf_map__value_size(pointer)),
            perCPU: bpf_map__type(pointer) == BPF_MAP_TYPE_PERCPU_HASH
                || bpf_map__type(pointer) == BPF_MAP_TYPE_PERCPU_ARRAY)
    }

    /// `what`: the failure's reason, a hint for missing privileges, and what libbpf printed.
    static func explain(_ what: String, _ failure: SystemCallFailure) -> String {
        var text = "\(what): \(failure.reason)"
        if failure.errno == EPERM || (failure.errno == EACCES && what.contains("open")) {
            text +=
                " (loading BPF needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON; `dataplane: sockets` runs without eBPF)"
        }
        let printed = LibbpfMessages.take()
        if !printed.isEmpty { text += "; libbpf: " + printed.split(separator: "\n").joined(separator: "; ") }
        return text
    }
}
