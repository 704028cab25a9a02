import Atomics

/// The writing side of one SPSC ring. Exactly one producer per ring, used by one thread at a time.
///
/// A record becomes visible only through the release store of `head` after its bytes, length and
/// checksum are written, so a producer killed mid-write leaves nothing the consumer can read.
public final class RingProducer: @unchecked Sendable {
    private let ring: RingMemory
    /// Our own position; only we write head, so the cached copy is authoritative.
    private var head: UInt64
    /// Last tail we read; refreshed only when the cached value says the ring is full.
    private var knownTail: UInt64
    /// Set once the ring is poisoned by a tail word no consumer can have written: thrown by every
    /// later write.
    private var poison: SharedMemoryError?
    public var waitPolicy: WaitPolicy = .standard

    /// The largest payload this ring accepts.
    public var maximumPayload: Int { ring.maximumPayload }

    init(ring: RingMemory) {
        self.ring = ring
        head = ring.head.load(ordering: .acquiring)
        knownTail = ring.tail.load(ordering: .acquiring)
    }

    /// Writes one record of `length` bytes filled in place by `fill`, if there is room now.
    ///
    /// The checksum is computed over the ring bytes after `fill` returns (a second pass over the
    /// payload); `tryWrite(_:)` of a ready buffer copies and checksums in one.
    /// - Returns: false when the ring is full (nothing written).
    /// - Throws: `messageTooLarge` for a payload the ring can never hold, `poisoned` when the
    ///   consumer has given up on the ring or its tail word cannot be a consumer's.
    public func tryWrite(
        length: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(SharedMemoryError)
        -> Bool
    {
        try tryWrite(
            length: length,
            storing: { payload in
                fill(payload)
                return CRC32.checksum(UnsafeRawBufferPointer(payload))
            })
    }

    /// Copies `payload` into the ring if there is room now; false when full.
    public func tryWrite(_ payload: UnsafeRawBufferPointer) throws(SharedMemoryError) -> Bool {
        try tryWrite(length: payload.count, storing: { CRC32.copy(payload, to: $0.baseAddress!) })
    }

    /// Writes one record, waiting for space (poll, then futex sleep) up to `timeout` (nil = forever).
    public func write(
        length: Int, timeout: Duration? = nil, _ fill: (UnsafeMutableRawBufferPointer) -> Void
    )
        throws(SharedMemoryError)
    {
        try write(
            length: length, timeout: timeout,
            storing: { payload in
                fill(payload)
                return CRC32.checksum(UnsafeRawBufferPointer(payload))
            })
    }

    /// Copies `payload` into the ring, waiting for space up to `timeout` (nil = forever).
    public func write(_ payload: UnsafeRawBufferPointer, timeout: Duration? = nil) throws(SharedMemoryError) {
        try write(length: payload.count, timeout: timeout, storing: { CRC32.copy(payload, to: $0.baseAddress!) })
    }

    public func write(_ payload: [UInt8], timeout: Duration? = nil) throws(SharedMemoryError) {
        let result: Result<Void, SharedMemoryError> = payload.withUnsafeBytes { bytes in
            Result { () throws(SharedMemoryError) in try write(bytes, timeout: timeout) }
        }
        try result.get()
    }

    /// The write itself: `store` puts the payload into the ring (the buffer given) and returns
    /// its CRC-32; length and checksum follow, then the release store of head publishes it.
    /// Public for writers that checksum as they copy (`CRC32.copy(_:to:continuing:)`); the
    /// returned value must be the CRC of exactly the bytes stored, or the consumer skips the
    /// record as corrupted.
    ///
    /// The position the next record starts at: a record written now is consumed once the
    /// consumer's tail reaches the position after it.
    public var position: UInt64 { head }

    /// How far the consumer has read (its tail word), or nil if that word is not believable.
    /// For the orchestrator after a handler ended: which of the records it wrote were taken.
    public func consumedPosition() -> UInt64? {
        let tail = ring.tail.load(ordering: .acquiring)
        return ring.positionsHold(head: head, tail: tail) ? tail : nil
    }

    /// Tail and the poisoned word come from the consumer's process: a tail behind head by more
    /// than the capacity, ahead of it or misaligned poisons the ring (`poisoned`, and the ring's
    /// poisoned word is set) instead of being computed with.
    ///
    /// `ringing: false` publishes the record without waking the consumer: the caller calls
    /// `ringConsumer()` itself afterwards (outside a lock it holds while writing, so that the
    /// wake-up's system call does not keep other writers waiting for the lock).
    @inline(__always)
    public func tryWrite(
        length: Int, ringing: Bool = true, storing store: (UnsafeMutableRawBufferPointer) -> UInt32
    ) throws(SharedMemoryError) -> Bool {
        if let poison { throw poison }
        precondition(length >= 0, "a negative payload length")
        guard length <= maximumPayload else { throw .messageTooLarge(size: length, maximum: maximumPayload) }
        let capacity = UInt64(ring.capacity)
        let record = UInt64(RingLayout.recordSize(payload: length))
        let offset = head % capacity
        let contiguous = capacity - offset
        let needed = record <= contiguous ? record : contiguous + record
        if try free() < needed {
            knownTail = ring.tail.load(ordering: .acquiring)
            if try free() < needed {
                if ring.poisoned.load(ordering: .relaxed) != 0 {
                    throw .poisoned(offset: Int(knownTail % capacity), length: 0, cause: .markedPoisoned)
                }
                return false
            }
        }
        var position = head
        if record > contiguous {
            ring.storeU32(RingLayout.wrapMarker, at: Int(offset))
            position += contiguous
        }
        let start = Int(position % capacity)
        let payload = UnsafeMutableRawBufferPointer(
            start: ring.data + start + RingLayout.recordHeaderSize, count: length)
        let checksum = store(payload)
        ring.storeU32(UInt32(length), at: start)
        ring.storeU32(checksum, at: start + 4)
        head = position + record
        ring.head.store(head, ordering: .releasing)
        if ringing { ring.dataBell.ring() }
        return true
    }

    /// Wakes the consumer if it announced that it sleeps, after `tryWrite(length:ringing: false,
    /// storing:)`. Safe from any thread: it reads only the ring's shared words.
    public func ringConsumer() {
        ring.dataBell.ring()
    }

    /// Bytes free after head by the last tail read; poisons the ring if that tail cannot be
    /// (then also `head + free` cannot overflow: `positionsHold` keeps head below 2^64 - 2 capacities).
    @inline(__always)
    private func free() throws(SharedMemoryError) -> UInt64 {
        guard ring.positionsHold(head: head, tail: knownTail) else {
            let error = SharedMemoryError.poisoned(
                offset: Int(head % UInt64(ring.capacity)), length: 0,
                cause: .impossiblePositions(head: head, tail: knownTail))
            poison = error
            ring.markPoisoned()
            throw error
        }
        return UInt64(ring.capacity) - (head - knownTail)
    }

    @inline(__always)
    private func write(
        length: Int, timeout: Duration?, storing store: (UnsafeMutableRawBufferPointer) -> UInt32
    ) throws(SharedMemoryError) {
        if try tryWrite(length: length, storing: store) { return }
        let deadline = WaitDeadline(timeout)
        while true {
            try waitForSpace(deadline)
            if try tryWrite(length: length, storing: store) { return }
            // A tail that keeps moving without freeing enough must not keep us past it.
            if deadline.hasPassed { throw .timedOut(waited: deadline.timeout ?? .zero) }
        }
    }

    /// Returns once the consumer has moved tail (or may have); throws on timeout or poison.
    private func waitForSpace(_ deadline: WaitDeadline) throws(SharedMemoryError) {
        let seen = knownTail
        try ring.spaceBell.wait(until: ring.tail, movesFrom: seen, policy: waitPolicy, deadline: deadline) {
            () throws(SharedMemoryError) in
            if ring.poisoned.load(ordering: .relaxed) != 0 {
                throw .poisoned(offset: Int(seen % UInt64(ring.capacity)), length: 0, cause: .markedPoisoned)
            }
        }
    }
}
