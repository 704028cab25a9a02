import AetherCore
import Foundation
import Testing

@testable import AetherOrchestrator

/// Real criu (installed by scripts/setup.sh), real processes, run as root.
@Suite(.serialized) struct CriuTests {
    let criu = Criu()

    /// A Python process that initialises state, connects to `socket`, reports READY with its
    /// socket's inode and its init token, then answers each line with what it knows.
    static let template = """
        import os, random, socket, sys
        TOKEN = random.getrandbits(64)            # state set during init
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sys.argv[1])
        s.sendall(f"READY {os.fstat(s.fileno()).st_ino}\\n".encode())
        f = s.makefile("rb")
        while True:
            line = f.readline()                   # the checkpoint happens while we wait here
            if not line:
                sys.exit(0)
            random.seed()                         # a restored copy must not share random state
            s.sendall(f"TOKEN {TOKEN} PID {os.getpid()} R {random.getrandbits(64)}\\n".encode())
        """

    struct Fixture {
        let folder: URL
        let images: String
        let listener: Int32
        let socketPath: String
    }

    func makeFixture() throws -> Fixture {
        let folder = URL(fileURLWithPath: "/dev/shm/aether-criu-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let images = folder.appendingPathComponent("image").path
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        try Data(Self.template.utf8).write(to: folder.appendingPathComponent("template.py"))
        let socketPath = folder.appendingPathComponent("s.sock").path
        let listener = try UnixSocket.listen(socketPath)
        return Fixture(folder: folder, images: images, listener: listener, socketPath: socketPath)
    }

    /// Starts the template in its own PID namespace, checkpoints it, returns what a restore
    /// needs and the init token.
    func checkpoint(_ fixture: Fixture) throws -> (template: RestoreSlot.Template, token: String) {
        let template = try SnapshotTemplate.start(
            program: "python3",
            arguments: [fixture.folder.appendingPathComponent("template.py").path, fixture.socketPath],
            environment: HandlerLaunch.inheritedEnvironment(), searchPath: true)
        let connection = try UnixSocket.accept(fixture.listener)
        defer { close(connection) }
        let ready = try UnixSocket.readLine(connection)
        let inode = try #require(ready.split(separator: " ").last.flatMap { UInt64($0) }, "\(ready)")
        // Ask once before the checkpoint, to learn the init token.
        try UnixSocket.write(connection, "ASK\n")
        let answer = try UnixSocket.readLine(connection)
        let token = String(answer.split(separator: " ")[1])
        #expect(answer.contains("PID 1 "), "the template is PID 1 of its namespace: \(answer)")
        _ = try criu.dump(pid: template.pid, into: fixture.images, externalUnixSockets: [inode])
        var status: CInt = 0
        waitpid(template.launcher.pid, &status, 0)
        let restoreTemplate = RestoreSlot.Template(
            directory: fixture.images, directoryDescriptor: open(fixture.images, O_RDONLY | O_DIRECTORY),
            controlInode: inode, stdoutInode: Self.inode(template.launcher.stdout.rawValue),
            stderrInode: Self.inode(template.launcher.stderr.rawValue))
        return (restoreTemplate, token)
    }

    static func inode(_ fd: Int32) -> UInt64 {
        var status = stat()
        fstat(fd, &status)
        return UInt64(status.st_ino)
    }

    @Test func versionAndCheck() throws {
        let version = try criu.version()
        #expect(version.hasPrefix("4."), "\(version)")
        #expect(try criu.check() == nil)
    }

    @Test func oneImageRestoresManyCopiesWithInitStateAndFreshRandomness() throws {
        try ChildSubreaper.enable()
        let fixture = try makeFixture()
        defer {
            close(fixture.listener)
            try? FileManager.default.removeItem(at: fixture.folder)
        }
        let (template, token) = try checkpoint(fixture)
        defer { close(template.directoryDescriptor) }

        var copies: [(pid: Int32, socket: Int32)] = []
        defer {
            for copy in copies {
                kill(copy.pid, SIGKILL)
                var status: CInt = 0
                waitpid(copy.pid, &status, 0)
                close(copy.socket)
            }
        }
        // Start all criu swrk processes first, as the orchestrator keeps them ready.
        let slots = try (0..<3).map { _ in try RestoreSlot.start(criu: criu, template: template) }
        for (index, slot) in slots.enumerated() {
            let restored = try slot.restore(
                template: template, logName: "restore-\(index)", budget: .seconds(5), begun: .now)
            // A copy of our end of its control connection: `restored`'s own descriptors (and the
            // copy's output pipes) close at the end of this iteration.
            copies.append((restored.pid, dup(restored.control.rawValue)))
        }
        var randoms: Set<String> = []
        for copy in copies {
            try UnixSocket.write(copy.socket, "ASK\n")
            let answer = try UnixSocket.readLine(copy.socket).split(separator: " ").map(String.init)
            #expect(answer[1] == token, "init state survives the restore")
            #expect(answer[3] == "1", "each copy is PID 1 of a fresh namespace")
            randoms.insert(answer[5])
        }
        #expect(randoms.count == copies.count, "reseeded after restore")
        #expect(Set(copies.map(\.pid)).count == copies.count)
    }

    @Test func restoreOverBudgetIsALatencyViolationAndLeavesNothing() throws {
        try ChildSubreaper.enable()
        let fixture = try makeFixture()
        defer {
            close(fixture.listener)
            try? FileManager.default.removeItem(at: fixture.folder)
        }
        let (template, _) = try checkpoint(fixture)
        defer { close(template.directoryDescriptor) }
        let slot = try RestoreSlot.start(criu: criu, template: template)
        // Keep a second handle on the copy's connection: when the late copy is killed, its
        // end closes and this one reads end-of-file.
        let watcher = dup(slot.control)
        defer { close(watcher) }
        do {
            _ = try slot.restore(template: template, logName: "slow", budget: .microseconds(100), begun: .now)
            Issue.record("a restore within 100 µs is impossible; expected latencyViolation")
        } catch .latencyViolation(let actual, let limit) {
            #expect(limit == .microseconds(100))
            #expect(actual > limit)
        } catch {
            Issue.record("expected latencyViolation, got \(error)")
        }
        var byte: UInt8 = 0
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(watcher, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        #expect(recv(watcher, &byte, 1, 0) == 0, "the late copy must be gone")
    }

    @Test func missingCriuAndBrokenImagesAreTypedErrors() throws {
        let missing = Criu(path: "/nonexistent/criu")
        #expect(throws: CriuError.notInstalled(path: "/nonexistent/criu")) { try missing.version() }
        let empty = URL(fileURLWithPath: "/dev/shm/aether-criu-empty-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let emptyTemplate = RestoreSlot.Template(
            directory: empty.path, directoryDescriptor: open(empty.path, O_RDONLY | O_DIRECTORY), controlInode: 1,
            stdoutInode: 2, stderrInode: 3)
        defer { close(emptyTemplate.directoryDescriptor) }
        do {
            let slot = try RestoreSlot.start(criu: criu, template: emptyTemplate)
            _ = try slot.restore(template: emptyTemplate, logName: "none", budget: .seconds(5), begun: .now)
            Issue.record("restoring an empty folder must fail")
        } catch .restoreFailed(let image, let log) {
            #expect(image == empty.path)
            #expect(!log.isEmpty)
        } catch {
            Issue.record("expected restoreFailed, got \(error)")
        }
        do {
            _ = try criu.dump(pid: 999_999, into: empty.path)
            Issue.record("dumping a missing process must fail")
        } catch .dumpFailed(let pid, let log) {
            #expect(pid == 999_999)
            #expect(!log.isEmpty)
        } catch {
            Issue.record("expected dumpFailed, got \(error)")
        }
    }
}

/// Blocking Unix-socket helpers for the tests.
enum UnixSocket {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func listen(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, Glibc.listen(fd, 8) == 0 else { throw Failure(description: "bind \(path): \(errno)") }
        return fd
    }

    static func accept(_ listener: Int32) throws -> Int32 {
        var poll = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&poll, 1, 10_000) == 1 else { throw Failure(description: "no connection within 10 s") }
        return Glibc.accept(listener, nil, nil)
    }

    static func write(_ fd: Int32, _ text: String) throws {
        let bytes = Array(text.utf8)
        guard send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else {
            throw Failure(description: "send: \(errno)")
        }
    }

    static func readLine(_ fd: Int32) throws -> String {
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while recv(fd, &byte, 1, 0) == 1 {
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        throw Failure(description: "connection closed after \(String(decoding: line, as: UTF8.self))")
    }
}
