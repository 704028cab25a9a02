import Foundation
import Synchronization
import Testing

@testable import AetherIPC

/// A handler maps its region read-write, so every header word and record byte of both rings is
/// its to write. Whatever it writes, the orchestrator's producer (request ring) and consumer
/// (response ring) must throw a typed error, poison the ring or time out: never trap (which would
/// end this test process), spin or sleep past their deadline.
@Suite struct HostileRingTests {
    static let capacity = UInt64(65_536)

    /// Writes a header word of ring `index` as the other process would.
    static func store<T: FixedWidthInteger>(_ value: T, _ test: TestRegion, ring index: Int, at offset: Int) {
        test.ringBase(index).storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }

    static func load<T: FixedWidthInteger>(_: T.Type, _ test: TestRegion, ring index: Int, at offset: Int) -> T {
        T(littleEndian: test.ringBase(index).load(fromByteOffset: offset, as: T.self))
    }

    /// Writes a record header (length, checksum) at data offset `offset` of ring `index`.
    static func storeRecord(length: UInt32, checksum: UInt32 = 0, _ test: TestRegion, ring index: Int, at offset: Int) {
        store(length, test, ring: index, at: RingLayout.headerSize + offset)
        store(checksum, test, ring: index, at: RingLayout.headerSize + offset + 4)
    }

    static func isPoisoned(_ test: TestRegion, ring index: Int) -> Bool {
        load(UInt32.self, test, ring: index, at: RingLayout.poisonedOffset) != 0
    }

    // MARK: The producer of the request ring (tail and poisoned are the handler's words)

