import Foundation
import Testing

@testable import AetherIPC

/// Real processes on both ends of a ring: Swift to Swift and Swift to/from Python, one million
/// messages of random sizes 0...64 KiB each, every byte and the order checked by the consumer.
@Suite(.serialized) struct CrossProcessTests {
    static let messages = 1_000_000

    @Test(arguments: [
        (Peers.Language.swift, Peers.Language.swift), (.swift, .python), (.python, .swift),
    ])
    func millionMessages(producer: Peers.Language, consumer: Peers.Language) throws {
        let test = try TestRegion(capacity: 262_144)
        let arguments = [
            "--shm", test.name, "--ring", "0", "--count", String(Self.messages), "--seed", "42", "--max-len", "65536",
            "--timeout", "30",
        ]
        let reading = try Peers.start(consumer, ["consume"] + arguments)
        let writing = try Peers.start(producer, ["produce"] + arguments)
        let written = Peers.finish(writing)
        let read = Peers.finish(reading)
        #expect(written.status == 0, "\(written.output)")
        #expect(read.status == 0, "\(read.output)")
        #expect(read.output.hasPrefix("OK count=\(Self.messages) bytes="), "\(read.output)")
        #expect(read.output == written.output, "both sides count the same bytes")
    }

    /// The producer is killed with SIGKILL mid-stream. The consumer receives a prefix of the
    /// stream, every message intact, then times out: it never returns a torn message.
    @Test(arguments: [Peers.Language.swift, .python])
    func producerKilledMidStream(consumer: Peers.Language) async throws {
        let test = try TestRegion(capacity: 262_144)
        let arguments = [
            "--shm", test.name, "--ring", "0", "--count", "100000000", "--seed", "5", "--max-len", "65536",
        ]
        let writing = try Peers.start(.swift, ["produce"] + arguments)
        let reading = try Peers.start(consumer, ["consume"] + arguments + ["--timeout", "1"])
        try await Task.sleep(for: .milliseconds(700))
        kill(writing.0.processIdentifier, SIGKILL)
        writing.0.waitUntilExit()
        let read = Peers.finish(reading)
        #expect(read.status == 1)
        #expect(read.output.hasPrefix("FAIL"), "\(read.output)")
        #expect(
            read.output.hasPrefix("FAIL timeout"), "the consumer stopped on a timeout, not bad data: \(read.output)")
        let received = read.output.split(separator: " ").first { $0.hasPrefix("received=") }
            .flatMap { Int($0.dropFirst("received=".count)) }
        #expect((received ?? 0) > 0, "\(read.output)")
    }

    /// A Python handler that opens a region of another layout version refuses it with a clear error.
    @Test func pythonRefusesAnotherLayoutVersion() throws {
        let test = try TestRegion()
        test.region.base.storeBytes(of: UInt32(9).littleEndian, toByteOffset: 8, as: UInt32.self)
        let result = Peers.finish(
            try Peers.start(
                .python,
                ["consume", "--shm", test.name, "--ring", "0", "--count", "1", "--seed", "1", "--max-len", "100"]))
        #expect(result.status == 1)
        #expect(
            result.output
                == "FAIL LayoutMismatch: shm '\(test.name)': layout mismatch in layout_version: expected 1, found 9\n")
    }
}
