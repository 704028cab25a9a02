import AetherNet
import AetherSystem
import ArgumentParser
import CAetherSystem
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Measures how a TCP client reaches a server, side by side in one run, and prints Markdown
/// tables (BENCHMARKS.md): the server's socket bound to the port itself (direct); the port
/// steered by the data plane's sk_lookup program to a socket bound elsewhere (eBPF); a
/// userspace relay listening on the port and forwarding to a server of its own (what a proxy in
/// front of the functions costs); and a second direct server, an A/A control showing how far two
/// identical paths differ. Run through scripts/bench-dataplane.sh, inside a private network
/// namespace. All threads share one vCPU; the paths take turns in random order per sample.
@main
struct NetBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aether-net-bench",
        abstract: "eBPF dispatch vs direct binding vs a userspace relay (run through scripts/bench-dataplane.sh)."
    )

    @Option(help: "New connections per path.") var connections = 10_000
    @Option(name: .customLong("round-trips"), help: "Request round trips per path.") var roundTrips = 50_000
    @Option(help: "Request and response size in bytes.") var size = 64

    func run() throws {
        // Every thread runs on one vCPU, so all paths share one scheduling situation (no path's
        // server wins a quieter CPU, and no path pays cross-CPU wake-ups the others do not).
        CPU.pinCurrentThread(to: CPU.benchmark)
        let server = try EchoServer(address: "127.0.0.1", port: 0)
        let steeredSocket = try EchoServer(address: "127.0.0.1", port: 0)
        let steeredPort = try ListeningSocket.freePort(address: "127.0.0.1")
        let dataplane = try EbpfDataplane(listenAddress: "127.0.0.1", xdp: nil)
        defer { dataplane.close() }
        try dataplane.steer(
            port: steeredPort, function: "bench", socket: steeredSocket.descriptor, owner: getpid(), kind: .gateway)
        // The relay forwards to a server of its own, so the direct server does no extra work.
        let relayed = try EchoServer(address: "127.0.0.1", port: 0)
        let relay = try Relay(listenPort: 0, target: relayed.port)
        // The same as "direct" with another server: how far two identical paths differ here.
        let control = try EchoServer(address: "127.0.0.1", port: 0)

        let paths: [(name: String, port: UInt16)] = [
            ("direct (socket bound to the port)", server.port),
            ("eBPF sk_lookup dispatch", steeredPort),
            ("userspace relay", relay.port),
            ("direct, second server (control)", control.port),
        ]
        let payload = [UInt8](repeating: 0x61, count: size)
        var buffer = [UInt8](repeating: 0, count: size)
        // Warm-up: page in the code paths of all three.
        for path in paths {
            do {
                for _ in 0..<200 { _ = try connectionSetup(port: path.port, payload: payload, buffer: &buffer) }
            } catch {
                throw BenchmarkFailure(description: "\(path.name): \(error)")
            }
        }
        // The paths take turns sample by sample, in a new random order each time, so drift in the
        // machine's speed (other VMs, frequency) hits all of them alike and no path always
        // follows the same other one.
        var setup = [[Double]](repeating: [], count: paths.count)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<connections {
            for path in paths.indices.shuffled(using: &generator) {
                setup[path].append(try connectionSetup(port: paths[path].port, payload: payload, buffer: &buffer))
                settle()
            }
        }
        var request = [[Double]](repeating: [], count: paths.count)
        let open = try paths.map { try Socket.connect(port: $0.port) }
        defer { open.forEach { close($0) } }
        for _ in 0..<roundTrips {
            for path in paths.indices.shuffled(using: &generator) {
                let begin = DispatchTime.now().uptimeNanoseconds
                try Socket.exchange(open[path], payload, into: &buffer)
                request[path].append(Double(DispatchTime.now().uptimeNanoseconds - begin) / 1000)
            }
        }
        let status = dataplane.status().ports.first
        print(
            "aether-net-bench: \(connections) new connections and \(roundTrips) round trips per path, \(size)-byte messages, loopback in a private network namespace"
        )
        print("sk_lookup steered \(status?.steered ?? 0) connections, \(status?.steerFailures ?? 0) failures\n")
        printTable(
            title: "Connection setup: connect + \(size)-byte request/response + close, new connection each",
            samples: setup, paths: paths.map(\.name))
        print("")
        printTable(
            title: "Request round trip on an open connection (\(size) bytes each way)", samples: request,
            paths: paths.map(\.name))
    }

    func printTable(title: String, samples: [[Double]], paths: [String]) {
        print("\(title)\n")
        print("| path | p50 µs | p90 µs | p99 µs | mean µs | p50 vs direct |")
        print("|---|---|---|---|---|---|")
        let base = percentile(samples[0], 0.5)
        for (index, name) in paths.enumerated() {
            let values = samples[index]
            let p50 = percentile(values, 0.5)
            let mean = values.reduce(0, +) / Double(values.count)
            print(
                "| \(name) | \(f(p50)) | \(f(percentile(values, 0.9))) | \(f(percentile(values, 0.99))) | \(f(mean)) | \(String(format: "%.3f", p50 / base)) |"
            )
        }
    }

    func f(_ value: Double) -> String { String(format: "%.1f", value) }

    func percentile(_ values: [Double], _ fraction: Double) -> Double {
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
    }

    /// Lets the server threads (on the same vCPU) finish tearing down the last connection, so
    /// its cleanup is not timed as part of the next path's sample.
    func settle() {
        usleep(200)
    }

    /// Microseconds for one connection: connect, one exchange, close.
    func connectionSetup(port: UInt16, payload: [UInt8], buffer: inout [UInt8]) throws -> Double {
        let begin = DispatchTime.now().uptimeNanoseconds
        let connection = try Socket.connect(port: port)
        defer { Socket.closeWithReset(connection) }
        try Socket.exchange(connection, payload, into: &buffer)
        return Double(DispatchTime.now().uptimeNanoseconds - begin) / 1000
    }
}

