import Atomics

/// The reading side of one SPSC ring. Exactly one consumer per ring, used by one thread at a time.
///
/// Every record's CRC32 is checked before its payload is handed on. A mismatch skips the record
/// and reports `corruptedData` (the ring stays usable); a record that cannot even be delimited
/// poisons the ring, after which every read reports `poisoned`. Nothing here traps on bad bytes.
public final class RingConsumer: @unchecked Sendable {
    private let ring: RingMemory
    /// Our own position; only we write tail.
    private var tail: UInt64
    /// Last head we read; refreshed when the cached value says the ring is empty.
    private var knownHead: UInt64
    private var poisonedAt: (offset: Int, length: UInt32)?
    public var waitPolicy: WaitPolicy = .standard

    public var maximumPayload: Int { ring.maximumPayload }

    init(ring: RingMemory) {
        self.ring = ring
        tail = ring.tail.load(ordering: .acquiring)
        knownHead = ring.head.load(ordering: .acquiring)
        if ring.poisoned.load(ordering: .acquiring) != 0 {
            poisonedAt = (Int(tail % UInt64(ring.capacity)), 0)
        }
    }

    /// Hands the next payload to `body` without copying, if there is one now.
    ///
    /// The buffer is valid only inside `body`; the record is released when `body` returns.
    /// - Returns: `body`'s result, or nil when the ring is empty.
    public func tryRead<Result>(_ body: (UnsafeRawBufferPointer) -> Result) throws(SharedMemoryError) -> Result? {
        if let poisonedAt { throw .poisoned(offset: poisonedAt.offset, length: poisonedAt.length) }
        let capacity = UInt64(ring.capacity)
        while true {
            if tail == knownHead {
                knownHead = ring.head.load(ordering: .acquiring)
                if tail == knownHead { return nil }
            }
            let offset = tail % capacity
            let length = ring.loadU32(at: Int(offset))
            if length == RingLayout.wrapMarker {
                let padding = capacity - offset
                guard tail + padding <= knownHead else { try poison(offset: Int(offset), length: length) }
                advance(to: tail + padding)
                continue
            }
            let record = UInt64(RingLayout.recordSize(payload: Int(length)))
            guard Int(length) <= maximumPayload, record <= capacity - offset, tail + record <= knownHead else {
                try poison(offset: Int(offset), length: length)
            }
            let start = Int(offset) + RingLayout.recordHeaderSize
            let payload = UnsafeRawBufferPointer(start: ring.data + start, count: Int(length))
            let stored = ring.loadU32(at: Int(offset) + 4)
            let computed = CRC32.checksum(payload)
            guard stored == computed else {
                advance(to: tail + record)
                throw .corruptedData(offset: Int(offset), storedChecksum: stored, computedChecksum: computed)
            }
            let result = body(payload)
            advance(to: tail + record)
            return result
        }
    }

    /// Copies the next payload out, if there is one now.
    public func tryRead() throws(SharedMemoryError) -> [UInt8]? {
        try tryRead { Array($0) }
    }

    /// Hands the next payload to `body`, waiting for one (poll, then futex sleep) up to `timeout`.
    public func read<Result>(
        timeout: Duration? = nil, _ body: (UnsafeRawBufferPointer) -> Result
    )
        throws(SharedMemoryError) -> Result
    {
        if let result = try tryRead(body) { return result }
        let deadline = WaitDeadline(timeout)
        while true {
            try waitForData(deadline)
            if let result = try tryRead(body) { return result }
        }
    }

    /// Copies the next payload out, waiting up to `timeout` (nil = forever).
    public func read(timeout: Duration? = nil) throws(SharedMemoryError) -> [UInt8] {
        try read(timeout: timeout) { Array($0) }
    }

    private func advance(to position: UInt64) {
        tail = position
        ring.tail.store(position, ordering: .releasing)
        ring.spaceBell.ring()
    }

    private func poison(offset: Int, length: UInt32) throws(SharedMemoryError) -> Never {
        poisonedAt = (offset, length)
        ring.poisoned.store(1, ordering: .releasing)
        // A producer asleep for space must learn that none will come.
        ring.spaceBell.ring()
        throw .poisoned(offset: offset, length: length)
    }

    private func waitForData(_ deadline: WaitDeadline) throws(SharedMemoryError) {
        try ring.dataBell.wait(until: ring.head, movesFrom: tail, policy: waitPolicy, deadline: deadline)
    }
}
