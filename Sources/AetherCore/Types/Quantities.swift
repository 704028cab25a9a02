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

/// The warm pool: copies of snapshot functions started ahead of demand, in total: 0...1000.
public struct WarmPoolSize: BoundedInteger {
    package static let quantityName = "warm pool size"
    /// 0: no copies are started ahead of demand (and no `min_warm` for snapshot functions).
    package static let allowedRange: ClosedRange<Int> = 0...1000
    public static let standard = WarmPoolSize(uncheckedRawValue: 10)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }
}

/// How many versions of each function are kept (`keep_versions`), for `aether versions` and
/// `aether rollback`: 1...1000, default 10. The running version is always among them.
public struct KeptVersions: BoundedInteger {
    package static let quantityName = "kept versions"
    package static let allowedRange: ClosedRange<Int> = 1...1000
    public static let standard = KeptVersions(uncheckedRawValue: 10)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }
}

/// Memory the warm pool's waiting copies may take in all (each counted at its function's
/// `memory_limit_mb`): 1 MiB ... 1 TiB, default 2048 MiB (the default pool of 10 copies at the
/// default 128 MiB fits).
public struct WarmPoolMemory: BoundedInteger {
    package static let quantityName = "warm pool memory"
    package static let allowedRange: ClosedRange<Int> = 1...1_048_576
    package static let unit = "MiB"
    public static let standard = WarmPoolMemory(uncheckedRawValue: 2048)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }
    public var bytes: Int { rawValue * 1_048_576 }
}

/// How many instances of one function may run at once: 1...64.
public struct InstanceLimit: BoundedInteger {
    package static let quantityName = "instance limit"
    package static let allowedRange: ClosedRange<Int> = 1...64
    public static let standard = InstanceLimit(uncheckedRawValue: 2)
    public static let one = InstanceLimit(uncheckedRawValue: 1)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }
}

/// Requests one instance may have in flight at once: 1...1024.
public struct Concurrency: BoundedInteger {
    package static let quantityName = "concurrency"
    package static let allowedRange: ClosedRange<Int> = 1...1024
    public static let standard = Concurrency(uncheckedRawValue: 1)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }
}

/// Requests that may wait for a free instance before new ones get 429: 0...100000.
public struct QueueLimit: BoundedInteger {
    package static let quantityName = "queue limit"
    package static let allowedRange: ClosedRange<Int> = 0...100_000
    public static let standard = QueueLimit(uncheckedRawValue: 64)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }
}

/// The largest request body the gateway accepts for a function, in bytes: 0...512 MiB.
/// It must also fit in one ring message (see `AetherConfig` validation).
public struct BodyLimit: BoundedInteger {
    package static let quantityName = "request body limit"
    package static let allowedRange: ClosedRange<Int> = 0...536_870_912
    package static let unit = "bytes"
    public static let standard = BodyLimit(uncheckedRawValue: 1_048_576)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }

    public var bytes: Int { rawValue }
}

/// How long a new handler instance may take to report READY, in milliseconds: 1...600000.
public struct StartupTimeout: BoundedInteger {
    package static let quantityName = "startup timeout"
    package static let allowedRange: ClosedRange<Int> = 1...600_000
    package static let unit = "ms"
    public static let standard = StartupTimeout(uncheckedRawValue: 10_000)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }

    public var duration: Duration { .milliseconds(rawValue) }
}

/// How long the gateway waits for a client, in milliseconds: 100...3600000. A request not
/// received completely within it gets 408, and a keep-alive connection idle for it is closed.
public struct ClientTimeout: BoundedInteger {
    package static let quantityName = "client timeout"
    package static let allowedRange: ClosedRange<Int> = 100...3_600_000
    package static let unit = "ms"
    public static let standard = ClientTimeout(uncheckedRawValue: 30_000)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }

    public var milliseconds: Int { rawValue }
}

/// Instances of a function kept running while idle: 0...64 (0 = scale to zero).
public struct WarmCount: BoundedInteger {
    package static let quantityName = "warm instance count"
    package static let allowedRange: ClosedRange<Int> = 0...64
    public static let standard = WarmCount(uncheckedRawValue: 1)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }
}

/// How long an instance may sit idle before it is stopped (down to `min_warm`), in
/// milliseconds: 100...86400000.
public struct IdleTimeout: BoundedInteger {
    package static let quantityName = "idle timeout"
    package static let allowedRange: ClosedRange<Int> = 100...86_400_000
    package static let unit = "ms"
    public static let standard = IdleTimeout(uncheckedRawValue: 30_000)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }

    public var milliseconds: Int { rawValue }
}
