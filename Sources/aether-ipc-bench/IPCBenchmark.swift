import AetherIPC
import AetherSystem
import ArgumentParser
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Measures the shared-memory ring against the alternatives in one run and prints Markdown
/// tables (BENCHMARKS.md): cross-process round trips vs a Unix-domain socket and TCP loopback,
/// one-way throughput vs memcpy, and the CPU each wait policy spends.
@main
struct IPCBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aether-ipc-bench",
        abstract: "Shared-memory ring benchmark (run through scripts/bench-ipc.sh)."
    )

    @Option(help: "Path of aether-ipc-peer (default: next to this binary).") var peer: String?
    @Option(name: .customLong("round-trips"), help: "Measured round trips per payload size.") var roundTrips = 20_000
    @Option(help: "Seconds per throughput measurement.") var seconds = 1.0
    @Option(help: "Throughput measurements per size; the table shows their median and range.") var repeats = 3
    @Option(help: "Sections to run, comma-separated: round-trip, throughput, policies, kernels (default: all).")
    var only: String?

    @Flag(help: "Also print every throughput run to standard error.") var eachRun = false
    @Option(help: "Payload sizes in bytes, comma-separated (default: 64,1024,16384,65536).") var sizes: String?

    var payloadSizes: [Int] {
        sizes.map { $0.split(separator: ",").compactMap { Int($0) } } ?? [64, 1024, 16_384, 65_536]
    }

    func selected(_ section: String) -> Bool {
        only.map { $0.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == section } } ?? true
    }

    func run() throws {
        let peerPath =
            peer
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("aether-ipc-peer").path
        let peers = PeerLauncher(path: peerPath)
        print("## Shared-memory ring (\(Machine.summary))\n")
        print("CRC32 implementation: \(CRC32.selected.rawValue); ring capacity 1 MiB; wait policy standard ")
        print("(poll 50 µs with sched_yield, then futex) unless stated.\n")

        if selected("round-trip") { try roundTripTable(peers) }
        if selected("throughput") { try throughputTable(peers) }
        if selected("policies") { try policyTable(peers) }
        if selected("kernels") { kernelTable() }
    }

    func roundTripTable(_ peers: PeerLauncher) throws {
        print("### Cross-process round trip (ping-pong), \(roundTrips) round trips per size\n")
        print(
            "| payload | ring p50 | ring p99 | Unix socket p50 | Unix socket p99 | TCP loopback p50 | TCP loopback p99 | Unix socket / ring (p50) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for size in payloadSizes {
            let ring = try RoundTrip.ring(peers, size: size, count: roundTrips, policy: "standard", pause: nil)
            let unix = try RoundTrip.socket(peers, size: size, count: roundTrips, tcp: false)
            let tcp = try RoundTrip.socket(peers, size: size, count: roundTrips, tcp: true)
            print(
                "| \(bytes(size)) | \(micro(ring.p50)) | \(micro(ring.p99)) | \(micro(unix.p50)) | \(micro(unix.p99)) | "
                    + "\(micro(tcp.p50)) | \(micro(tcp.p99)) | \(String(format: "%.1f×", unix.p50 / ring.p50)) |")
        }
        print()
    }

    /// Each size is measured `repeats` times, ring and memcpy alternating, so that both see the
    /// same machine; a cell is "median (min–max)", the ratio is taken per pair. The cache-line
    /// round trip between the two cores, measured just before each ring run, shows where the
    /// hypervisor has placed the vCPUs (tens of ns: cores sharing an L3; hundreds: not).
    func throughputTable(_ peers: PeerLauncher) throws {
        print(
            "### One-way throughput, producer and consumer in two processes, \(seconds) s per size, "
                + "\(repeats) runs (median, min–max)\n")
        print(
            "| payload | ring messages/s | ring GB/s | memcpy GB/s (one process) | ring / memcpy | "
                + "core-to-core cache-line round trip |")
        print("|---|---|---|---|---|---|")
        for size in payloadSizes {
            var messages: [Double] = []
            var ringRates: [Double] = []
            var copyRates: [Double] = []
            var ratios: [Double] = []
            var lineTrips: [Double] = []
            for _ in 0..<max(1, repeats) {
                lineTrips.append(CoreToCore.roundTripNanoseconds())
                let ring = try Throughput.ring(peers, size: size, seconds: seconds)
                let copy = Throughput.memcpy(size: size, seconds: seconds)
                messages.append(ring.messagesPerSecond)
                ringRates.append(ring.gigabytesPerSecond)
                copyRates.append(copy)
                ratios.append(100 * ring.gigabytesPerSecond / copy)
                if eachRun {
                    let line = String(
                        format: "run %d B: ring %.2f GB/s, memcpy %.2f GB/s, %.0f%%, line round trip %.0f ns\n", size,
                        ring.gigabytesPerSecond, copy, ratios.last!, lineTrips.last!)
                    FileHandle.standardError.write(Data(line.utf8))
                }
            }
            print(
                "| \(bytes(size)) | \(spread(messages, "%.0f")) | \(spread(ringRates, "%.2f")) | "
                    + "\(spread(copyRates, "%.2f")) | \(spread(ratios, "%.0f", unit: "%")) | "
                    + "\(spread(lineTrips, "%.0f", unit: " ns")) |")
        }
        print()
    }

    /// What one 64 KiB write costs on one core, with the source in cache and the destination
    /// cycling through 1 MiB like the ring: why the producer copies and checksums in one pass.
    func kernelTable() {
        let implementation = CRC32.selected.rawValue
        print("### One core, 64 KiB per call, destination cycling through 1 MiB (median of \(max(1, repeats)) runs)\n")
        print("| operation | GB/s |")
        print("|---|---|")
        for kernel in Kernels.Operation.allCases {
            let rates = (0..<max(1, repeats)).map { _ in Kernels.rate(kernel, size: 65_536, seconds: seconds / 4) }
            print("| \(kernel.label(implementation)) | \(spread(rates, "%.2f")) |")
        }
        print()
    }

    func policyTable(_ peers: PeerLauncher) throws {
        let paced = 5000
        print("### Wait policies: 1 KiB round trips with 200 µs between requests, \(paced) round trips\n")
        print("| policy | p50 | p99 | CPU per round trip (both processes) |")
        print("|---|---|---|---|")
        for (name, label) in [
            ("standard", "poll 50 µs, then futex"), ("sleep", "futex at once"), ("poll", "poll only"),
        ] {
            let result = try RoundTrip.ring(peers, size: 1024, count: paced, policy: name, pause: .microseconds(200))
            print(
                "| \(label) | \(micro(result.p50)) | \(micro(result.p99)) | "
                    + "\(String(format: "%.1f µs", result.cpuMicrosecondsPerTrip)) |")
        }
        print()
    }
}

