import Foundation
import Testing

@testable import AetherIPC

@Suite struct RingTests {
    static let capacity = 65_536
    static let maximumPayload = capacity / 2 - 8

    @Test func emptyRingReadsNothing() throws {
        let test = try TestRegion()
        #expect(try test.region.consumer(ring: 0).tryRead() == nil)
    }

    @Test func messagesArriveInOrderAndIntact() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let consumer = test.region.consumer(ring: 0)
        for index in 0..<1000 {
            let message = payload(index % 300, seed: index)
            #expect(try producer.tryWrite(message.withUnsafeBytes { $0 }) == true)
            #expect(try consumer.tryRead() == message)
        }
        #expect(try consumer.tryRead() == nil)
    }

    /// Moves head and tail to data offset `offset` (a multiple of 8) with filler records.
    static func advance(_ producer: RingProducer, _ consumer: RingConsumer, to offset: Int) throws {
        var position = 0
        while position != offset {
            let gap = offset > position ? offset - position : capacity - position + offset
            let length = max(0, min(gap, maximumPayload + 8) - 8)
            #expect(try producer.tryWrite([UInt8](repeating: 1, count: length).withUnsafeBytes { $0 }))
            #expect(try consumer.tryRead()?.count == length)
            position = (position + RingLayout.recordSize(payload: length)) % capacity
        }
    }

    /// A record that ends exactly at the end of the data area, one that needs a wrap marker by a
    /// single byte, and the header-only case, from every 8-byte offset in the last 128 bytes.
    @Test(arguments: Array(stride(from: capacity - 128, to: capacity, by: 8)))
    func wrapAroundAtEveryBoundary(startOffset: Int) throws {
        let room = Self.capacity - startOffset
        for length in [0, 1, max(0, room - 8 - 1), max(0, room - 8), room - 7, room, room + 1, 1000] {
            let test = try TestRegion()
            let producer = test.region.producer(ring: 0)
            let consumer = test.region.consumer(ring: 0)
            try Self.advance(producer, consumer, to: startOffset)
            let first = payload(length, seed: startOffset)
            let second = payload(37, seed: length)
            #expect(try producer.tryWrite(first.withUnsafeBytes { $0 }))
            #expect(try producer.tryWrite(second.withUnsafeBytes { $0 }))
            #expect(try consumer.tryRead() == first, "length \(length) at offset \(startOffset)")
            #expect(try consumer.tryRead() == second)
            #expect(try consumer.tryRead() == nil)
        }
    }

    @Test func fullRingRefusesThenAcceptsAfterARead() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let consumer = test.region.consumer(ring: 0)
        let message = payload(1000, seed: 1)
        var written = 0
        while try producer.tryWrite(message.withUnsafeBytes { $0 }) { written += 1 }
        #expect(written == Self.capacity / RingLayout.recordSize(payload: 1000))
        #expect(try consumer.tryRead() == message)
        #expect(try producer.tryWrite(message.withUnsafeBytes { $0 }))
        for _ in 0..<written { #expect(try consumer.tryRead() == message) }
        #expect(try consumer.tryRead() == nil)
    }

    /// The largest payload fits whenever the ring is empty, wherever head happens to be.
    @Test(arguments: [0, 8, 4096, capacity / 2 - 8, capacity / 2, capacity / 2 + 8, capacity - 8])
    func maximumPayloadFitsAtAnyOffset(offset: Int) throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let consumer = test.region.consumer(ring: 0)
        #expect(producer.maximumPayload == Self.maximumPayload)
        try Self.advance(producer, consumer, to: offset)
        let big = payload(Self.maximumPayload, seed: offset)
        #expect(try producer.tryWrite(big.withUnsafeBytes { $0 }))
        #expect(try consumer.tryRead() == big)
    }

    @Test func oversizeMessageIsATypedErrorAndWritesNothing() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let error = #expect(throws: SharedMemoryError.self) {
            try producer.tryWrite(payload(Self.maximumPayload + 1, seed: 0).withUnsafeBytes { $0 })
        }
        #expect(error == .messageTooLarge(size: Self.maximumPayload + 1, maximum: Self.maximumPayload))
        #expect(try test.region.consumer(ring: 0).tryRead() == nil)
    }

    @Test func flippedByteIsReportedWithBothChecksumsAndTheRingStaysUsable() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let consumer = test.region.consumer(ring: 0)
        let first = payload(100, seed: 1)
        let second = payload(50, seed: 2)
        #expect(try producer.tryWrite(first.withUnsafeBytes { $0 }))
        #expect(try producer.tryWrite(second.withUnsafeBytes { $0 }))
        let data = test.ringBase(0) + RingLayout.headerSize
        let stored = UInt32(littleEndian: data.load(fromByteOffset: 4, as: UInt32.self))
        data.storeBytes(
            of: data.load(fromByteOffset: 8 + 42, as: UInt8.self) ^ 0x10, toByteOffset: 8 + 42, as: UInt8.self)
        var corrupted = first
        corrupted[42] ^= 0x10
        let computed = corrupted.withUnsafeBytes { CRC32.checksum($0) }
        #expect(throws: SharedMemoryError.corruptedData(offset: 0, storedChecksum: stored, computedChecksum: computed))
        {
            try consumer.tryRead()
        }
        #expect(try consumer.tryRead() == second)
    }

    /// `tryReadCopy` checks the checksum of the copy it made: a flipped byte is reported as by
    /// `tryRead` (the copy is dropped, the ring stays usable), intact records come out whole.
    @Test func aCopyingReadChecksWhatItCopied() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let consumer = test.region.consumer(ring: 0)
        let first = payload(5000, seed: 1)
        let second = payload(70, seed: 2)
        let empty: [UInt8] = []
        for message in [first, second, empty] { #expect(try producer.tryWrite(message.withUnsafeBytes { $0 })) }
        let copying = { (source: UnsafeRawBufferPointer) -> ([UInt8], checksum: UInt32) in
            guard !source.isEmpty else { return ([], CRC32.checksum(source)) }
            var copy = [UInt8](repeating: 0, count: source.count)
            let checksum = copy.withUnsafeMutableBytes { CRC32.copy(source, to: $0.baseAddress!) }
            return (copy, checksum)
        }
        let data = test.ringBase(0) + RingLayout.headerSize
        let stored = UInt32(littleEndian: data.load(fromByteOffset: 4, as: UInt32.self))
        data.storeBytes(
            of: data.load(fromByteOffset: 8 + 4321, as: UInt8.self) ^ 0x01, toByteOffset: 8 + 4321, as: UInt8.self)
        var corrupted = first
        corrupted[4321] ^= 0x01
        let computed = corrupted.withUnsafeBytes { CRC32.checksum($0) }
        #expect(throws: SharedMemoryError.corruptedData(offset: 0, storedChecksum: stored, computedChecksum: computed))
        {
            try consumer.tryReadCopy(copying)
        }
        #expect(try consumer.tryReadCopy(copying) == second)
        #expect(try consumer.tryReadCopy(copying) == empty)
        #expect(try consumer.tryReadCopy(copying) == nil)
    }

    @Test func impossibleLengthPoisonsTheRing() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let consumer = test.region.consumer(ring: 0)
        #expect(try producer.tryWrite(payload(16, seed: 0).withUnsafeBytes { $0 }))
        let data = test.ringBase(0) + RingLayout.headerSize
        data.storeBytes(of: UInt32(1_000_000).littleEndian, as: UInt32.self)
        #expect(throws: SharedMemoryError.poisoned(offset: 0, length: 1_000_000)) { try consumer.tryRead() }
        #expect(throws: SharedMemoryError.poisoned(offset: 0, length: 1_000_000)) { try consumer.tryRead() }
        #expect(test.ringBase(0).load(fromByteOffset: RingLayout.poisonedOffset, as: UInt32.self) == 1)
        // A producer that fills the ring learns of the poison instead of waiting forever.
        let error = #expect(throws: SharedMemoryError.self) {
            while try producer.tryWrite(payload(4000, seed: 1).withUnsafeBytes { $0 }) {}
        }
        if case .poisoned = error {} else { Issue.record("expected .poisoned, got \(String(describing: error))") }
    }

    @Test func lengthBeyondHeadPoisonsTheRing() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        #expect(try producer.tryWrite(payload(16, seed: 0).withUnsafeBytes { $0 }))
        // 24 bytes published; a length of 100 claims bytes nobody published.
        (test.ringBase(0) + RingLayout.headerSize).storeBytes(of: UInt32(100).littleEndian, as: UInt32.self)
        #expect(throws: SharedMemoryError.poisoned(offset: 0, length: 100)) {
            try test.region.consumer(ring: 0).tryRead()
        }
    }

    @Test func wrapMarkerBeyondHeadPoisonsTheRing() throws {
        let test = try TestRegion()
        #expect(try test.region.producer(ring: 0).tryWrite(payload(16, seed: 0).withUnsafeBytes { $0 }))
        (test.ringBase(0) + RingLayout.headerSize).storeBytes(of: UInt32.max, as: UInt32.self)
        #expect(throws: SharedMemoryError.poisoned(offset: 0, length: UInt32.max)) {
            try test.region.consumer(ring: 0).tryRead()
        }
    }

    /// Bytes, length and checksum written but head not yet published (a producer killed at that
    /// instant): the consumer sees nothing.
    @Test func unpublishedRecordIsNeverRead() throws {
        let test = try TestRegion()
        let message = payload(64, seed: 3)
        let data = test.ringBase(0) + RingLayout.headerSize
        message.withUnsafeBytes { data.advanced(by: 8).copyMemory(from: $0.baseAddress!, byteCount: 64) }
        data.storeBytes(of: UInt32(64).littleEndian, as: UInt32.self)
        data.storeBytes(
            of: message.withUnsafeBytes { CRC32.checksum($0) }.littleEndian, toByteOffset: 4, as: UInt32.self)
        #expect(try test.region.consumer(ring: 0).tryRead() == nil)
    }

    @Test(arguments: [WaitPolicy.standard, .sleepAtOnce])
    func readTimesOutOnAnEmptyRing(_ policy: WaitPolicy) throws {
        let test = try TestRegion()
        let consumer = test.region.consumer(ring: 0)
        consumer.waitPolicy = policy
        let started = ContinuousClock.now
        #expect(throws: SharedMemoryError.timedOut(waited: .milliseconds(30))) {
            try consumer.read(timeout: .milliseconds(30))
        }
        #expect(ContinuousClock.now - started >= .milliseconds(30))
    }

    @Test func writeTimesOutOnAFullRing() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        producer.waitPolicy = .sleepAtOnce
        while try producer.tryWrite(payload(8000, seed: 0).withUnsafeBytes { $0 }) {}
        #expect(throws: SharedMemoryError.timedOut(waited: .milliseconds(20))) {
            try producer.write(payload(8000, seed: 0), timeout: .milliseconds(20))
        }
    }

    /// A sleeping consumer is woken by the doorbell, and a producer sleeping on a full ring is
    /// woken by reads; every message arrives, with every wait going through the futex.
    @Test func doorbellWakesSleepersBothWays() async throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 0)
        let consumer = test.region.consumer(ring: 0)
        producer.waitPolicy = .sleepAtOnce
        consumer.waitPolicy = .sleepAtOnce
        let count = 20_000
        let reader = Thread {
            for index in 0..<count {
                let message = try! consumer.read(timeout: .seconds(10))
                precondition(message == payload(index % 5000, seed: index), "message \(index) differs")
                if index % 1000 == 0 { usleep(2000) }  // let the producer fill up and sleep
            }
        }
        reader.start()
        for index in 0..<count {
            try producer.write(payload(index % 5000, seed: index), timeout: .seconds(10))
        }
        while !reader.isFinished { try await Task.sleep(for: .milliseconds(5)) }
        #expect(try consumer.tryRead() == nil)
    }
}
