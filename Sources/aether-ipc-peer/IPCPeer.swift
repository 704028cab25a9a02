import AetherIPC
import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

/// A ring peer in its own process, for cross-process and cross-language tests and benchmarks.
/// Same commands and output as `sdk/python/tools/ring_peer.py`: "OK count=N bytes=B" (exit 0)
/// or one "FAIL ..." line (exit 1).
@main
struct IPCPeer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aether-ipc-peer",
        abstract: "Shared-memory ring peer for tests and benchmarks.",
        subcommands: [Create.self, Unlink.self, Produce.self, Consume.self, Echo.self, SocketEcho.self, Sink.self]
    )
}

struct RingOptions: ParsableArguments {
    @Option(help: "Region name, e.g. /aetherless-test-0.") var shm: String
    @Option(help: "Ring index.") var ring: Int = 0
}

struct StreamOptions: ParsableArguments {
    @Option(help: "Messages to send or expect.") var count: Int
    @Option(help: "Stream seed.") var seed: UInt64 = 1
    @Option(name: .customLong("max-len"), help: "Largest message length.") var maximumLength: Int = 65_536
    @Option(help: "Seconds each single wait may take (default: forever).") var timeout: Double?
    @Option(help: "Wait policy: standard, sleep, poll.") var wait: String = "standard"
}

func policy(_ name: String) throws -> WaitPolicy {
    switch name {
    case "standard": return .standard
    case "sleep": return .sleepAtOnce
    case "poll": return .pollOnly
    default: throw ValidationError("unknown wait policy \(name)")
    }
}

/// User plus system CPU time this process has used, in microseconds.
func processCPUMicroseconds() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + usage.ru_utime.tv_usec + usage.ru_stime.tv_usec
}

func say(_ line: String) {
    print(line)
    fflush(nil)  // all streams: peers are read line by line through pipes
}

extension IPCPeer {
    struct Create: ParsableCommand {
        @Option var shm: String
        @Option var capacity: Int
        @Option var rings: Int = 2
        func run() throws {
            _ = try SharedMemoryRegion.create(name: shm, ringCapacity: capacity, ringCount: rings)
            say("OK created \(shm)")
        }
    }

    struct Unlink: ParsableCommand {
        @Option var shm: String
        func run() throws {
            try SharedMemoryRegion.open(name: shm).unlink()
            say("OK unlinked \(shm)")
        }
    }

    struct Produce: ParsableCommand {
        @OptionGroup var ring: RingOptions
        @OptionGroup var stream: StreamOptions

        func run() throws {
            let region = try SharedMemoryRegion.open(name: ring.shm)
            let producer = region.producer(ring: ring.ring)
            producer.waitPolicy = try policy(stream.wait)
            var messages = TestStream(seed: stream.seed, maximumLength: stream.maximumLength)
            var total = 0
            for _ in 0..<stream.count {
                let (index, length, start) = messages.nextMessage()
                do {
                    try producer.write(length: length, timeout: stream.timeout.map { .milliseconds($0 * 1000) }) {
                        messages.fill($0, index: index, start: start)
                    }
                } catch .timedOut {
                    say("FAIL timeout index=\(index) sent=\(index) bytes=\(total)")
                    throw ExitCode.failure
                } catch {
                    say("FAIL \(error) index=\(index) sent=\(index) bytes=\(total)")
                    throw ExitCode.failure
                }
                total += length
            }
            say("OK count=\(stream.count) bytes=\(total)")
        }
    }

    struct Consume: ParsableCommand {
        @OptionGroup var ring: RingOptions
        @OptionGroup var stream: StreamOptions

        func run() throws {
            let region = try SharedMemoryRegion.open(name: ring.shm)
            let consumer = region.consumer(ring: ring.ring)
            consumer.waitPolicy = try policy(stream.wait)
            var messages = TestStream(seed: stream.seed, maximumLength: stream.maximumLength)
            var total = 0
            for _ in 0..<stream.count {
                let (index, length, start) = messages.nextMessage()
                let difference: Int?
                do {
                    difference = try consumer.read(timeout: stream.timeout.map { .milliseconds($0 * 1000) }) {
                        messages.firstDifference($0, index: index, length: length, start: start)
                    }
                } catch .timedOut {
                    say("FAIL timeout index=\(index) received=\(index) bytes=\(total)")
                    throw ExitCode.failure
                } catch {
                    say("FAIL \(error) index=\(index) received=\(index) bytes=\(total)")
                    throw ExitCode.failure
                }
                if let difference {
                    say("FAIL mismatch index=\(index) offset=\(difference) expected_len=\(length) received=\(index)")
                    throw ExitCode.failure
                }
                total += length
            }
            say("OK count=\(stream.count) bytes=\(total)")
        }
    }

    struct Echo: ParsableCommand {
        @Option var shm: String
        @Option(help: "Wait policy: standard, sleep, poll.") var wait: String = "standard"

        func run() throws {
            let region = try SharedMemoryRegion.open(name: shm)
            let requests = region.consumer(ring: 0)
            let responses = region.producer(ring: 1)
            requests.waitPolicy = try policy(wait)
            responses.waitPolicy = try policy(wait)
            var count = 0
            var total = 0
            while true {
                var length = 0
                try requests.read { payload in
                    length = payload.count
                    try! responses.write(payload)
                }
                count += 1
                total += length
                if length == 0 { break }
            }
            say("OK count=\(count) bytes=\(total) cpu_us=\(processCPUMicroseconds())")
        }
    }
}

extension IPCPeer {
    /// Reads fixed-size messages in place (no copy out, CRC checked) until an empty one, then
    /// prints its CPU time: the consuming side of the throughput benchmark.
    struct Sink: ParsableCommand {
        @Option var shm: String
        @Option var ring: Int = 0
        @Option(help: "Wait policy: standard, sleep, poll.") var wait: String = "standard"

        func run() throws {
            let region = try SharedMemoryRegion.open(name: shm)
            let consumer = region.consumer(ring: ring)
            consumer.waitPolicy = try policy(wait)
            var count = 0
            var checksum: UInt8 = 0
            while true {
                let length = try consumer.read { payload -> Int in
                    if let last = payload.last { checksum ^= last }
                    return payload.count
                }
                if length == 0 { break }
                count += 1
            }
            say("OK count=\(count) cpu_us=\(processCPUMicroseconds()) x=\(checksum)")
        }
    }
}
