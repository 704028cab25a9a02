import AetherSystem
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A POSIX shared-memory object holding the rings of one function instance, mapped into this
/// process (`docs/shm-layout.md`).
///
/// The orchestrator `create`s it (mode 0600, its PID recorded as owner) and `unlink`s it on clean
/// shutdown; a handler `open`s it by name and validates the layout before touching a ring. The
/// mapping lives as long as this object and the rings taken from it.
public final class SharedMemoryRegion: @unchecked Sendable {
    /// The object's name, `/aetherless-<function>-<instance>`.
    public let name: String
    public let ringCount: Int
    /// Data bytes of each ring.
    public let ringCapacity: Int
    /// Size of the whole mapping.
    public let size: Int
    let base: UnsafeMutableRawPointer

    /// Prefix of every region the orchestrator creates (the name without its leading slash).
    public static let namePrefix = "aetherless-"

    /// The region name of instance `instance` of the function with id `function`.
    public static func name(function: String, instance: Int) -> String {
        "/\(namePrefix)\(function)-\(instance)"
    }

    /// The memfd of an `anonymous` region (-1 otherwise), open as long as the region: what
    /// ATTACH hands to the handler.
    public let descriptor: CInt

    private init(
        name: String, ringCount: Int, ringCapacity: Int, size: Int, base: UnsafeMutableRawPointer,
        descriptor: CInt = -1
    ) {
        self.name = name
        self.ringCount = ringCount
        self.ringCapacity = ringCapacity
        self.size = size
        self.base = base
        self.descriptor = descriptor
    }

    deinit {
        munmap(base, size)
        if descriptor >= 0 { close(descriptor) }
    }

