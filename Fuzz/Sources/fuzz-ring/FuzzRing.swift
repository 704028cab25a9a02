import AetherIPC
import CFuzzerDriver

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// One libFuzzer input is what a hostile handler can write into its instance's region: the head,
// tail, poisoned, sequence and sleeping words of both rings and the data bytes of the request
// ring (whose consumer the handler is not, here: the orchestrator's own view is tested the same
// way on both sides). The consumer of ring 0 must read, skip or poison, the producer of ring 1
// must write, refuse or poison; neither may trap, hang or touch memory outside its data area.
//
// Offsets are docs/shm-layout.md's, written out here because the fuzzer sees only the public API.

private let capacity = 65_536
private let regionHeader = 64
private let ringHeader = 256
private let maximumPayload = capacity / 2 - 8

private enum Word {
    static let head = 0
    static let tail = 64
    static let poisoned = 72
    static let dataSequence = 128
    static let consumerSleeping = 132
    static let spaceSequence = 192
    static let producerSleeping = 196
}

/// The orchestrator's region and a second mapping of it, the handler's, made once per process.
private struct Fixture {
    let region: SharedMemoryRegion
    /// The handler's mapping, through which the input is written.
    let mapping: UnsafeMutableRawPointer
    /// The region's own mapping, which the rings read and write (found in /proc/self/maps), to
    /// check that every payload handed out or filled lies inside its ring's data area.
    let orchestratorMapping: UnsafeMutableRawPointer

    init() {
        let name = "/aetherless-fuzz-\(getpid())"
        region = try! SharedMemoryRegion.create(name: name, ringCapacity: capacity, ringCount: 2)
        let descriptor = shm_open(name, O_RDWR, 0)
        precondition(descriptor >= 0, "shm_open \(name): errno \(errno)")
        let pointer = mmap(nil, region.size, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
        precondition(pointer != MAP_FAILED, "mmap: errno \(errno)")
        close(descriptor)
        mapping = pointer!
        orchestratorMapping = Self.otherMapping(of: "/dev/shm" + name, besides: mapping)
        try! region.unlink()
    }

    func ring(_ index: Int, in base: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
        base + regionHeader + index * (ringHeader + capacity)
    }

    private static func otherMapping(of path: String, besides ours: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer
    {
        let file = fopen("/proc/self/maps", "r")!
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, CInt(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard text.contains(path), let dash = text.firstIndex(of: "-"),
                let start = UInt(text[..<dash], radix: 16), start != UInt(bitPattern: ours)
            else { continue }
            return UnsafeMutableRawPointer(bitPattern: start)!
        }
        preconditionFailure("no second mapping of \(path) in /proc/self/maps")
    }
}

nonisolated(unsafe) private let fixture = Fixture()

/// Reads the input front to back; past its end every field reads as zero.
private struct InputReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size where offset < bytes.count {
            value |= T(truncatingIfNeeded: bytes[offset]) << (8 * index)
            offset += 1
        }
        return value
    }

    mutating func rest(upTo count: Int) -> UnsafeRawBufferPointer {
        let taken = min(count, bytes.count - offset)
        defer { offset += taken }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + taken)])
    }
}

/// Head and tail words: raw when the mode bit says so, else near each other (where the fuzzer
/// finds readable records sooner), 8-byte aligned unless the alignment bit is set.
private func positions(_ input: inout InputReader, raw: Bool, unaligned: Bool) -> (head: UInt64, tail: UInt64) {
    var tail = input.integer(UInt64.self)
    var head = input.integer(UInt64.self)
    if !raw {
        tail %= 1 << 40
        head = tail + head % UInt64(2 * capacity + 64)
    }
    if !unaligned {
        tail &= ~7
        head &= ~7
    }
    return (head, tail)
}

private func store<T: FixedWidthInteger>(_ value: T, _ ring: UnsafeMutableRawPointer, _ offset: Int) {
    ring.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
}

