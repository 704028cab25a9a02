import AetherIPC
import AetherSystem
import CAetherSystem
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The Swift handler runtime (docs/handler-protocol.md): connects to the orchestrator, attaches
/// to the instance's rings and serves requests with your closure.
///
/// ```swift
/// import AetherHandler
///
/// @main struct Hello {
///     static func main() {
///         AetherHandler.run { request in
///             .json(["hello": request.query["name"] ?? "world"])
///         }
///     }
/// }
/// ```
/// A thrown `HTTPError` becomes its status; any other error becomes a 500 (logged to stderr)
/// and the instance keeps serving.
public enum AetherHandler {
    public typealias Handler = @Sendable (HandlerRequest) throws -> HandlerResponse

    /// Serves until the orchestrator goes away; never returns.
    public static func run(_ handler: @escaping Handler) -> Never {
        do {
            let session = try Session.attach()
            session.serve(handler)
        } catch {
            logError("\(error)")
            exit(1)
        }
    }

    struct StartupError: Error, CustomStringConvertible {
        let description: String
    }

    /// The connection to the orchestrator and the instance's rings, for the life of the process
    /// (`control` is never closed: the process ends first).
    final class Session: @unchecked Sendable {
        let control: CInt
        let region: SharedMemoryRegion
        let requests: RingConsumer
        let responses: RingProducer

        private init(control: CInt, region: SharedMemoryRegion, bell: EventBell) {
            self.control = control
            self.region = region
            requests = region.consumer(ring: 0)
            // The orchestrator reads responses on its event loops: it waits for this eventfd in
            // epoll, not on the futex (docs/shm-layout.md, "Bell").
            responses = region.producer(ring: 1, bell: bell)
            // A short poll for the next request: on two vCPUs a handler polling 50 µs takes the
            // CPU the gateway needs to send it (BENCHMARKS.md, 2026-12-02: c=16 +26% req/s).
            requests.waitPolicy = .briefly
        }

        static func attach() throws -> Session {
            var fd: CInt
            if let inherited = getenv("AETHER_CONTROL_FD").flatMap({ CInt(String(cString: $0)) }) {
                // A snapshot template: the connection is a descriptor criu replaces in each copy.
                fd = inherited
            } else if let socketPath = getenv("AETHER_SOCKET").map({ String(cString: $0) }) {
                fd = try connect(socketPath)
            } else {
                throw StartupError(description: "AETHER_SOCKET is not set: this program is started by `aether up`")
            }
            try send(fd, "READY\n")
            var passed: [CInt] = []
            var line = try readLine(fd, passed: &passed)
            if line == "CHECKPOINT" {
                // Coordinated checkpoint: nothing is mapped and no thread runs yet; criu dumps us
                // (snapshot: criu) or forks us (snapshot: fork) while we wait, and each copy reads
                // its ATTACH from a fresh connection. (Swift's random generator reads the kernel
                // each time: no state to reseed.)
                let threads = threadCount()
                guard threads == 1 else {
                    let text =
                        "\(threads) threads are running at CHECKPOINT: a snapshot template must be single-threaded (criu and fork copy only the calling thread's state safely); start threads after the first request, or use snapshot: false"
                    try? send(fd, "ERROR \(text)\n")
                    throw StartupError(description: text)
                }
                try send(fd, "FROZEN\n")
                line = try readLine(fd, passed: &passed)
                while line == "FORK" {
                    // snapshot: fork: the parent stays the template; the child goes on as a new
                    // instance on the connection FORK passed.
                    if let child = try forkCopy(control: fd, passed: passed) { fd = child }
                    passed = []
                    line = try readLine(fd, passed: &passed)
                }
            }
            guard line.hasPrefix("ATTACH ") else {
                throw StartupError(description: "expected ATTACH from the orchestrator, got \(line)")
            }
            let name = String(line.dropFirst("ATTACH ".count))
            // ATTACH carries the response bell and the region (confined handlers see no shared
            // /dev/shm), the region last.
            guard passed.count == 2 else {
                passed.forEach { close($0) }
                let text =
                    "ATTACH carried \(passed.count) descriptor\(passed.count == 1 ? "" : "s"); expected 2 (the response bell and the region)"
                try? send(fd, "ERROR \(text)\n")
                throw StartupError(description: text)
            }
            let (bell, regionDescriptor) = (EventBell(owning: passed[0]), passed[1])
            let region: SharedMemoryRegion
            do {
                region = try SharedMemoryRegion.open(descriptor: regionDescriptor, name: name)
            } catch {
                try? send(fd, "ERROR \(error)\n")
                throw error
            }
            // "bell": it rings the bell (docs/handler-protocol.md).
            try send(fd, "ATTACHED bell\n")
            return Session(control: fd, region: region, bell: bell)
        }

        func serve(_ handler: @escaping Handler) -> Never {
            // The orchestrator closing our connection means it is gone: so are we.
            let control = control
            BackgroundThread.start(name: "aether-control") {
                var byte: UInt8 = 0
                while true {
                    let received = try? systemCall("recv", on: "the control connection", failsWith: .minusOne) {
                        recv(control, &byte, 1, 0)
                    }
                    if (received ?? 0) == 0 { exit(0) }
                }
            }
            while true {
                do {
                    let request = try requests.read { bytes in
                        Result { () throws(InvocationFormatError) in try InvocationRequest.decode(bytes) }
                    }
                    switch request {
                    case .success(let request):
                        respond(to: request, with: handler)
                    case .failure(let error):
                        logError("\(error)")
                        if let id = error.requestID {
                            write(
                                InvocationResponse(id: id, status: 400, body: Array("malformed request message".utf8)))
                        }
                    }
                } catch {
                    logError("request ring: \(error)")
                    if case .poisoned = error { exit(1) }
                }
            }
        }

