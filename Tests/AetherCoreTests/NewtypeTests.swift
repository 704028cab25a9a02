import Testing

@testable import AetherCore

@Suite struct NewtypeTests {
    @Test func portBounds() throws {
        #expect(throws: InvalidValueError.self) { try Port(exactly: 0) }
        #expect(try Port(exactly: 1).rawValue == 1)
        #expect(try Port(exactly: 65535).rawValue == 65535)
        #expect(throws: InvalidValueError.self) { try Port(exactly: 65536) }
        #expect(throws: InvalidValueError.self) { try Port(exactly: -1) }
    }

    @Test func memoryLimitBoundsAndUnits() throws {
        #expect(throws: InvalidValueError.self) { try MemoryLimit(0) }
        #expect(try MemoryLimit(1).bytes == 1_048_576)
        #expect(try MemoryLimit(16384).megabytes == 16384)
        #expect(throws: InvalidValueError.self) { try MemoryLimit(16385) }
    }

    @Test func timeoutsBounds() throws {
        #expect(throws: InvalidValueError.self) { try FunctionTimeout(0) }
        #expect(try FunctionTimeout(900_000).duration == .seconds(900))
        #expect(throws: InvalidValueError.self) { try FunctionTimeout(900_001) }
        #expect(throws: InvalidValueError.self) { try RestoreTimeout(0) }
        #expect(try RestoreTimeout(100).milliseconds == 100)
        #expect(throws: InvalidValueError.self) { try RestoreTimeout(101) }
        #expect(RestoreTimeout.standard.milliseconds == 15)
    }

    @Test func shmBufferSizeNeedsRangeAndPageMultiple() throws {
        #expect(throws: InvalidValueError.self) { try ShmBufferSize(61_440) }
        #expect(try ShmBufferSize(65_536).bytes == 65_536)
        #expect(try ShmBufferSize(1_073_741_824).bytes == 1_073_741_824)
        #expect(throws: InvalidValueError.self) { try ShmBufferSize(1_073_745_920) }
        let error = #expect(throws: InvalidValueError.self) { try ShmBufferSize(70_000) }
        #expect(error?.expected == "an integer in 65536...1073741824 bytes, a multiple of 4096")
        #expect(error?.value == "70000")
    }

    @Test func warmPoolBounds() throws {
        // 0: no pool.
        #expect(throws: InvalidValueError.self) { try WarmPoolSize(-1) }
        #expect(try WarmPoolSize(0).rawValue == 0)
        #expect(try WarmPoolSize(1000).rawValue == 1000)
        #expect(throws: InvalidValueError.self) { try WarmPoolSize(1001) }
    }

    @Test(arguments: ["a", "0", "hello-world", "a_b-c9", String(repeating: "x", count: 63)])
    func validFunctionIDs(_ text: String) throws {
        #expect(try FunctionID(text).rawValue == text)
    }

    @Test(arguments: ["", "-a", "_a", "Hello", "a b", "a.b", "a/b", "é", String(repeating: "x", count: 64)])
    func invalidFunctionIDs(_ text: String) {
        let error = #expect(throws: InvalidValueError.self) { try FunctionID(text) }
        #expect(error?.what == "function id")
        #expect(error?.value == "\"\(text)\"")
    }

    @Test func errorDescriptionsNameTheValues() {
        let error = #expect(throws: InvalidValueError.self) { try Port(exactly: 70000) }
        #expect(error?.description == "invalid port 70000: expected an integer in 1...65535")
    }
}