/// "median (min–max)" of `values`, or the single value.
func spread(_ values: [Double], _ format: String, unit: String = "") -> String {
    let sorted = values.sorted()
    let median = String(format: format, sorted[sorted.count / 2]) + unit
    guard sorted.count > 1 else { return median }
    return "\(median) (\(String(format: format, sorted[0]))–\(String(format: format, sorted[sorted.count - 1]))\(unit))"
}

func micro(_ nanoseconds: Double) -> String { String(format: "%.1f µs", nanoseconds / 1000) }
func bytes(_ size: Int) -> String { size >= 1024 ? "\(size / 1024) KiB" : "\(size) B" }

enum Machine {
    static var summary: String {
        let cpu =
            (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return "\(cpu), \(ProcessInfo.processInfo.activeProcessorCount) cores, Linux \(release)"
    }
}

/// CPU time of this process so far, in microseconds.
func selfCPUMicroseconds() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + usage.ru_utime.tv_usec + usage.ru_stime.tv_usec
}

func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// Starts `aether-ipc-peer` subcommands and reads their single result line.
struct PeerLauncher {
    let path: String

    final class Running {
        let process: Process
        let output: FileHandle
        init(process: Process, output: FileHandle) {
            self.process = process
            self.output = output
        }

        /// The next line the peer prints.
        func line() -> String {
            var bytes: [UInt8] = []
            while true {
                let chunk = output.readData(ofLength: 1)
                guard let byte = chunk.first, byte != UInt8(ascii: "\n") else { break }
                bytes.append(byte)
            }
            return String(decoding: bytes, as: UTF8.self)
        }