struct BenchmarkFailure: Error, CustomStringConvertible {
    let description: String
}

enum Socket {
    /// A TCP connection to 127.0.0.1:`port`; the caller closes it (the poll loops and the
    /// per-path connections keep raw descriptors).
    static func connect(port: UInt16) throws(SystemCallFailure) -> CInt {
        let subject = "127.0.0.1:\(port)"
        let socket = try OwnedDescriptor("socket", on: subject) {
            Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        var one: Int32 = 1
        setsockopt(socket.rawValue, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        try systemCall("connect", on: subject, failsWith: .minusOne, retryOnInterrupt: false) {
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(socket.rawValue, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        return socket.take()
    }

    /// Closes without leaving a TIME_WAIT entry (SO_LINGER 0: the close sends RST). Thousands of
    /// TIME_WAIT entries make connect()'s ephemeral port search depend on the destination port,
    /// which showed as ±25% between two identical direct paths.
    static func closeWithReset(_ descriptor: CInt) {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
        close(descriptor)
    }

    /// Sends `payload`, reads as many bytes back.
    static func exchange(_ descriptor: CInt, _ payload: [UInt8], into buffer: inout [UInt8]) throws {
        let sent = try systemCall("send", on: "a connection", failsWith: .minusOne) {
            send(descriptor, payload, payload.count, Int32(MSG_NOSIGNAL))
        }
        guard sent == payload.count else {
            throw BenchmarkFailure(description: "send: \(sent) of \(payload.count) bytes sent")
        }
        try readFully(descriptor, into: &buffer, count: payload.count)
    }

    static func readFully(_ descriptor: CInt, into buffer: inout [UInt8], count: Int) throws {
        var received = 0
        while received < count {
            let read = buffer.withUnsafeMutableBytes {
                recv(descriptor, $0.baseAddress! + received, count - received, 0)
            }
            guard read > 0 else { throw BenchmarkFailure(description: "recv: connection closed") }
            received += read
        }
    }

}

/// Echoes whatever arrives: one thread, poll() over the listener and every connection.
struct EchoServer {
    let descriptor: CInt
    let port: UInt16

    init(address: String, port: UInt16) throws {
        let listener = try ListeningSocket.open(address: address, port: port)
        descriptor = listener
        self.port = ListeningSocket.localPort(of: listener) ?? 0
        Thread.detachNewThread {
            CPU.pinCurrentThread(to: CPU.benchmark)
            var connections: [CInt] = []
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                var polled = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
                polled += connections.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                guard poll(&polled, nfds_t(polled.count), -1) > 0 else { continue }
                for entry in polled.dropFirst() where entry.revents != 0 {
                    let read = buffer.withUnsafeMutableBytes { recv(entry.fd, $0.baseAddress, $0.count, 0) }
                    if read <= 0 || send(entry.fd, buffer, read, Int32(MSG_NOSIGNAL)) != read {
                        close(entry.fd)
                        connections.removeAll { $0 == entry.fd }
                    }
                }
                if polled[0].revents != 0 { connections += Socket.acceptAll(listener) }
            }
        }
    }
}

/// A userspace TCP relay listening on its own port and forwarding every connection to the
/// target: one thread, poll() over all connections (the shape of an event-loop proxy).
struct Relay {
    let port: UInt16

    init(listenPort: UInt16, target: UInt16) throws {
        let listener = try ListeningSocket.open(address: "127.0.0.1", port: listenPort)
        port = ListeningSocket.localPort(of: listener) ?? 0
        Thread.detachNewThread {
            CPU.pinCurrentThread(to: CPU.benchmark)
            var peer: [CInt: CInt] = [:]
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                var polled = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
                polled += peer.keys.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                guard poll(&polled, nfds_t(polled.count), -1) > 0 else { continue }
                for entry in polled.dropFirst() where entry.revents != 0 {
                    guard let other = peer[entry.fd] else { continue }
                    let read = buffer.withUnsafeMutableBytes { recv(entry.fd, $0.baseAddress, $0.count, 0) }
                    if read <= 0 || send(other, buffer, read, Int32(MSG_NOSIGNAL)) != read {
                        close(entry.fd)
                        close(other)
                        peer[entry.fd] = nil
                        peer[other] = nil
                    }
                }
                if polled[0].revents != 0 {
                    for client in Socket.acceptAll(listener) {
                        guard let upstream = try? Socket.connect(port: target) else {
                            close(client)
                            continue
                        }
                        peer[client] = upstream
                        peer[upstream] = client
                    }
                }
            }
        }
    }
}

extension Socket {
    /// Every connection waiting on a non-blocking listener.
    static func acceptAll(_ listener: CInt) -> [CInt] {
        var accepted: [CInt] = []
        while true {
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return accepted }
            var one: Int32 = 1
            setsockopt(connection, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            accepted.append(connection)
        }
    }
}

enum CPU {
    /// The vCPU every thread of the benchmark runs on.
    static let benchmark = 0

    static func pinCurrentThread(to cpu: Int) {
        _ = aether_pin_thread(Int32(cpu))
    }
}
