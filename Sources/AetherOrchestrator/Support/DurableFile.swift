import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Replacing a file so that a crash at any moment leaves the old contents or the new, never
/// half of them: write a temporary file beside it, fsync it, rename it over the file, fsync the
/// folder (the rename is on disk only once the folder's entry is).
enum DurableFile {
    /// Writes `bytes` to `path` (mode `mode`) through `temporary`, a path in the same folder.
    static func replace(
        _ path: String, with bytes: [UInt8], temporary: String, mode: mode_t = 0o600
    )
        throws(SystemCallFailure)
    {
        do {
            let file = try OwnedDescriptor.open(
                temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode: UInt32(mode))
            var offset = 0
            while offset < bytes.count {
                offset += try systemCall("write", on: temporary, failsWith: .minusOne) {
                    bytes.withUnsafeBytes { write(file.rawValue, $0.baseAddress! + offset, $0.count - offset) }
                }
            }
            try systemCall("fsync", on: temporary, failsWith: .minusOne) { fsync(file.rawValue) }
            file.close()
            try systemCall("rename", on: "\(temporary) -> \(path)", failsWith: .minusOne) { rename(temporary, path) }
        } catch {
            unlink(temporary)
            throw error
        }
        try syncFolder(of: path)
    }

    /// fsyncs the folder holding `path`: a rename or a new entry in it is durable after this.
    static func syncFolder(of path: String) throws(SystemCallFailure) {
        let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let directory = try OwnedDescriptor.open(folder.isEmpty ? "/" : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        try systemCall("fsync", on: folder, failsWith: .minusOne) { fsync(directory.rawValue) }
    }
}