    /// The crash this suite began with: a ring filled by the producer, then a tail word ahead of
    /// head made `capacity - (head - tail)` trap on UInt64 overflow.
    @Test(arguments: [8, 1, 1 << 20, 1 << 62] as [UInt64])
    func tailAheadOfHeadOnAFullRingPoisonsInsteadOfTrapping(_ ahead: UInt64) throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let message = payload(1000, seed: 1)
        while try producer.tryWrite(message.withUnsafeBytes { $0 }) {}
        let head = Self.load(UInt64.self, test, ring: 0, at: RingLayout.headOffset)
        Self.store(head &+ ahead, test, ring: 0, at: RingLayout.tailOffset)
        let expected = SharedMemoryError.poisoned(
            offset: Int(head % Self.capacity), length: 0,
            cause: .impossiblePositions(head: head, tail: head &+ ahead))
        #expect(throws: expected) { try producer.tryWrite(message.withUnsafeBytes { $0 }) }
        #expect(Self.isPoisoned(test, ring: 0))
        // Poisoned for good: a sane tail afterwards does not make it write again.
        Self.store(head, test, ring: 0, at: RingLayout.tailOffset)
        #expect(throws: expected) { try producer.tryWrite([UInt8]().withUnsafeBytes { $0 }) }
        #expect(Self.load(UInt64.self, test, ring: 0, at: RingLayout.headOffset) == head)
    }

    /// Head and tail words present before the producer attaches, each impossible in its own way.
    static let impossibleForTheProducer: [(head: UInt64, tail: UInt64)] = [
        (0, 1),  // tail = head + 1
        (0, 8),  // tail ahead of head
        (0, .max),  // tail = UInt64.max
        (capacity * 3, 0),  // head = tail + capacity * 3
        (capacity + 8, 0),  // one record more than the ring holds
        (5, 5),  // misaligned
        (.max & ~7, .max & ~7),  // so large that writing would overflow
    ]

    @Test(arguments: impossibleForTheProducer)
    func impossiblePositionsPoisonTheProducer(head: UInt64, tail: UInt64) throws {
        let test = try TestRegion()
        Self.store(head, test, ring: 0, at: RingLayout.headOffset)
        Self.store(tail, test, ring: 0, at: RingLayout.tailOffset)
        let producer = test.region.producer(ring: 0)
        let error = #expect(throws: SharedMemoryError.self) {
            try producer.tryWrite(payload(100, seed: 0).withUnsafeBytes { $0 })
        }
        #expect(
            error
                == .poisoned(
                    offset: Int(head % Self.capacity), length: 0,
                    cause: .impossiblePositions(head: head, tail: tail)))
        #expect(error?.description.contains("head \(head) and tail \(tail) cannot both hold") == true)
        #expect(Self.isPoisoned(test, ring: 0))
        #expect(Self.load(UInt64.self, test, ring: 0, at: RingLayout.headOffset) == head)
    }

    /// A producer asleep for space, woken by a bogus tail, is poisoned instead of computing with it.
    @Test func sleepingProducerWokenWithABogusTailIsPoisoned() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        producer.waitPolicy = .sleepAtOnce
        let message = payload(4000, seed: 2)
        while try producer.tryWrite(message.withUnsafeBytes { $0 }) {}
        let head = Self.load(UInt64.self, test, ring: 0, at: RingLayout.headOffset)
        // The handler's side: the tail word and the doorbell, as another process would touch them.
        nonisolated(unsafe) let tailWord = test.ringBase(0) + RingLayout.tailOffset
        nonisolated(unsafe) let ring = RingMemory(region: test.region, base: test.ringBase(0), capacity: 65_536)
        let handler = Thread {
            usleep(20_000)
            tailWord.storeBytes(of: UInt64.max, as: UInt64.self)
            ring.spaceBell.ring()
        }
        handler.start()
        let error = #expect(throws: SharedMemoryError.self) { try producer.write(message, timeout: .seconds(10)) }
        #expect(
            error
                == .poisoned(
                    offset: Int(head % Self.capacity), length: 0, cause: .impossiblePositions(head: head, tail: .max)))
        while !handler.isFinished { usleep(1000) }
    }

    /// A tail that keeps moving between two possible values without freeing enough room wakes the
    /// producer again and again; it must still give up at its deadline.
    @Test func producerGivesUpAtItsDeadlineWhileTailFlickers() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let message = payload(1000, seed: 3)
        while try producer.tryWrite(message.withUnsafeBytes { $0 }) {}
        let tail = Self.load(UInt64.self, test, ring: 0, at: RingLayout.tailOffset)
        let stop = Atomic<Bool>(false)
        nonisolated(unsafe) let tailWord = test.ringBase(0) + RingLayout.tailOffset
        let flicker = Thread {
            let started = ContinuousClock.now
            var step: UInt64 = 0
            while !stop.load(ordering: .relaxed), ContinuousClock.now - started < .seconds(10) {
                step &+= 1
                tailWord.storeBytes(of: (tail &+ (step & 1) * 8).littleEndian, as: UInt64.self)
            }
        }
        flicker.start()
        defer { stop.store(true, ordering: .relaxed) }
        let started = ContinuousClock.now
        #expect(throws: SharedMemoryError.timedOut(waited: .milliseconds(30))) {
            try producer.write(message, timeout: .milliseconds(30))
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        stop.store(true, ordering: .relaxed)
        while !flicker.isFinished { usleep(1000) }
    }

    /// The poisoned word set by the handler: a full ring reports it instead of waiting.
    @Test func poisonedWordSetByTheHandlerIsReportedOnAFullRing() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let message = payload(1000, seed: 4)
        while try producer.tryWrite(message.withUnsafeBytes { $0 }) {}
        Self.store(UInt32(0xDEAD_BEEF), test, ring: 0, at: RingLayout.poisonedOffset)
        let error = #expect(throws: SharedMemoryError.self) { try producer.write(message, timeout: .seconds(5)) }
        #expect(error == .poisoned(offset: 0, length: 0, cause: .markedPoisoned))
    }

    // MARK: The consumer of the response ring (head and every record byte are the handler's)

    static let impossibleForTheConsumer: [(head: UInt64, tail: UInt64)] = [
        (capacity * 3, 0),  // head = tail + capacity * 3
        (capacity + 8, 0),  // more published than the ring holds
        (8, 64),  // head behind tail
        (.max, 0),  // head = UInt64.max
        (12, 0),  // head misaligned
        (.max & ~7, (.max & ~7) - 8),  // so large that reading on would overflow
    ]

    @Test(arguments: impossibleForTheConsumer)
    func impossiblePositionsPoisonTheConsumer(head: UInt64, tail: UInt64) throws {
        let test = try TestRegion()
        Self.store(tail, test, ring: 1, at: RingLayout.tailOffset)
        Self.store(head, test, ring: 1, at: RingLayout.headOffset)
        let consumer = test.region.consumer(ring: 1)
        let expected = SharedMemoryError.poisoned(
            offset: Int(tail % Self.capacity), length: 0, cause: .impossiblePositions(head: head, tail: tail))
        #expect(throws: expected) { try consumer.tryRead() }
        #expect(Self.isPoisoned(test, ring: 1))
        #expect(throws: expected) { try consumer.tryRead() }
    }

    /// Found by the ring fuzzer: a tail near 2^64 made `tail + record` trap.
    @Test func tailNearTheTopOfUInt64PoisonsInsteadOfTrapping() throws {
        let test = try TestRegion()
        let tail = UInt64.max - 7
        Self.store(tail, test, ring: 1, at: RingLayout.tailOffset)
        Self.store(tail &+ 8, test, ring: 1, at: RingLayout.headOffset)
        let consumer = test.region.consumer(ring: 1)
        let error = #expect(throws: SharedMemoryError.self) { try consumer.tryRead() }
        guard case .poisoned(_, _, .impossiblePositions) = error else {
            Issue.record("expected a poisoned ring, got \(String(describing: error))")
            return
        }
    }

    /// Found by the ring fuzzer: a far head and a wrap marker at offset 0 made one tryRead skip
    /// a whole ring per round, 2^48 rounds long (a reader thread stuck for days).
    @Test func farHeadAndAWrapMarkerAtOffsetZeroDoNotSpin() throws {
        let test = try TestRegion()
        Self.store(UInt64(1) << 60, test, ring: 1, at: RingLayout.headOffset)
        Self.storeRecord(length: RingLayout.wrapMarker, test, ring: 1, at: 0)
        Self.store(UInt32(1), test, ring: 1, at: RingLayout.producerSleepingOffset)
        let consumer = test.region.consumer(ring: 1)
        let error = #expect(throws: SharedMemoryError.self) { try consumer.tryRead() }
        #expect(error == .poisoned(offset: 0, length: 0, cause: .impossiblePositions(head: 1 << 60, tail: 0)))
    }

    /// Wrap markers where no producer writes one: at offset 0, and wherever the largest record
    /// (capacity / 2 bytes) would still have fitted.
    @Test(arguments: [UInt64(0), 8, capacity / 2])
    func wrapMarkerWhereARecordFitsPoisonsTheRing(_ offset: UInt64) throws {
        let test = try TestRegion()
        // Enough published that the marker's padding (capacity - offset) lies before head.
        Self.store(offset, test, ring: 1, at: RingLayout.tailOffset)
        Self.store(Self.capacity, test, ring: 1, at: RingLayout.headOffset)
        Self.storeRecord(length: RingLayout.wrapMarker, test, ring: 1, at: Int(offset))
        #expect(throws: SharedMemoryError.poisoned(offset: Int(offset), length: RingLayout.wrapMarker)) {
            try test.region.consumer(ring: 1).tryRead()
        }
        #expect(Self.isPoisoned(test, ring: 1))
    }

    /// A marker where the producer does write them still works.
    @Test func wrapMarkerNearTheEndIsFollowed() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 1)
        let consumer = test.region.consumer(ring: 1)
        try RingTests.advance(producer, consumer, to: Int(Self.capacity) - 64)
        let message = payload(200, seed: 5)
        #expect(try producer.tryWrite(message.withUnsafeBytes { $0 }))
        #expect(try consumer.tryRead() == message)
    }

    @Test(arguments: [UInt32(0xFFFF_FFFE), 0x8000_0000, UInt32(RingTests.maximumPayload + 1)])
    func impossibleRecordLengthsPoisonTheRing(_ length: UInt32) throws {
        let test = try TestRegion()
        Self.store(Self.capacity / 2, test, ring: 1, at: RingLayout.headOffset)
        Self.storeRecord(length: length, test, ring: 1, at: 0)
        #expect(throws: SharedMemoryError.poisoned(offset: 0, length: length)) {
            try test.region.consumer(ring: 1).tryRead()
        }
        #expect(Self.isPoisoned(test, ring: 1))
    }

    /// A record that fits the ring but runs past the end of the data area (a misplaced record
    /// that would need a wrap marker).
    @Test func recordRunningPastTheEndOfTheDataAreaPoisonsTheRing() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 1)
        let consumer = test.region.consumer(ring: 1)
        let offset = Int(Self.capacity) - 64
        try RingTests.advance(producer, consumer, to: offset)
        Self.store(UInt64(offset) + 1024, test, ring: 1, at: RingLayout.headOffset)
        Self.storeRecord(length: 200, test, ring: 1, at: offset)
        #expect(throws: SharedMemoryError.poisoned(offset: offset, length: 200)) { try consumer.tryRead() }
    }

    /// Garbage in the futex sequence words and sleeping flags costs wake-ups, nothing else:
    /// messages still pass, and waits on an empty or full ring end at their deadline.
    @Test func garbageFutexWordsNeitherBreakNorStallTheRing() throws {
        let test = try TestRegion()
        for offset in [
            RingLayout.dataSequenceOffset, RingLayout.consumerSleepingOffset, RingLayout.spaceSequenceOffset,
            RingLayout.producerSleepingOffset,
        ] {
            Self.store(UInt32(0xFFFF_FFFF), test, ring: 0, at: offset)
        }
        let producer = test.region.producer(ring: 0)
        let consumer = test.region.consumer(ring: 0)
        producer.waitPolicy = .sleepAtOnce
        consumer.waitPolicy = .sleepAtOnce
        #expect(throws: SharedMemoryError.timedOut(waited: .milliseconds(20))) {
            try consumer.read(timeout: .milliseconds(20))
        }
        let message = payload(3000, seed: 6)
        try producer.write(message, timeout: .seconds(5))
        #expect(try consumer.read(timeout: .seconds(5)) == message)
        while try producer.tryWrite(message.withUnsafeBytes { $0 }) {}
        #expect(throws: SharedMemoryError.timedOut(waited: .milliseconds(20))) {
            try producer.write(message, timeout: .milliseconds(20))
        }
    }

    /// A polling policy longer than the caller's timeout stops polling at the deadline.
    @Test func pollingStopsAtTheDeadline() throws {
        let test = try TestRegion()
        let consumer = test.region.consumer(ring: 1)
        consumer.waitPolicy = .pollOnly
        let started = ContinuousClock.now
        #expect(throws: SharedMemoryError.timedOut(waited: .milliseconds(20))) {
            try consumer.read(timeout: .milliseconds(20))
        }
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    /// A region header a handler (or anyone) left in /dev/shm is refused, whatever its numbers.
    static let hostileRegionHeaders: [(field: Int, value: UInt64)] = [
        (16, .max & ~4095),  // ring_capacity near 2^64
        (16, 1 << 40),  // ring_capacity over 2^32
        (24, .max),  // ring_stride
        (12, UInt64(UInt32.max)),  // ring_count (a u32 field)
    ]

    @Test(arguments: hostileRegionHeaders)
    func hostileRegionHeaderIsALayoutMismatch(field: Int, value: UInt64) throws {
        let test = try TestRegion()
        if field == 12 {
            test.region.base.storeBytes(of: UInt32(value).littleEndian, toByteOffset: field, as: UInt32.self)
        } else {
            test.region.base.storeBytes(of: value.littleEndian, toByteOffset: field, as: UInt64.self)
        }
        let error = #expect(throws: SharedMemoryError.self) { try SharedMemoryRegion.open(name: test.name) }
        guard case .layoutMismatch = error else {
            Issue.record("expected a layout mismatch, got \(String(describing: error))")
            return
        }
    }
}