        private func respond(to request: InvocationRequest, with handler: Handler) {
            var response: HandlerResponse
            do {
                response = try handler(HandlerRequest(request))
            } catch let error as HTTPError {
                response = .json(["error": error.message], status: error.status)
            } catch {
                logError("handler failed on \(request.method) \(request.target): \(error)")
                response = .json(["error": "internal error"], status: 500)
            }
            if !(100...599).contains(response.status) {
                logError("handler returned status \(response.status), answering 500")
                response = .json(["error": "handler returned an invalid status"], status: 500)
            }
            var message = InvocationResponse(
                id: request.id, status: UInt16(response.status),
                headers: response.headers.map { InvocationHeader(name: $0.name, value: $0.value) }, body: response.body)
            if message.encodedSize() > responses.maximumPayload {
                let text =
                    "response of \(message.encodedSize()) bytes does not fit the ring's \(responses.maximumPayload)"
                logError("\(text)")
                message = InvocationResponse(id: request.id, status: 500, body: Array(text.utf8))
            }
            write(message)
        }

        private func write(_ message: InvocationResponse) {
            do {
                try responses.write(length: message.encodedSize()) { message.encode(into: $0) }
            } catch {
                logError("response ring: \(error)")
                exit(1)
            }
        }

        /// Threads of this process, as the kernel counts them.
        private static func threadCount() -> Int {
            let status = Posix.readFile("/proc/self/status")
            let line = status?.split(separator: "\n").first { $0.hasPrefix("Threads:") }
            return line.flatMap { Int($0.dropFirst("Threads:".count).trimmingPrefix(while: \.isWhitespace)) } ?? 1
        }

        nonisolated(unsafe) private static var templatePrepared = false

        /// `FORK` with the copy's control connection, stdout and stderr: forks. Returns nil in the
        /// template, the copy's connection in the child (after it sent `FORKED`: the orchestrator
        /// learns its PID from the message's credentials and moves it into its own cgroups before
        /// it sends ATTACH).
        private static func forkCopy(control: CInt, passed: [CInt]) throws -> CInt? {
            guard passed.count == 3 else {
                passed.forEach { close($0) }
                throw StartupError(
                    description: "FORK carries 3 descriptors (control, stdout, stderr), got \(passed.count)")
            }
            if !templatePrepared {
                // Copies are non-dumpable (their /proc/PID/mem is closed to each other, same uid
                // as they are), and the kernel reaps them: the template never waits for a copy.
                aether_make_not_dumpable()
                signal(SIGCHLD, SIG_IGN)
                templatePrepared = true
            }
            let pid = fork()
            guard pid == 0 else {
                passed.forEach { close($0) }
                if pid < 0 { throw StartupError(description: "fork: \(String(cString: strerror(errno)))") }
                return nil
            }
            if let flag = getenv("AETHER_COPY_PID_NAMESPACE"), String(cString: flag) == "1" {
                enterPIDNamespace(control: passed[0])
            }
            signal(SIGCHLD, SIG_DFL)
            setsid()
            dup2(passed[1], 1)
            dup2(passed[2], 2)
            close(passed[1])
            close(passed[2])
            close(control)
            try send(passed[0], "FORKED\n")
            return passed[0]
        }

        /// In a fork template's child, confined: makes the copy PID 1 of a PID namespace of its
        /// own (the template's user namespace lets it: `aether-sandbox --fork-template`). This
        /// child forks the copy into it and exits; the copy, the template's child again (it is
        /// PID 1 of its namespace), drops every capability before anything else runs. A copy
        /// that cannot have its namespace says why on its connection and ends: never a copy
        /// sharing its siblings' namespace.
        private static func enterPIDNamespace(control: CInt) {
            func refuse(_ what: String) -> Never {
                try? send(control, "ERROR \(what): \(String(cString: strerror(errno)))\n")
                _exit(1)
            }
            if aether_unshare_pid_namespace() != 0 { refuse("unshare(CLONE_NEWPID) for the copy") }
            let copy = fork()
            if copy < 0 { refuse("fork into the copy's PID namespace") }
            if copy > 0 { _exit(0) }
            if aether_drop_all_capabilities() != 0 { refuse("dropping the copy's capabilities") }
        }

        private static func connect(_ path: String) throws -> CInt {
            do {
                return try Posix.connectUnixSocket(path)
            } catch {
                throw StartupError(description: "cannot connect to AETHER_SOCKET \(path): \(error.reason)")
            }
        }

        private static func send(_ fd: CInt, _ text: String) throws {
            do {
                try ControlLine.write(fd, text)
            } catch {
                throw StartupError(description: "AETHER_SOCKET: \(error.description)")
            }
        }

        private static func readLine(_ fd: CInt, passed: inout [CInt]) throws -> String {
            do {
                return try ControlLine.read(fd, timeout: nil, passed: &passed)
            } catch {
                throw StartupError(description: "AETHER_SOCKET during the handshake: \(error.description)")
            }
        }
    }
}

/// One line on stderr, which the orchestrator keeps in the function's log (`aether logs ID`).
func logError(_ text: String) {
    let line = Array("aetherless: \(text)\n".utf8)
    line.withUnsafeBytes { _ = Glibc.write(2, $0.baseAddress, $0.count) }
}