        /// Waits for exit and returns the value of `key=` in its last line.
        func finish(reading key: String) -> Int {
            let last = line()
            process.waitUntilExit()
            return last.split(separator: " ").first { $0.hasPrefix("\(key)=") }.flatMap {
                Int($0.dropFirst(key.count + 1))
            } ?? 0
        }
    }

    func start(_ arguments: [String]) throws -> Running {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        return Running(process: process, output: pipe.fileHandleForReading)
    }
}

struct Percentiles {
    let p50: Double
    let p99: Double
    let cpuMicrosecondsPerTrip: Double

    init(_ samples: [UInt64], cpuMicroseconds: Int = 0) {
        let sorted = samples.sorted()
        p50 = Double(sorted[sorted.count / 2])
        p99 = Double(sorted[min(sorted.count - 1, sorted.count * 99 / 100)])
        cpuMicrosecondsPerTrip = Double(cpuMicroseconds) / Double(samples.count)
    }
}

/// A fresh 1 MiB-per-ring region; `number` keeps names unique within the run.
func benchRegion(_ number: Int = Int(monotonicNanoseconds() % 1_000_000_000)) throws -> SharedMemoryRegion {
    try SharedMemoryRegion.create(name: "/aetherless-bench-\(getpid())-\(number)", ringCapacity: 1 << 20)
}

enum RoundTrip {
    static let warmUp = 2000

    /// Ping-pong through ring 0 (requests) and ring 1 (responses) with an echo peer process.
    static func ring(
        _ peers: PeerLauncher, size: Int, count: Int, policy: String, pause: Duration?
    ) throws -> Percentiles {
        let region = try benchRegion()
        defer { try? region.unlink() }
        let requests = region.producer(ring: 0)
        let responses = region.consumer(ring: 1)
        let waitPolicy: WaitPolicy = policy == "sleep" ? .sleepAtOnce : policy == "poll" ? .pollOnly : .standard
        requests.waitPolicy = waitPolicy
        responses.waitPolicy = waitPolicy
        let echo = try peers.start(["echo", "--shm", region.name, "--wait", policy])
        let message = [UInt8](repeating: 0xA5, count: size)
        var samples: [UInt64] = []
        samples.reserveCapacity(count)
        var cpuStart = 0
        for trip in 0..<(warmUp + count) {
            if trip == warmUp { cpuStart = selfCPUMicroseconds() }
            let start = monotonicNanoseconds()
            try requests.write(message)
            _ = try responses.read { $0.count }
            if trip >= warmUp { samples.append(monotonicNanoseconds() - start) }
            if let pause { sleepFor(pause) }
        }
        let clientCPU = selfCPUMicroseconds() - cpuStart
        try requests.write([])
        _ = try responses.read { $0.count }
        let peerCPU = echo.finish(reading: "cpu_us")
        // The peer's CPU includes its warm-up share; scale it to the measured trips.
        let measuredPeerCPU = peerCPU * count / (warmUp + count)
        return Percentiles(samples, cpuMicroseconds: clientCPU + measuredPeerCPU)
    }

