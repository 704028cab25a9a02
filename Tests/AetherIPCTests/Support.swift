import Foundation
import Synchronization

@testable import AetherIPC

/// A region with a unique name, unlinked when the test ends.
final class TestRegion {
    private static let counter = Atomic<Int>(0)
    let region: SharedMemoryRegion
    var name: String { region.name }

    init(capacity: Int = 65_536, rings: Int = 2) throws {
        let number = Self.counter.add(1, ordering: .relaxed).newValue
        region = try SharedMemoryRegion.create(
            name: "/aetherless-test-\(getpid())-\(number)", ringCapacity: capacity, ringCount: rings)
    }

    deinit { try? region.unlink() }

    /// Ring `index`'s data area and header, for tests that tamper with the bytes.
    func ringBase(_ index: Int) -> UnsafeMutableRawPointer {
        region.base + RegionLayout.ringOffset(index, capacity: region.ringCapacity)
    }
}

/// Payload `length` bytes long whose content depends on `seed`, so mix-ups are visible.
func payload(_ length: Int, seed: Int) -> [UInt8] {
    (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ 1) }
}

enum Peers {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let python = "/usr/bin/python3"
    static let pythonPeer = "\(repositoryRoot)/sdk/python/tools/ring_peer.py"

    /// The Swift peer is built next to the test bundle.
    static let swiftPeer: String = {
        var folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent()
        while folder.path != "/" {
            let candidate = folder.appendingPathComponent("aether-ipc-peer").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            folder.deleteLastPathComponent()
        }
        return "aether-ipc-peer"
    }()

    enum Language: String, CustomStringConvertible {
        case swift, python
        var description: String { rawValue }
    }

    static func command(_ language: Language, _ arguments: [String]) -> (String, [String]) {
        switch language {
        case .swift: (swiftPeer, arguments)
        case .python: (python, [pythonPeer] + arguments)
        }
    }

    static func start(_ language: Language, _ arguments: [String]) throws -> (Process, Pipe) {
        let (executable, fullArguments) = command(language, arguments)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = fullArguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        return (process, pipe)
    }

    static func finish(_ started: (Process, Pipe)) -> (status: Int32, output: String) {
        let data = started.1.fileHandleForReading.readDataToEndOfFile()
        started.0.waitUntilExit()
        return (started.0.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
