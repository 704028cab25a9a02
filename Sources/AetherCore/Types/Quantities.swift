/// A TCP port a function is triggered on: 1...65535.
public struct Port: BoundedInteger {
    package static let quantityName = "port"
    package static let allowedRange: ClosedRange<UInt16> = 1...65535
    public let rawValue: UInt16
    package init(uncheckedRawValue: UInt16) { rawValue = uncheckedRawValue }
}

/// A function's memory limit in MiB: 1...16384.
public struct MemoryLimit: BoundedInteger {
    package static let quantityName = "memory limit"
    package static let allowedRange: ClosedRange<Int> = 1...16384
    package static let unit = "MiB"
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }

    public var megabytes: Int { rawValue }
    public var bytes: Int { rawValue * 1024 * 1024 }
}

/// How long one invocation of a function may run, in milliseconds: 1...900000 (15 minutes).
public struct FunctionTimeout: BoundedInteger {
    package static let quantityName = "function timeout"
    package static let allowedRange: ClosedRange<Int> = 1...900_000
    package static let unit = "ms"
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }

    public var milliseconds: Int { rawValue }
    public var duration: Duration { .milliseconds(rawValue) }
}

/// The latency budget of one snapshot restore, in milliseconds: 1...100 (the seed's rule is 15).
public struct RestoreTimeout: BoundedInteger {
    package static let quantityName = "restore timeout"
    package static let allowedRange: ClosedRange<Int> = 1...100
    package static let unit = "ms"
    public static let standard = RestoreTimeout(uncheckedRawValue: 15)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }

    public var milliseconds: Int { rawValue }
    public var duration: Duration { .milliseconds(rawValue) }
}

/// The data capacity of each shared-memory ring, in bytes: 64 KiB...1 GiB, a multiple of the
/// 4096-byte page so that ring offsets stay page-aligned.
public struct ShmBufferSize: BoundedInteger {
    package static let quantityName = "shared-memory buffer size"
    package static let allowedRange: ClosedRange<Int> = 65_536...1_073_741_824
    package static let unit = "bytes"
    package static let extraRule: (test: @Sendable (Int) -> Bool, wording: String)? = (
        { $0 % 4096 == 0 }, "a multiple of 4096"
    )
    public static let standard = ShmBufferSize(uncheckedRawValue: 4_194_304)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }

    public var bytes: Int { rawValue }
}

/// How many restored, idle instances the orchestrator keeps ready in total: 1...1000.
public struct WarmPoolSize: BoundedInteger {
    package static let quantityName = "warm pool size"
    package static let allowedRange: ClosedRange<Int> = 1...1000
    public static let standard = WarmPoolSize(uncheckedRawValue: 10)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }
}