    /// Creates a new object (it must not exist yet), sizes it and writes its header.
    ///
    /// - Parameters:
    ///   - ringCapacity: data bytes per ring; a multiple of 4096 in 64 KiB...4 GiB.
    ///   - anonymous: a memfd instead of a name under /dev/shm: nobody can open it by name, it
    ///     goes with its last descriptor and mapping, and it reaches a handler only as the
    ///     descriptor `descriptor` handed over (ATTACH with SCM_RIGHTS). `name` is then only
    ///     its label.
    public static func create(
        name: String, ringCapacity: Int, ringCount: Int = 2, anonymous: Bool = false
    ) throws(SharedMemoryError)
        -> SharedMemoryRegion
    {
        guard ringCapacity % 4096 == 0, ringCapacity >= RingLayout.minimumCapacity,
            ringCapacity <= RingLayout.maximumCapacity
        else {
            throw .layoutMismatch(
                region: name, field: "ring_capacity",
                expected: "a multiple of 4096 in \(RingLayout.minimumCapacity)...\(RingLayout.maximumCapacity)",
                found: String(ringCapacity))
        }
        guard ringCount >= 1 else {
            throw .layoutMismatch(region: name, field: "ring_count", expected: "at least 1", found: String(ringCount))
        }
        let size = RegionLayout.size(ringCount: ringCount, capacity: ringCapacity)
        // The descriptor is needed only until the object is mapped.
        let object =
            anonymous
            ? OwnedDescriptor(owning: try call("memfd_create", name, .minusOne) { aether_memfd_create(name) })
            : OwnedDescriptor(
                owning: try call("shm_open", name, .minusOne) {
                    shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600)
                }
            )
        let base: UnsafeMutableRawPointer
        do {
            try call("ftruncate", name, .minusOne) { ftruncate(object.rawValue, off_t(size)) }
            base = try map(object, size: size, name: name)
        } catch {
            if !anonymous { shm_unlink(name) }
            throw error
        }
        // A fresh object is zero-filled: the rings start empty. The magic goes last so a reader
        // that races the creator sees either nothing or a complete header.
        base.storeBytes(
            of: RegionLayout.version.littleEndian, toByteOffset: RegionLayout.versionOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(ringCount).littleEndian, toByteOffset: RegionLayout.ringCountOffset, as: UInt32.self)
        base.storeBytes(
            of: UInt64(ringCapacity).littleEndian, toByteOffset: RegionLayout.ringCapacityOffset, as: UInt64.self)
        base.storeBytes(
            of: UInt64(RingLayout.headerSize + ringCapacity).littleEndian, toByteOffset: RegionLayout.ringStrideOffset,
            as: UInt64.self)
        base.storeBytes(of: UInt32(getpid()).littleEndian, toByteOffset: RegionLayout.ownerPIDOffset, as: UInt32.self)
        atomicFence()
        base.storeBytes(of: RegionLayout.magic.littleEndian, toByteOffset: RegionLayout.magicOffset, as: UInt64.self)
        return SharedMemoryRegion(
            name: name, ringCount: ringCount, ringCapacity: ringCapacity, size: size, base: base,
            descriptor: anonymous ? object.take() : -1)
    }

    /// Opens an existing object and checks that it follows this build's layout.
    public static func open(name: String) throws(SharedMemoryError) -> SharedMemoryRegion {
        try open(
            object: OwnedDescriptor(
                owning: try call("shm_open", name, .minusOne) { shm_open(name, O_RDWR | O_CLOEXEC, 0) }),
            name: name)
    }

    /// Maps the object `descriptor` refers to (one handed over with ATTACH), which this takes
    /// over and closes, after checking that it follows this build's layout.
    public static func open(descriptor: CInt, name: String) throws(SharedMemoryError) -> SharedMemoryRegion {
        try open(object: OwnedDescriptor(owning: descriptor), name: name)
    }

    private static func open(
        object: consuming OwnedDescriptor, name: String
    ) throws(SharedMemoryError)
        -> SharedMemoryRegion
    {
        var status = stat()
        try call("fstat", name, .minusOne) { fstat(object.rawValue, &status) }
        let objectSize = Int(status.st_size)
        guard objectSize >= RegionLayout.headerSize else {
            throw .layoutMismatch(
                region: name, field: "size", expected: "at least \(RegionLayout.headerSize) bytes",
                found: "\(objectSize) bytes")
        }
        let header = try map(object, size: RegionLayout.headerSize, name: name)
        let geometry: (ringCount: Int, capacity: Int)
        do {
            geometry = try validateHeader(header, name: name, objectSize: objectSize)
        } catch {
            munmap(header, RegionLayout.headerSize)
            throw error
        }
        munmap(header, RegionLayout.headerSize)
        let size = RegionLayout.size(ringCount: geometry.ringCount, capacity: geometry.capacity)
        let base = try map(object, size: size, name: name)
        return SharedMemoryRegion(
            name: name, ringCount: geometry.ringCount, ringCapacity: geometry.capacity, size: size, base: base)
    }

    /// Removes the object's name; existing mappings stay valid until they are dropped. (An
    /// anonymous region has no name to remove.)
    public func unlink() throws(SharedMemoryError) {
        guard descriptor < 0 else { return }
        try Self.call("shm_unlink", name, .minusOne) { shm_unlink(name) }
    }

    /// PID of the process that created the region.
    public var ownerPID: Int32 {
        Int32(bitPattern: UInt32(littleEndian: base.load(fromByteOffset: RegionLayout.ownerPIDOffset, as: UInt32.self)))
    }

    /// The producing side of ring `index` (ring 0 carries requests, ring 1 responses).
    ///
    /// With `bell`, it wakes its consumer by writing that eventfd instead of the futex (the
    /// consumer waits in epoll: a handler's response ring, the bell handed over with ATTACH).
    public func producer(ring index: Int, bell: EventBell? = nil) -> RingProducer {
        RingProducer(ring: ring(index, dataEvent: bell))
    }

    /// The consuming side of ring `index`.
    public func consumer(ring index: Int) -> RingConsumer {
        RingConsumer(ring: ring(index))
    }

    private func ring(_ index: Int, dataEvent: EventBell? = nil) -> RingMemory {
        precondition((0..<ringCount).contains(index), "ring \(index) of a region with \(ringCount) rings")
        return RingMemory(
            region: self, base: base + RegionLayout.ringOffset(index, capacity: ringCapacity), capacity: ringCapacity,
            dataEvent: dataEvent)
    }

    /// Unlinks regions under `/dev/shm` whose creator is no longer alive, left by an orchestrator
    /// that crashed. Objects with another layout are not ours to judge and are left alone.
    /// Returns the names removed.
    @discardableResult
    public static func removeStale(directory: String = "/dev/shm") -> [String] {
        var removed: [String] = []
        for entry in Posix.entries(of: directory) ?? [] {
            let file = entry.name
            guard file.hasPrefix(namePrefix) else { continue }
            let name = "/" + file
            guard let region = try? open(name: name) else { continue }
            let owner = region.ownerPID
            if owner > 0, kill(owner, 0) != 0, errno == ESRCH, shm_unlink(name) == 0 {
                removed.append(name)
            }
        }
        return removed
    }

    private static func map(
        _ object: borrowing OwnedDescriptor, size: Int, name: String
    ) throws(SharedMemoryError) -> UnsafeMutableRawPointer {
        try call("mmap", name, .mapFailed) { mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, object.rawValue, 0) }
    }

    /// `systemCall` on the region `name`; a failure is `SharedMemoryError.systemCall`.
    @discardableResult
    private static func call<Value, Result>(
        _ function: String, _ name: String, _ convention: SystemCallConvention<Value, Result>, _ body: () -> Value
    ) throws(SharedMemoryError) -> Result {
        do {
            return try systemCall(function, on: name, failsWith: convention, body)
        } catch {
            throw .systemCall(error)
        }
    }

    private static func validateHeader(
        _ header: UnsafeMutableRawPointer, name: String, objectSize: Int
    )
        throws(SharedMemoryError) -> (ringCount: Int, capacity: Int)
    {
        func field<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            T(littleEndian: header.load(fromByteOffset: offset, as: T.self))
        }
        let magic = field(RegionLayout.magicOffset, UInt64.self)
        guard magic == RegionLayout.magic else {
            throw .layoutMismatch(
                region: name, field: "magic", expected: "0x" + String(RegionLayout.magic, radix: 16),
                found: "0x" + String(magic, radix: 16))
        }
        let version = field(RegionLayout.versionOffset, UInt32.self)
        guard version == RegionLayout.version else {
            throw .layoutMismatch(
                region: name, field: "layout_version", expected: String(RegionLayout.version), found: String(version))
        }
        let ringCount = Int(field(RegionLayout.ringCountOffset, UInt32.self))
        let capacity = field(RegionLayout.ringCapacityOffset, UInt64.self)
        let stride = field(RegionLayout.ringStrideOffset, UInt64.self)
        guard ringCount >= 1, ringCount <= 64 else {
            throw .layoutMismatch(region: name, field: "ring_count", expected: "1...64", found: String(ringCount))
        }
        guard capacity % 4096 == 0, capacity >= UInt64(RingLayout.minimumCapacity),
            capacity <= UInt64(RingLayout.maximumCapacity)
        else {
            throw .layoutMismatch(
                region: name, field: "ring_capacity", expected: "a multiple of 4096 in 65536...2^32",
                found: String(capacity))
        }
        guard stride == capacity + UInt64(RingLayout.headerSize) else {
            throw .layoutMismatch(
                region: name, field: "ring_stride", expected: String(capacity + UInt64(RingLayout.headerSize)),
                found: String(stride))
        }
        let expectedSize = RegionLayout.size(ringCount: ringCount, capacity: Int(capacity))
        guard objectSize >= expectedSize else {
            throw .layoutMismatch(
                region: name, field: "size", expected: "\(expectedSize) bytes", found: "\(objectSize) bytes")
        }
        return (ringCount, Int(capacity))
    }
}
