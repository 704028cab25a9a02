/// Byte offsets and constants of `docs/shm-layout.md` (layout version 1). The Python runtime
/// (`sdk/python/aetherless/ring.py`) mirrors these; change both and the version together.
enum RegionLayout {
    /// ASCII `AETHSHM1` read as a little-endian u64.
    static let magic: UInt64 = 0x314D_4853_4854_4541
    static let version: UInt32 = 1
    static let headerSize = 64

    static let magicOffset = 0
    static let versionOffset = 8
    static let ringCountOffset = 12
    static let ringCapacityOffset = 16
    static let ringStrideOffset = 24
    /// PID of the orchestrator that created the region, so a later one can tell stale regions.
    static let ownerPIDOffset = 32

    static func ringOffset(_ index: Int, capacity: Int) -> Int {
        headerSize + index * (RingLayout.headerSize + capacity)
    }

    static func size(ringCount: Int, capacity: Int) -> Int {
        headerSize + ringCount * (RingLayout.headerSize + capacity)
    }
}

/// Offsets and constants of one ring (docs/shm-layout.md). `package` so that the configuration
/// validator derives the largest message from `maximumPayload(capacity:)` instead of copying it.
package enum RingLayout {
    static let headerSize = 256

    static let headOffset = 0
    static let tailOffset = 64
    static let poisonedOffset = 72
    static let dataSequenceOffset = 128
    static let consumerSleepingOffset = 132
    static let spaceSequenceOffset = 192
    static let producerSleepingOffset = 196

    /// A record length of all ones marks the rest of the data area as padding.
    static let wrapMarker: UInt32 = 0xFFFF_FFFF
    static let recordHeaderSize = 8

    static let minimumCapacity = 65_536
    /// `len` is a u32 and all ones is the wrap marker, so payloads stay below 2^31.
    static let maximumCapacity = 1 << 32

    /// The largest payload that always fits once the ring has drained, wherever head is.
    package static func maximumPayload(capacity: Int) -> Int { capacity / 2 - recordHeaderSize }

    /// Header plus payload rounded up to 8 bytes.
    static func recordSize(payload: Int) -> Int { recordHeaderSize + ((payload + 7) & ~7) }
}
