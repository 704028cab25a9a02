import Atomics
import CAetherIPC

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
    let dataSequence: UnsafeAtomic<UInt32>
    let consumerSleeping: UnsafeAtomic<UInt32>
    let spaceSequence: UnsafeAtomic<UInt32>
    let producerSleeping: UnsafeAtomic<UInt32>
    let dataSequenceWord: UnsafeMutablePointer<UInt32>
    let spaceSequenceWord: UnsafeMutablePointer<UInt32>

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
        dataSequence = atomic32(RingLayout.dataSequenceOffset)
        consumerSleeping = atomic32(RingLayout.consumerSleepingOffset)
        spaceSequence = atomic32(RingLayout.spaceSequenceOffset)
        producerSleeping = atomic32(RingLayout.producerSleepingOffset)
        dataSequenceWord = (base + RingLayout.dataSequenceOffset).assumingMemoryBound(to: UInt32.self)
        spaceSequenceWord = (base + RingLayout.spaceSequenceOffset).assumingMemoryBound(to: UInt32.self)
    }

    func loadU32(at offset: Int) -> UInt32 {
        UInt32(littleEndian: data.load(fromByteOffset: offset, as: UInt32.self))
    }

    func storeU32(_ value: UInt32, at offset: Int) {
        data.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// Wakes the other side if it announced it is going to sleep on `sequence`.
    ///
    /// The caller has just published (head or tail) with a release store; the full fence orders
    /// that store before the load of `sleeping`, pairing with the sleeper's store-fence-load, so a
    /// wake-up cannot be lost (docs/shm-layout.md, "Waiting").
    func wake(sleeping: UnsafeAtomic<UInt32>, sequence: UnsafeAtomic<UInt32>, word: UnsafeMutablePointer<UInt32>) {
        atomicFence()
        if sleeping.load(ordering: .relaxed) != 0 {
            sequence.wrappingIncrement(ordering: .releasing)
            _ = aether_futex_wake(word, 1)
        }
    }
}

/// A full (sequentially consistent) memory fence.
@inline(__always)
func atomicFence() {
    atomicMemoryFence(ordering: .sequentiallyConsistent)
}
