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

    init(region: SharedMemoryRegion, base: UnsafeMutableRawPointer, capacity: Int) {
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
            word: (base + RingLayout.dataSequenceOffset).assumingMemoryBound(to: UInt32.self))
        spaceBell = Doorbell(
            sequence: atomic32(RingLayout.spaceSequenceOffset), sleeping: atomic32(RingLayout.producerSleepingOffset),
            word: (base + RingLayout.spaceSequenceOffset).assumingMemoryBound(to: UInt32.self))
    }

    func loadU32(at offset: Int) -> UInt32 {
        UInt32(littleEndian: data.load(fromByteOffset: offset, as: UInt32.self))
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
