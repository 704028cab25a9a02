// The values of the confinement settings (issue 14): who a handler runs as, what it may use,
// which secrets it reads and who may call it. Validation here is syntax only; whether a user
// exists or a secret is stored is checked when the configuration is used (`up`, `deploy`).

/// How many processes and threads one instance may have at once (cgroup `pids.max`): 1...65536.
public struct PidsLimit: BoundedInteger {
    package static let quantityName = "process limit"
    package static let allowedRange: ClosedRange<Int> = 1...65_536
    public static let standard = PidsLimit(uncheckedRawValue: 256)
    public let rawValue: Int
    package init(uncheckedRawValue: Int) { rawValue = uncheckedRawValue }
}

/// The CPU time one instance may use, in cores (`cpu_limit: 0.5` is half a core), kept exactly
/// as thousandths of a core: 0.001...1024.
public struct CPULimit: Sendable, Hashable, Comparable, CustomStringConvertible {
    public static let maximumCores = 1024
    public static let expectation =
        "a number of CPU cores above 0 and at most 1024, with at most 3 decimals, such as 0.5"

    /// Thousandths of a core: 1...1_024_000.
    public let millicores: Int

    public init(millicores: Int) throws(InvalidValueError) {
        guard (1...Self.maximumCores * 1000).contains(millicores) else {
            throw InvalidValueError(what: "CPU limit", value: Self.text(millicores), expected: Self.expectation)
        }
        self.millicores = millicores
    }

    /// Reads the decimal text of a YAML number (`2`, `0.5`, `.25`, `+1.5`) exactly, without going
    /// through floating point. Exponents, signs other than `+`, and more than 3 decimals are refused.
    public init(decimal text: String) throws(InvalidValueError) {
        let invalid = InvalidValueError(what: "CPU limit", value: text, expected: Self.expectation)
        var digits = Substring(text)
        if digits.hasPrefix("+") { digits = digits.dropFirst() }
        let parts = digits.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let whole = parts[0]
        let fraction = parts.count > 1 ? parts[1] : ""
        guard !(whole.isEmpty && fraction.isEmpty), fraction.count <= 3,
            (whole + fraction).allSatisfy({ $0.isASCII && $0.isNumber }),
            whole.count <= 5
        else { throw invalid }
        let wholeValue = whole.isEmpty ? 0 : Int(whole)!
        let fractionValue = Int(fraction + String(repeating: "0", count: 3 - fraction.count))!
        do {
            try self.init(millicores: wholeValue * 1000 + fractionValue)
        } catch {
            throw invalid
        }
    }

    /// The limit in cores, for display.
    public var cores: Double { Double(millicores) / 1000 }

    /// The cgroup v2 `cpu.max` line (`QUOTA PERIOD`, microseconds): a period of 100 ms, or 1 s when
    /// the quota would fall under the kernel's 1 ms minimum.
    public var cpuMax: (quota: Int, period: Int) {
        let period = millicores >= 10 ? 100_000 : 1_000_000
        return (millicores * period / 1000, period)
    }

    /// `0.5`, `2`, `0.125`: the shortest decimal text that reads back as the same limit.
    public var description: String { Self.text(millicores) }

    private static func text(_ millicores: Int) -> String {
        let whole = millicores / 1000
        let fraction = abs(millicores % 1000)
        guard fraction != 0 else { return String(whole) }
        var decimals = String(fraction)
        decimals = String(repeating: "0", count: 3 - decimals.count) + decimals
        while decimals.hasSuffix("0") { decimals.removeLast() }
        return "\(whole).\(decimals)"
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.millicores < rhs.millicores }
}

/// The name of a stored secret: 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' or '-', not
/// starting with '.'. It is the secret's file name in the store and under `/run/secrets/`.
public struct SecretName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public static let maximumLength = 64
    public static let expectation =
        "a secret name of 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' or '-', not starting with '.'"

    public let rawValue: String

    public init(_ rawValue: String) throws(InvalidValueError) {
        guard Self.isValid(rawValue) else {
            throw InvalidValueError(what: "secret name", value: "\"\(rawValue)\"", expected: Self.expectation)
        }
        self.rawValue = rawValue
    }

    private static func isValid(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, first != UInt8(ascii: "."), bytes.count <= maximumLength else { return false }
        return bytes.allSatisfy { byte in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { rawValue }
}

/// A user name for `user:` (syntax only: whether it exists is checked at `up`): 1 to 32
/// characters of A-Z, a-z, 0-9, '_', '.' or '-', starting with a letter or '_' (so never a
/// number), optionally ending in '$'; not `root`, which would undo the confinement.
public struct UserName: Sendable, Hashable, CustomStringConvertible {
    public static let maximumLength = 32
    public static let expectation =
        "a user name of 1 to 32 characters of A-Z, a-z, 0-9, '_', '.' or '-' starting with a letter or '_' (optionally ending in '$'), other than root"

    public let rawValue: String

    public init(_ rawValue: String) throws(InvalidValueError) {
        guard Self.isValid(rawValue) else {
            throw InvalidValueError(what: "user name", value: "\"\(rawValue)\"", expected: Self.expectation)
        }
        self.rawValue = rawValue
    }

    private static func isValid(_ text: String) -> Bool {
        var bytes = Array(text.utf8)
        guard text != "root", bytes.count <= maximumLength else { return false }
        if bytes.last == UInt8(ascii: "$") { bytes.removeLast() }
        func isLetter(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
        }
        guard let first = bytes.first, isLetter(first) || first == UInt8(ascii: "_") else { return false }
        return bytes.allSatisfy { byte in
            isLetter(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
        }
    }

    public var description: String { rawValue }
}

/// The user and group ids handlers get one of, when their function names no `user:`
/// (`uid_range: "LOW-HIGH"`, like systemd's DynamicUser range): LOW >= 1000, HIGH <= 4294967294.
public struct UIDRange: Sendable, Hashable, CustomStringConvertible {
    public static let lowest: UInt32 = 1000
    /// 4294967295 is `(uid_t) -1`, which means "unchanged" to setresuid.
    public static let highest: UInt32 = 4_294_967_294
    public static let standard = UIDRange(uncheckedBounds: 61_184...65_519)
    public static let expectation =
        "a range \"LOW-HIGH\" of user ids with 1000 <= LOW <= HIGH <= 4294967294, such as \"61184-65519\""

    public let ids: ClosedRange<UInt32>

    public init(_ ids: ClosedRange<UInt32>) throws(InvalidValueError) {
        guard ids.lowerBound >= Self.lowest, ids.upperBound <= Self.highest else {
            throw InvalidValueError(
                what: "uid range", value: "\"\(ids.lowerBound)-\(ids.upperBound)\"", expected: Self.expectation)
        }
        self.ids = ids
    }

    /// Reads `LOW-HIGH` (decimal, no spaces).
    public init(text: String) throws(InvalidValueError) {
        let invalid = InvalidValueError(what: "uid range", value: "\"\(text)\"", expected: Self.expectation)
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2,
            parts.allSatisfy({ !$0.isEmpty && $0.count <= 10 && $0.allSatisfy { $0.isASCII && $0.isNumber } }),
            let low = UInt32(parts[0]), let high = UInt32(parts[1]), low <= high
        else { throw invalid }
        do {
            try self.init(low...high)
        } catch {
            throw invalid
        }
    }

    private init(uncheckedBounds ids: ClosedRange<UInt32>) { self.ids = ids }

    public var count: Int { Int(ids.upperBound - ids.lowerBound) + 1 }

    /// `61184-65519`
    public var description: String { "\(ids.lowerBound)-\(ids.upperBound)" }
}
