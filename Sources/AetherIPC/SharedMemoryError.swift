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
    /// The ring cannot be used any more: a record cannot be delimited (impossible length), the
    /// other side's position word makes no sense, or the ring was marked poisoned. The ring's
    /// poisoned word is set and this side does not touch its data again. `offset` is the data
    /// offset where this side stood, `length` the record length found there (0 if none was read).
    case poisoned(offset: Int, length: UInt32, cause: PoisonCause = .undelimitableRecord)
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
        case .poisoned(let offset, let length, .undelimitableRecord):
            "ring poisoned: record at offset \(offset) has impossible length \(length)"
        case .poisoned(let offset, _, .impossiblePositions(let head, let tail)):
            "ring poisoned at offset \(offset): head \(head) and tail \(tail) cannot both hold"
                + " (tail ahead of head, more than the capacity apart, not 8-byte aligned, or near overflow)"
        case .poisoned(let offset, _, .markedPoisoned):
            "ring poisoned at offset \(offset): its poisoned word is set (the other side gave up on it)"
        case .timedOut(let waited):
            "no message or space in the ring after waiting \(waited)"
        }
    }
}

extension SharedMemoryError {
    /// Why a ring was poisoned. Every word and byte of a ring is writable by both processes, so
    /// each of these is what a broken or hostile peer can cause; none of them traps or stalls.
    public enum PoisonCause: Sendable, Equatable {
        /// The record at the offset cannot be delimited: a length over the largest payload, past
        /// the end of the data area or beyond head, or a wrap marker no producer writes there.
        case undelimitableRecord
        /// The other side's position word cannot be: head behind tail or more than the capacity
        /// ahead of it, a position that is not a multiple of 8, or one so large it would overflow.
        case impossiblePositions(head: UInt64, tail: UInt64)
        /// The poisoned word was already set when this side looked (by the other side, or before).
        case markedPoisoned
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}