    /// The same ping-pong over a stream socket with `[u32 length][payload]` framing.
    static func socket(_ peers: PeerLauncher, size: Int, count: Int, tcp: Bool) throws -> Percentiles {
        let path = "/tmp/aetherless-bench-\(getpid()).sock"
        let echo = try peers.start(tcp ? ["socket-echo", "--tcp", "0"] : ["socket-echo", "--unix", path])
        let ready = echo.line()
        let port = Int(ready.split(separator: "=").last ?? "") ?? 0
        let socket: OwnedDescriptor
        if tcp {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            socket = try connected(AF_INET, to: address, subject: "127.0.0.1:\(port)")
            var one: Int32 = 1
            setsockopt(socket.rawValue, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        } else {
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
            socket = try connected(AF_UNIX, to: address, subject: path)
        }
        let fd = socket.rawValue
        var frame = [UInt8](repeating: 0xA5, count: 4 + size)
        frame.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(size).littleEndian, as: UInt32.self) }
        var reply = [UInt8](repeating: 0, count: 4 + size)
        var samples: [UInt64] = []
        samples.reserveCapacity(count)
        for trip in 0..<(warmUp + count) {
            let start = monotonicNanoseconds()
            frame.withUnsafeBytes { _ = write(fd, $0.baseAddress!, $0.count) }
            _ = reply.withUnsafeMutableBytes { readFully(fd, $0.baseAddress!, $0.count) }
            if trip >= warmUp { samples.append(monotonicNanoseconds() - start) }
        }
        var end = UInt32(0)
        _ = write(fd, &end, 4)
        _ = readFully(fd, &end, 4)
        _ = echo.finish(reading: "count")
        return Percentiles(samples)
    }

    /// A stream socket of `family` connected to `address`.
    static func connected<Address>(
        _ family: CInt, to address: Address, subject: String
    ) throws(SystemCallFailure) -> OwnedDescriptor {
        let socket = try OwnedDescriptor("socket", on: subject) { Glibc.socket(family, Int32(SOCK_STREAM.rawValue), 0) }
        try systemCall("connect", on: subject, failsWith: .minusOne, retryOnInterrupt: false) {
            withUnsafePointer(to: address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(socket.rawValue, $0, socklen_t(MemoryLayout<Address>.size))
                }
            }
        }
        return socket
    }

    static func readFully(_ fd: Int32, _ pointer: UnsafeMutableRawPointer, _ count: Int) -> Bool {
        var done = 0
        while done < count {
            let result = read(fd, pointer + done, count - done)
            if result <= 0 { return false }
            done += result
        }
        return true
    }

    static func sleepFor(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        nanosleep(&request, nil)
    }
}

enum Throughput {
    struct Result {
        let messagesPerSecond: Double
        let gigabytesPerSecond: Double
    }

    /// This process writes `size`-byte messages for `seconds`; a sink process reads them in
    /// place (CRC checked) until an empty message.
    static func ring(_ peers: PeerLauncher, size: Int, seconds: Double) throws -> Result {
        let region = try benchRegion()
        defer { try? region.unlink() }
        let producer = region.producer(ring: 0)
        let sink = try peers.start(["sink", "--shm", region.name])
        let message = [UInt8](repeating: 0x5A, count: size)
        let start = monotonicNanoseconds()
        let end = start + UInt64(seconds * 1e9)
        var sent = 0
        while true {
            for _ in 0..<64 { try message.withUnsafeBytes { try producer.write($0) } }
            sent += 64
            if monotonicNanoseconds() >= end { break }
        }
        try producer.write([])
        let received = sink.finish(reading: "count")
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        precondition(received == sent, "sink received \(received) of \(sent)")
        return Result(
            messagesPerSecond: Double(sent) / elapsed, gigabytesPerSecond: Double(sent * size) / elapsed / 1e9)
    }

    /// memcpy of the same message sizes into a 1 MiB buffer, cycling through it like a ring.
    static func memcpy(size: Int, seconds: Double) -> Double {
        let capacity = 1 << 20
        let source = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        source.initializeMemory(as: UInt8.self, repeating: 0x5A, count: size)
        destination.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
        let start = monotonicNanoseconds()
        let end = start + UInt64(seconds * 1e9)
        var offset = 0
        var copied = 0
        while true {
            for _ in 0..<64 {
                if offset + size > capacity { offset = 0 }
                Glibc.memcpy(destination + offset, source, size)
                offset += (size + 7) & ~7
            }
            copied += 64 * size
            if monotonicNanoseconds() >= end { break }
        }
        return Double(copied) / (Double(monotonicNanoseconds() - start) / 1e9) / 1e9
    }
}

/// A cache line bounced between two threads (which the scheduler puts on different cores when
/// the machine is otherwise idle): the latency every cross-core handoff of ring data pays.
enum CoreToCore {
    final class Line: Sendable {
        let value = Atomic<Int>(0)
    }

    /// Mean round trip in nanoseconds over `trips` handoffs.
    static func roundTripNanoseconds(trips: Int = 20_000) -> Double {
        let line = Line()
        let echo = Thread {
            for trip in 1...trips {
                waitFor(line, 2 * trip - 1)
                line.value.store(2 * trip, ordering: .releasing)
            }
        }
        echo.start()
        waitFor(line, 0)
        let start = monotonicNanoseconds()
        for trip in 1...trips {
            line.value.store(2 * trip - 1, ordering: .releasing)
            waitFor(line, 2 * trip)
        }
        return Double(monotonicNanoseconds() - start) / Double(trips)
    }

