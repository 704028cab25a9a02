import Glibc
import Testing

@testable import AetherSystem

@Suite struct SystemCallTests {
    @Test func minusOneReportsTheCallItsSubjectAndErrno() {
        #expect(
            throws: SystemCallFailure(call: "open", subject: "/nonexistent/file", errno: ENOENT)
        ) {
            try systemCall("open", on: "/nonexistent/file", failsWith: .minusOne) {
                open("/nonexistent/file", O_RDONLY | O_CLOEXEC)
            }
        }
    }

    @Test func anInterruptedCallIsMadeAgain() throws {
        var attempts = 0
        let value = try systemCall("read", on: "a test", failsWith: .minusOne) { () -> Int in
            attempts += 1
            if attempts < 3 {
                errno = EINTR
                return -1
            }
            return 42
        }
        #expect(value == 42 && attempts == 3)
    }

    @Test func anInterruptedCallCanBeReportedInstead() {
        var attempts = 0
        #expect(throws: SystemCallFailure(call: "connect", subject: "a test", errno: EINTR)) {
            try systemCall("connect", on: "a test", failsWith: .minusOne, retryOnInterrupt: false) { () -> CInt in
                attempts += 1
                errno = EINTR
                return -1
            }
        }
        #expect(attempts == 1)
    }

    @Test func errnoReturnedAndNegatedErrnoConventions() throws {
        #expect(throws: SystemCallFailure(call: "posix_spawn", subject: "x", errno: ENOEXEC)) {
            try systemCall("posix_spawn", on: "x", failsWith: .errnoReturned) { ENOEXEC }
        }
        #expect(try systemCall("pthread_create", on: "x", failsWith: .errnoReturned) { CInt(0) } == 0)
        #expect(throws: SystemCallFailure(call: "bpf_link_create", subject: "x", errno: EBUSY)) {
            try systemCall("bpf_link_create", on: "x", failsWith: .negatedErrno) { -EBUSY }
        }
        #expect(try systemCall("bpf_link_create", on: "x", failsWith: .negatedErrno) { CInt(7) } == 7)
    }

    @Test func pointerConventions() throws {
        #expect(throws: SystemCallFailure(call: "opendir", subject: "/nonexistent", errno: ENOENT)) {
            try systemCall("opendir", on: "/nonexistent", failsWith: .null) { opendir("/nonexistent") }
        }
        let directory = try systemCall("opendir", on: "/", failsWith: .null) { opendir("/") }
        closedir(directory)
        #expect(throws: SystemCallFailure(call: "mmap", subject: "nothing", errno: EBADF)) {
            try systemCall("mmap", on: "nothing", failsWith: .mapFailed) {
                mmap(nil, 4096, PROT_READ, MAP_SHARED, -1, 0)
            }
        }
    }

    @Test func theDescriptionNamesCallSubjectAndTheCLibrarySentence() {
        let failure = SystemCallFailure(call: "shm_open", subject: "/aetherless-x-0", errno: EEXIST)
        #expect(failure.reason == "File exists")
        #expect(failure.description == "shm_open(/aetherless-x-0) failed: File exists (errno 17)")
    }
}

@Suite struct OwnedDescriptorTests {
    /// A pipe whose write end is the descriptor under test: its read end sees end-of-file once
    /// that write end is closed, and only then. (Checking the number itself with fcntl races
    /// with the other tests, which run in parallel and may be handed the number at once.)
    private struct Pipe {
        let read: CInt
        let write: CInt

        init() {
            var ends: [CInt] = [-1, -1]
            precondition(pipe(&ends) == 0, "pipe failed")
            (read, write) = (ends[0], ends[1])
            precondition(fcntl(read, F_SETFL, O_NONBLOCK) == 0, "fcntl failed")
        }

        /// True once every write end is closed (a read returns 0), false while one is open (EAGAIN).
        var writeEndClosed: Bool {
            var byte: UInt8 = 0
            return Glibc.read(read, &byte, 1) == 0
        }
    }

    @Test func closesWhenItGoesAway() throws {
        let ends = Pipe()
        defer { close(ends.read) }
        do {
            let owned = OwnedDescriptor(owning: ends.write)
            #expect(owned.rawValue == ends.write)
            #expect(!ends.writeEndClosed)
        }
        #expect(ends.writeEndClosed)
    }

    @Test func closeClosesNow() throws {
        let ends = Pipe()
        defer { close(ends.read) }
        let owned = OwnedDescriptor(owning: ends.write)
        owned.close()
        #expect(ends.writeEndClosed)
    }

    @Test func takeHandsOwnershipOn() throws {
        let ends = Pipe()
        defer { close(ends.read) }
        let raw = OwnedDescriptor(owning: ends.write).take()
        #expect(raw == ends.write)
        #expect(!ends.writeEndClosed, "taken, not closed")
        OwnedDescriptor(owning: raw).close()
        #expect(ends.writeEndClosed)
    }

    @Test func opensWhatItIsAskedTo() throws {
        let file = try OwnedDescriptor.open("/dev/null", O_RDONLY | O_CLOEXEC)
        #expect(fcntl(file.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        file.close()
    }

    @Test func aFailedOpenIsTheCallsFailure() {
        #expect(throws: SystemCallFailure(call: "open", subject: "/nonexistent/x", errno: ENOENT)) {
            try OwnedDescriptor.open("/nonexistent/x", O_RDONLY | O_CLOEXEC).close()
        }
    }
}

@Suite struct PosixTests {
    @Test func readsSmallFilesAndListsFolders() throws {
        let folder = "/tmp/aether-system-test-\(getpid())"
        mkdir(folder, 0o700)
        defer { rmdir(folder) }
        let path = folder + "/file"
        let file = try OwnedDescriptor.open(path, O_WRONLY | O_CREAT | O_CLOEXEC, mode: 0o600)
        _ = write(file.rawValue, "hello\n", 6)
        file.close()
        defer { unlink(path) }
        #expect(Posix.readFile(path) == "hello\n")
        #expect(Posix.readFile(folder + "/missing") == nil)
        #expect(Posix.entries(of: folder)?.map(\.name) == ["file"])
        #expect(Posix.entries(of: folder + "/missing") == nil)
    }

    @Test func connectingToNoSocketIsAFailure() {
        #expect(throws: SystemCallFailure(call: "connect", subject: "/nonexistent/socket", errno: ENOENT)) {
            try Posix.connectUnixSocket("/nonexistent/socket")
        }
    }
}