private func load32(_ data: UnsafeMutableRawPointer, _ offset: Int) -> UInt32 {
    UInt32(littleEndian: data.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

/// Writes the right CRC into each record from `tail` on whose length fits, so inputs get past the
/// checksum and on to the next record.
private func fixChecksums(_ data: UnsafeMutableRawPointer, tail: UInt64, head: UInt64) {
    var position = tail
    for _ in 0..<64 where position < head && position >= tail {
        let offset = Int(position % UInt64(capacity))
        guard offset <= capacity - 8 else { return }
        let length = load32(data, offset)
        if length == 0xFFFF_FFFF {
            position &+= UInt64(capacity - offset)
            continue
        }
        let record = 8 + ((Int(length) + 7) & ~7)
        guard length <= maximumPayload, record <= capacity - offset else { return }
        let crc = CRC32.checksum(UnsafeRawBufferPointer(start: data + offset + 8, count: Int(length)))
        data.storeBytes(of: crc.littleEndian, toByteOffset: offset + 4, as: UInt32.self)
        position &+= UInt64(record)
    }
}

private func within(_ buffer: UnsafeRawBufferPointer, _ data: UnsafeMutableRawPointer) -> Bool {
    guard let start = buffer.baseAddress else { return buffer.isEmpty }
    return start >= UnsafeRawPointer(data) && start + buffer.count <= UnsafeRawPointer(data + capacity)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRing(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = InputReader(bytes: UnsafeRawBufferPointer(start: pointer, count: size))
    let requests = fixture.ring(0, in: fixture.mapping)
    let responses = fixture.ring(1, in: fixture.mapping)
    memset(requests, 0, 2 * (ringHeader + capacity))

    // Ring 0, read by the orchestrator's consumer.
    let mode = input.integer(UInt8.self)
    let (head, tail) = positions(&input, raw: mode & 1 != 0, unaligned: mode & 4 != 0)
    store(head, requests, Word.head)
    store(tail, requests, Word.tail)
    store(UInt32(mode >> 3 & 1), requests, Word.poisoned)
    store(input.integer(UInt32.self), requests, Word.dataSequence)
    store(input.integer(UInt32.self), requests, Word.consumerSleeping)
    store(input.integer(UInt32.self), requests, Word.spaceSequence)
    store(input.integer(UInt32.self), requests, Word.producerSleeping)
    let data = requests + ringHeader
    let consumerData = fixture.ring(0, in: fixture.orchestratorMapping) + ringHeader
    let records = input.rest(upTo: Int(input.integer(UInt16.self)))
    let start = Int(tail % UInt64(capacity))
    for (index, byte) in records.enumerated() {
        data.storeBytes(of: byte, toByteOffset: (start + index) % capacity, as: UInt8.self)
    }
    if mode & 16 != 0 { fixChecksums(data, tail: tail, head: head) }

    let consumer = fixture.region.consumer(ring: 0)
    reading: for _ in 0..<256 {
        do {
            let read = try consumer.tryRead { payload in
                precondition(within(payload, consumerData), "a payload outside the data area")
                precondition(payload.count <= maximumPayload)
                return payload.count
            }
            if read == nil { break }
        } catch .corruptedData {
            continue
        } catch .poisoned {
            precondition(requests.load(fromByteOffset: Word.poisoned, as: UInt32.self) != 0, "poisoned word not set")
            break reading
        } catch {
            preconditionFailure("tryRead threw \(error)")
        }
    }

    // Ring 1, written by the orchestrator's producer; tail and poisoned are the handler's words.
    let mode1 = input.integer(UInt8.self)
    let (head1, tail1) = positions(&input, raw: mode1 & 1 != 0, unaligned: mode1 & 4 != 0)
    store(head1, responses, Word.head)
    store(tail1, responses, Word.tail)
    store(UInt32(mode1 >> 3 & 1), responses, Word.poisoned)
    store(input.integer(UInt32.self), responses, Word.consumerSleeping)
    let producer = fixture.region.producer(ring: 1)
    let producerData = fixture.ring(1, in: fixture.orchestratorMapping) + ringHeader
    writing: for _ in 0..<16 {
        let length = Int(input.integer(UInt16.self))
        do {
            _ = try producer.tryWrite(length: length) { payload in
                precondition(within(UnsafeRawBufferPointer(payload), producerData), "a record outside the data area")
                return 0
            }
        } catch .messageTooLarge {
            precondition(length > maximumPayload)
        } catch .poisoned {
            break writing
        } catch {
            preconditionFailure("tryWrite threw \(error)")
        }
    }
    return 0
}

/// The program's entry point: SwiftPM links `main` to `fuzz_ring_main`, which runs libFuzzer's
/// driver over `fuzzRing`.
@_cdecl("fuzz_ring_main")
public func fuzzRingMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzRing)
}