    /// Spins until the line holds `value`, yielding now and then in case both threads share a core.
    private static func waitFor(_ line: Line, _ value: Int) {
        var spins = 0
        while line.value.load(ordering: .acquiring) != value {
            spins &+= 1
            if spins & 0xFFF == 0 { sched_yield() }
        }
    }
}

/// Single-core rates of the producer's per-record work. Source and ring buffer are page aligned,
/// so where the source starts in its page is set per row: glibc's memcpy (rep movsb for large
/// copies) runs ~20 times slower on this CPU when the destination is 8 to 24 bytes past the
/// source modulo 4 KiB, and ring records move 8 bytes further in the page each time.
enum Kernels {
    enum Operation: CaseIterable {
        case memcpyAligned, memcpyShortDistance, checksum, memcpyThenChecksum, memcpyThenChecksumPageAligned, fused

        func label(_ implementation: String) -> String {
            switch self {
            case .memcpyAligned:
                "memcpy, destination at the source's offset in the page (the throughput table's baseline)"
            case .memcpyShortDistance: "memcpy, destination 16 bytes past the source modulo 4 KiB"
            case .checksum: "CRC-32 (\(implementation)) of the source"
            case .memcpyThenChecksum:
                "memcpy into ring record positions, then CRC-32 of the copy (the producer's former two passes); "
                    + "source at page offset 2048"
            case .memcpyThenChecksumPageAligned:
                "the same with a page-aligned source: 3 of the 15 record positions per lap are 8-24 bytes past it"
            case .fused:
                "copy + CRC-32 in one pass into ring record positions (`CRC32.copy`, the producer now), "
                    + "page-aligned source"
            }
        }

        var sourceOffset: Int { self == .memcpyThenChecksum ? 2048 : 0 }
    }

    static func rate(_ operation: Operation, size: Int, seconds: Double) -> Double {
        let capacity = 1 << 20
        let page = 4096
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size + page, alignment: page)
        let ring = UnsafeMutableRawPointer.allocate(byteCount: capacity + page, alignment: page)
        defer {
            buffer.deallocate()
            ring.deallocate()
        }
        let source = buffer + operation.sourceOffset
        for index in 0..<size {
            source.storeBytes(of: UInt8(truncatingIfNeeded: index &* 131 &+ 7), toByteOffset: index, as: UInt8.self)
        }
        ring.initializeMemory(as: UInt8.self, repeating: 0, count: capacity + page)
        let input = UnsafeRawBufferPointer(start: source, count: size)
        let record = 8 + ((size + 7) & ~7)
        var position = 0
        var sink: UInt32 = 0
        let start = monotonicNanoseconds()
        let end = start + UInt64(seconds * 1e9)
        var done = 0
        while true {
            for _ in 0..<16 {
                switch operation {
                case .memcpyAligned, .memcpyShortDistance:
                    if position + size > capacity { position = 0 }
                    Glibc.memcpy(ring + position + (operation == .memcpyAligned ? 0 : 16), source, size)
                    position += (size + page - 1) & ~(page - 1)
                    continue
                default: break
                }
                // Ring positions: records back to back, none split across the end.
                if position % capacity + record > capacity { position += capacity - position % capacity }
                let payload = ring + position % capacity + 8
                switch operation {
                case .memcpyAligned, .memcpyShortDistance: break
                case .checksum: sink ^= CRC32.checksum(input)
                case .memcpyThenChecksum, .memcpyThenChecksumPageAligned:
                    Glibc.memcpy(payload, source, size)
                    sink ^= CRC32.checksum(UnsafeRawBufferPointer(start: payload, count: size))
                case .fused: sink ^= CRC32.copy(input, to: payload)
                }
                position += record
            }
            done += 16
            if monotonicNanoseconds() >= end { break }
        }
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        if sink == 0x1234_5678 { print("", terminator: "") }  // keeps the checksums alive
        return Double(done * size) / elapsed / 1e9
    }
}
