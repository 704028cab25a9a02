import Atomics

/// The words and data area of one ring inside a mapped region, with the atomic accessors both
/// sides use. Holding the region keeps the mapping alive.
///
/// `UnsafeAtomic` views are made over the mapped header words (never `create`d or `destroy`ed:
/// the memory belongs to the mapping, which `munmap` releases).
struct RingMemory {
    let region: SharedMemoryRegion
    let capacity: Int
    let data: UnsafeMutableRawPointer
    let head: UnsafeAtomic<UInt64>
    let tail: UnsafeAtomic<UInt64>
    let poisoned: UnsafeAtomic<UInt32>
    /// Rung by the producer after publishing; the consumer sleeps on it.
    let dataBell: Doorbell
    /// Rung by the consumer after releasing space; the producer sleeps on it.
    let spaceBell: Doorbell

    var maximumPayload: Int { RingLayout.maximumPayload(capacity: capacity) }
    /// The largest record, `capacity / 2`: a producer writes a wrap marker only where fewer bytes
    /// than its record are left, so a marker with this much or more room after it is corruption.
    var maximumRecord: UInt64 { UInt64(RingLayout.recordSize(payload: maximumPayload)) }

    /// `dataEvent`: the eventfd the data bell rings instead of the futex (a producer handed one).
    init(region: SharedMemoryRegion, base: UnsafeMutableRawPointer, capacity: Int, dataEvent: EventBell? = nil) {
        func atomic64(_ offset: Int) -> UnsafeAtomic<UInt64> {
            UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UInt64.AtomicRepresentation.self))
        }
        func atomic32(_ offset: Int) -> UnsafeAtomic<UInt32> {
            UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
        }
        self.region = region
        self.capacity = capacity
        data = base + RingLayout.headerSize
        head = atomic64(RingLayout.headOffset)
        tail = atomic64(RingLayout.tailOffset)
        poisoned = atomic32(RingLayout.poisonedOffset)
        dataBell = Doorbell(
            sequence: atomic32(RingLayout.dataSequenceOffset), sleeping: atomic32(RingLayout.consumerSleepingOffset),
            word: (base + RingLayout.dataSequenceOffset).assumingMemoryBound(to: UInt32.self), event: dataEvent)
        spaceBell = Doorbell(
            sequence: atomic32(RingLayout.spaceSequenceOffset), sleeping: atomic32(RingLayout.producerSleepingOffset),
            word: (base + RingLayout.spaceSequenceOffset).assumingMemoryBound(to: UInt32.self))
    }

    /// Whether `head` and `tail` can be this ring's positions: tail not ahead of head, at most
    /// `capacity` bytes published and unconsumed, both multiples of 8 (so every record header lies
    /// whole inside the data area), and head so far below 2^64 that advancing it cannot overflow.
    ///
    /// Both words live in memory the other process writes; arithmetic on them happens only once
    /// this holds, so no value a peer stores can trap either side.
    func positionsHold(head: UInt64, tail: UInt64) -> Bool {
        tail <= head && head - tail <= UInt64(capacity) && (head | tail) & 7 == 0
            && head <= UInt64.max - 2 * UInt64(capacity)
    }

    /// Marks the ring unusable for both sides (`poisoned` = 1) and wakes whichever side may be
    /// asleep on it, so that it looks again and learns.
    func markPoisoned() {
        poisoned.store(1, ordering: .releasing)
        dataBell.ring()
        spaceBell.ring()
    }

    func loadU32(at offset: Int) -> UInt32 {
        UInt32(littleEndian: data.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    func storeU32(_ value: UInt32, at offset: Int) {
        data.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}

/// A full (sequentially consistent) memory fence.
@inline(__always)
func atomicFence() {
    atomicMemoryFence(ordering: .sequentiallyConsistent)
}
