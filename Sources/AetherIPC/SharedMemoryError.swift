public import AetherSystem

/// Failures of the shared-memory regions and rings that carry payloads between processes.
public enum SharedMemoryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// shm_open, ftruncate, mmap, futex or another call on the region failed.
    case systemCall(SystemCallFailure)
    /// The region was written by a different layout (magic, version or geometry differ).
    case layoutMismatch(region: String, field: String, expected: String, found: String)
    /// A payload larger than the ring can ever hold; nothing was written.
    case messageTooLarge(size: Int, maximum: Int)
    /// A record's checksum does not match its payload; the record was skipped, the ring is usable.
    case corruptedData(offset: Int, storedChecksum: UInt32, computedChecksum: UInt32)
    /// A record cannot be delimited (impossible length); the ring was marked poisoned and is not read again.
    case poisoned(offset: Int, length: UInt32)
    /// Waiting for data or space took longer than the caller allowed.
    case timedOut(waited: Duration)

    public var description: String {
        switch self {
        case .systemCall(let failure):
            failure.description
        case .layoutMismatch(let region, let field, let expected, let found):
            "shared-memory region \(region) has \(field) \(found), expected \(expected)"
        case .messageTooLarge(let size, let maximum):
            "message of \(size) bytes is larger than the ring's maximum payload of \(maximum) bytes"
        case .corruptedData(let offset, let stored, let computed):
            "corrupted message at ring offset \(offset): stored CRC32 \(hex(stored)), computed \(hex(computed))"
        case .poisoned(let offset, let length):
            "ring poisoned: record at offset \(offset) has impossible length \(length)"
        case .timedOut(let waited):
            "no message or space in the ring after waiting \(waited)"
        }
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}
