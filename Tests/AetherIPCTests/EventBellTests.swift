import Atomics
import Foundation
import Testing

@testable import AetherIPC

/// A producer given a bell wakes its consumer through the eventfd, which the consumer waits for
/// with poll(2), as the orchestrator's event loops wait in epoll (docs/shm-layout.md, "Bell").
@Suite struct EventBellTests {
    /// Waits until `bell` is readable, at most `milliseconds`; false on timeout.
    static func waitReadable(_ bell: EventBell, milliseconds: CInt) -> Bool {
        var poller = pollfd(fd: bell.descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&poller, 1, milliseconds) == 1
    }

    /// `tryWrite` of `message`, with its bytes alive throughout.
    static func write(_ message: [UInt8], to producer: RingProducer) throws -> Bool {
        try message.withUnsafeBytes { try producer.tryWrite($0) }
    }

    /// Every message arrives, in order, with the consumer asleep in poll between bursts, and the
    /// futex word is never touched: the bell replaced it.
    @Test func consumerAsleepInPollIsWokenByTheBell() async throws {
        let test = try TestRegion()
        let bell = try EventBell()
        let producer = test.region.producer(ring: 1, bell: bell)
        let consumer = test.region.consumer(ring: 1)
        let sequence = (test.ringBase(1) + RingLayout.dataSequenceOffset).assumingMemoryBound(to: UInt32.self)
        let sequenceBefore = sequence.pointee
        let count = 5_000
        let reader = Thread {
            var received = 0
            var wakeUps = 0
            while received < count {
                // The orchestrator's loop: read all, announce, sleep in poll until rung.
                consumer.wokeUp()
                while let message = try! consumer.tryRead() {
                    precondition(message == payload(received % 1000, seed: received), "message \(received) differs")
                    received += 1
                }
                if received < count, consumer.announceSleep() {
                    precondition(Self.waitReadable(bell, milliseconds: 10_000), "no bell after \(received) messages")
                    bell.drain()
                    wakeUps += 1
                }
            }
            precondition(wakeUps >= count / 250, "the consumer slept \(wakeUps) times")
        }
        reader.start()
        let sleeping = (test.ringBase(1) + RingLayout.consumerSleepingOffset).assumingMemoryBound(to: UInt32.self)
        for index in 0..<count {
            if index % 250 == 0 {
                // Each burst starts once the consumer sleeps: it must be rung awake.
                let by = ContinuousClock.now + .seconds(10)
                while UnsafeAtomic<UInt32>(at: .init(OpaquePointer(sleeping))).load(ordering: .acquiring) == 0 {
                    #expect(ContinuousClock.now < by, "the consumer never went to sleep")
                    if ContinuousClock.now >= by { break }
                    usleep(100)
                }
            }
            try producer.write(payload(index % 1000, seed: index), timeout: .seconds(10))
        }
        while !reader.isFinished { try await Task.sleep(for: .milliseconds(5)) }
        #expect(try consumer.tryRead() == nil)
        #expect(sequence.pointee == sequenceBefore)
    }

    /// The bell is rung only for a consumer that announced it sleeps, and a record published
    /// after the announcement always rings it.
    @Test func ringsOnlyAnAnnouncedSleeper() throws {
        let test = try TestRegion()
        let bell = try EventBell()
        let producer = test.region.producer(ring: 1, bell: bell)
        let consumer = test.region.consumer(ring: 1)
        #expect(try Self.write(payload(10, seed: 1), to: producer))
        #expect(!Self.waitReadable(bell, milliseconds: 0))
        #expect(try consumer.tryRead() == payload(10, seed: 1))
        #expect(consumer.announceSleep())
        #expect(try Self.write(payload(10, seed: 2), to: producer))
        #expect(Self.waitReadable(bell, milliseconds: 1000))
        bell.drain()
        #expect(!Self.waitReadable(bell, milliseconds: 0))
        consumer.wokeUp()
        #expect(try consumer.tryRead() == payload(10, seed: 2))
    }

    /// The producer takes the announcement down as it rings: the records it publishes before the
    /// consumer announces itself again ring nothing (one eventfd write per sleep, not per record).
    @Test func ringsOncePerAnnouncement() throws {
        let test = try TestRegion()
        let bell = try EventBell()
        let producer = test.region.producer(ring: 1, bell: bell)
        let consumer = test.region.consumer(ring: 1)
        let sleeping = UnsafeAtomic<UInt32>(
            at: .init(OpaquePointer(test.ringBase(1) + RingLayout.consumerSleepingOffset)))
        #expect(consumer.announceSleep())
        #expect(try Self.write(payload(10, seed: 1), to: producer))
        #expect(sleeping.load(ordering: .acquiring) == 0, "the waker took the flag down")
        #expect(try Self.write(payload(10, seed: 2), to: producer))
        var count: UInt64 = 0
        #expect(read(bell.descriptor, &count, 8) == 8)
        #expect(count == 1, "rung once for two records")
        #expect(!consumer.announceSleep(), "two records wait")
        #expect(try consumer.tryRead() == payload(10, seed: 1))
        #expect(try consumer.tryRead() == payload(10, seed: 2))
        #expect(consumer.announceSleep())
        #expect(try Self.write(payload(10, seed: 3), to: producer))
        #expect(Self.waitReadable(bell, milliseconds: 1000), "announced again: rung again")
    }

    /// A record already published when the consumer announces itself keeps it awake.
    @Test func announcingOverAPublishedRecordFails() throws {
        let test = try TestRegion()
        let producer = test.region.producer(ring: 1, bell: try EventBell())
        let consumer = test.region.consumer(ring: 1)
        #expect(try Self.write(payload(10, seed: 1), to: producer))
        #expect(!consumer.announceSleep())
        #expect(try consumer.tryRead() == payload(10, seed: 1))
        #expect(consumer.announceSleep())
    }
}
