import AetherSystem
import Foundation
import Testing

@testable import AetherIPC

@Suite struct RegionTests {
    @Test func createThenOpenSeesTheSameGeometry() throws {
        let test = try TestRegion(capacity: 131_072)
        let opened = try SharedMemoryRegion.open(name: test.name)
        #expect(opened.ringCount == 2)
        #expect(opened.ringCapacity == 131_072)
        #expect(opened.ownerPID == getpid())
        #expect(opened.size == 64 + 2 * (256 + 131_072))
        var status = stat()
        #expect(stat("/dev/shm\(test.name)", &status) == 0)
        #expect(status.st_mode & 0o777 == 0o600)
        #expect(Int(status.st_size) == opened.size)
    }

    @Test func regionNamesFollowTheConvention() {
        #expect(SharedMemoryRegion.name(function: "hello", instance: 3) == "/aetherless-hello-3")
    }

    @Test func creatingAnExistingRegionFails() throws {
        let test = try TestRegion()
        #expect(
            throws: SharedMemoryError.systemCall(SystemCallFailure(call: "shm_open", subject: test.name, errno: EEXIST))
        ) {
            try SharedMemoryRegion.create(name: test.name, ringCapacity: 65_536)
        }
    }

    @Test func openingAMissingRegionFails() {
        #expect(
            throws: SharedMemoryError.systemCall(
                SystemCallFailure(call: "shm_open", subject: "/aetherless-nope", errno: ENOENT))
        ) {
            try SharedMemoryRegion.open(name: "/aetherless-nope")
        }
    }

    @Test(arguments: [0, 4096, 65_537, 69_632 + 1])
    func badCapacityIsRefused(_ capacity: Int) {
        #expect(throws: SharedMemoryError.self) {
            try SharedMemoryRegion.create(name: "/aetherless-test-badcap-\(getpid())", ringCapacity: capacity)
        }
    }

    @Test func wrongMagicIsALayoutMismatch() throws {
        let test = try TestRegion()
        test.region.base.storeBytes(of: UInt64(0x1234), as: UInt64.self)
        #expect(
            throws: SharedMemoryError.layoutMismatch(
                region: test.name, field: "magic", expected: "0x314d485348544541", found: "0x1234")
        ) { try SharedMemoryRegion.open(name: test.name) }
    }

    @Test func wrongVersionIsALayoutMismatch() throws {
        let test = try TestRegion()
        test.region.base.storeBytes(of: UInt32(2).littleEndian, toByteOffset: 8, as: UInt32.self)
        let error = #expect(throws: SharedMemoryError.self) { try SharedMemoryRegion.open(name: test.name) }
        #expect(error == .layoutMismatch(region: test.name, field: "layout_version", expected: "1", found: "2"))
        #expect(error?.description == "shared-memory region \(test.name) has layout_version 2, expected 1")
    }

    @Test func inconsistentStrideIsALayoutMismatch() throws {
        let test = try TestRegion()
        test.region.base.storeBytes(of: UInt64(1).littleEndian, toByteOffset: 24, as: UInt64.self)
        let error = #expect(throws: SharedMemoryError.self) { try SharedMemoryRegion.open(name: test.name) }
        #expect(error == .layoutMismatch(region: test.name, field: "ring_stride", expected: "65792", found: "1"))
    }

    @Test func truncatedObjectIsALayoutMismatch() throws {
        let name = "/aetherless-test-short-\(getpid())"
        let object = try OwnedDescriptor("shm_open", on: name) { shm_open(name, O_CREAT | O_RDWR | O_CLOEXEC, 0o600) }
        defer { shm_unlink(name) }
        ftruncate(object.rawValue, 10)
        object.close()
        let error = #expect(throws: SharedMemoryError.self) { try SharedMemoryRegion.open(name: name) }
        #expect(error == .layoutMismatch(region: name, field: "size", expected: "at least 64 bytes", found: "10 bytes"))
    }

    /// Regions whose creator died are removed at the next start; live owners' regions stay.
    @Test func staleRegionsOfDeadOwnersAreRemoved() throws {
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let deadPID = dead.processIdentifier

        let stale = try TestRegion()
        stale.region.base.storeBytes(of: UInt32(deadPID).littleEndian, toByteOffset: 32, as: UInt32.self)
        let live = try TestRegion()

        let removed = SharedMemoryRegion.removeStale()
        #expect(removed.contains(stale.name))
        #expect(!removed.contains(live.name))
        #expect(throws: SharedMemoryError.self) { try SharedMemoryRegion.open(name: stale.name) }
        #expect(try SharedMemoryRegion.open(name: live.name).ownerPID == getpid())
    }
}
