import Atomics

/// The reading side of one SPSC ring. Exactly one consumer per ring, used by one thread at a time.
///
/// Every record's CRC32 is checked before its payload is handed on. A mismatch skips the record
/// and reports `corruptedData` (the ring stays usable); a record that cannot even be delimited, or
/// a head word that cannot be the producer's, poisons the ring, after which every read reports
/// `poisoned`. Nothing the producer's process writes into the ring makes this trap or spin.
public final class RingConsumer: @unchecked Sendable {
    private let ring: RingMemory
    /// Our own position; only we write tail.
    private var tail: UInt64
    /// Last head we read; refreshed when the cached value says the ring is empty.
    private var knownHead: UInt64
    /// Set once the ring is poisoned: thrown by every later read.
    private var poison: SharedMemoryError?
    public var waitPolicy: WaitPolicy = .standard

    public var maximumPayload: Int { ring.maximumPayload }

    init(ring: RingMemory) {
        self.ring = ring
        tail = ring.tail.load(ordering: .acquiring)
        knownHead = ring.head.load(ordering: .acquiring)
        if ring.poisoned.load(ordering: .acquiring) != 0 {
            poison = .poisoned(offset: Int(tail % UInt64(ring.capacity)), length: 0, cause: .markedPoisoned)
        }
    }

    /// Hands the next payload to `body` without copying, if there is one now.
    ///
    /// The buffer is valid only inside `body`; the record is released when `body` returns.
    /// Head, the record's length and its bytes come from the producer's process and are checked
    /// before use (docs/shm-layout.md, "Consumer"); whatever they hold, this returns, skips the
    /// record or poisons the ring, in a bounded number of steps.
    /// - Returns: `body`'s result, or nil when the ring is empty.
    public func tryRead<Result>(_ body: (UnsafeRawBufferPointer) -> Result) throws(SharedMemoryError) -> Result? {
        try nextRecord { payload, stored in
            let computed = CRC32.checksum(payload)
            return computed == stored ? .taken(body(payload)) : .corrupted(computed)
        }
    }

    /// Copies the next payload out and checks its CRC32 in the same pass, if there is one now:
    /// `copy` gets the payload in the ring and returns its copy with the CRC32 of the bytes it
    /// stored (`CRC32.copy`). The copy is returned only when that checksum is the record's; being
    /// private, it cannot change after the check. One pass over the bytes instead of a check and
    /// then a copy (`tryRead`'s `body` copying), which is what a large payload costs.
    public func tryReadCopy<Copy>(
        _ copy: (UnsafeRawBufferPointer) -> (Copy, checksum: UInt32)
    )
        throws(SharedMemoryError) -> Copy?
    {
        try nextRecord { payload, stored in
            let (made, computed) = copy(payload)
            return computed == stored ? .taken(made) : .corrupted(computed)
        }
    }

    /// What a reader made of a record: its result, or the checksum it computed, which is not the
    /// record's.
    private enum Taken<Result> {
        case taken(Result)
        case corrupted(UInt32)
    }

    /// Delimits the next record, if there is one now, hands its payload in the ring and its stored
    /// checksum to `take`, and releases it. A record `take` found corrupted is skipped:
    /// `corruptedData`.
    private func nextRecord<Result>(
        _ take: (UnsafeRawBufferPointer, UInt32) -> Taken<Result>
    ) throws(SharedMemoryError) -> Result? {
        if let poison { throw poison }
        let capacity = UInt64(ring.capacity)
        // At most three rounds: a wrap marker moves tail to offset 0, where another marker poisons.
        while true {
            if tail == knownHead {
                knownHead = ring.head.load(ordering: .acquiring)
                if tail == knownHead { return nil }
            }
            let offset = tail % capacity
            guard ring.positionsHold(head: knownHead, tail: tail) else {
                try poison(offset: offset, length: 0, cause: .impossiblePositions(head: knownHead, tail: tail))
            }
            let published = knownHead - tail
            let length = ring.loadU32(at: Int(offset))
            if length == RingLayout.wrapMarker {
                let padding = capacity - offset
                guard padding < ring.maximumRecord, padding <= published else {
                    try poison(offset: offset, length: length)
                }
                advance(to: tail + padding)
                continue
            }
            let record = UInt64(RingLayout.recordSize(payload: Int(length)))
            guard Int(length) <= maximumPayload, record <= capacity - offset, record <= published else {
                try poison(offset: offset, length: length)
            }
            let start = Int(offset) + RingLayout.recordHeaderSize
            let payload = UnsafeRawBufferPointer(start: ring.data + start, count: Int(length))
            let stored = ring.loadU32(at: Int(offset) + 4)
            let taken = take(payload, stored)
            advance(to: tail + record)
            switch taken {
            case .taken(let result):
                return result
            case .corrupted(let computed):
                throw .corruptedData(offset: Int(offset), storedChecksum: stored, computedChecksum: computed)
            }
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
            // A head that keeps changing without publishing anything must not keep us past it.
            if deadline.hasPassed { throw .timedOut(waited: deadline.timeout ?? .zero) }
        }
    }

    /// Copies the next payload out, waiting up to `timeout` (nil = forever).
    public func read(timeout: Duration? = nil) throws(SharedMemoryError) -> [UInt8] {
        try read(timeout: timeout) { Array($0) }
    }

    /// For a consumer whose producer rings an eventfd (`EventBell`), waited for in epoll rather
    /// than on the futex: announces that it is going to sleep, so the producer rings for the
    /// next record. False when a record arrived meanwhile (or the ring is poisoned, which the
    /// next read reports): the caller reads on, and announces again once the ring is empty.
    ///
    /// Store, full fence, load, pairing with the producer's publish-fence-load (`Doorbell.ring`):
    /// a record published after this returned true is always rung.
    public func announceSleep() -> Bool {
        let bell = ring.dataBell
        bell.sleeping.store(1, ordering: .relaxed)
        atomicFence()
        if poison == nil, ring.head.load(ordering: .acquiring) == tail { return true }
        bell.sleeping.store(0, ordering: .relaxed)
        return false
    }

    /// The bell rang: the producer need not ring it while this reads the ring.
    public func wokeUp() {
        ring.dataBell.sleeping.store(0, ordering: .relaxed)
    }

    private func advance(to position: UInt64) {
        tail = position
        ring.tail.store(position, ordering: .releasing)
        ring.spaceBell.ring()
    }

    private func poison(
        offset: UInt64, length: UInt32, cause: SharedMemoryError.PoisonCause = .undelimitableRecord
    ) throws(SharedMemoryError) -> Never {
        let error = SharedMemoryError.poisoned(offset: Int(offset), length: length, cause: cause)
        poison = error
        // A producer asleep for space must learn that none will come.
        ring.markPoisoned()
        throw error
    }

    private func waitForData(_ deadline: WaitDeadline) throws(SharedMemoryError) {
        try ring.dataBell.wait(until: ring.head, movesFrom: tail, policy: waitPolicy, deadline: deadline)
    }
}
