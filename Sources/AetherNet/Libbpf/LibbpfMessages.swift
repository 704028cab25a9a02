import AetherCore
import CLibBPF
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// libbpf reports details (which map failed to create, why an object is malformed) only
/// through its print callback. We keep its recent warnings to put them into `EbpfError`s
/// instead of letting libbpf write to our stderr.
enum LibbpfMessages {
    private static let recent = Mutex<[String]>([])
    private static let installed = Mutex(false)

    static func install() {
        let first = installed.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        _ = libbpf_set_print { level, format, arguments in
            guard level != LIBBPF_DEBUG, let format, let arguments else { return 0 }
            var buffer = [CChar](repeating: 0, count: 1024)
            let written = vsnprintf(&buffer, buffer.count, format, arguments)
            var line = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.trimmingCharacters(in: "\n")
            if line.hasPrefix("libbpf: ") { line.removeFirst("libbpf: ".count) }
            LibbpfMessages.recent.withLock { lines in
                lines.append(line)
                if lines.count > 20 { lines.removeFirst(lines.count - 20) }
            }
            return written
        }
    }

    /// Forgets what was printed so far (call before an operation whose failure is explained).
    static func clear() { recent.withLock { $0.removeAll() } }

    /// What libbpf printed since `clear()`, one message per line.
    static func take() -> String {
        recent.withLock { lines in
            defer { lines.removeAll() }
            return lines.joined(separator: "\n")
        }
    }
}
