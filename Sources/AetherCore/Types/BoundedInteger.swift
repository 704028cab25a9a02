/// A value that could not become one of the configuration newtypes.
///
/// Carries what was being built, the rejected value and what would have been accepted, so that
/// the config validator can turn it into a positioned diagnostic without re-deriving the rule.
public struct InvalidValueError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What the value was meant to be, e.g. "trigger port".
    public let what: String
    /// The rejected value as text.
    public let value: String
    /// What would have been accepted, e.g. "an integer in 1...65535".
    public let expected: String

    public init(what: String, value: String, expected: String) {
        self.what = what
        self.value = value
        self.expected = expected
    }

    public var description: String {
        "invalid \(what) \(value): expected \(expected)"
    }
}

/// An integer newtype whose every instance lies in `allowedRange` (and satisfies `isAcceptable`).
///
/// The protocol is `package`, not public, so that the unchecked initializer cannot be reached
/// from outside. Conformers only state their rule; construction and the error text are shared here so that
/// every bounded value in the project reports a violation the same way.
package protocol BoundedInteger: Sendable, Hashable, Comparable, CustomStringConvertible {
    associatedtype Value: FixedWidthInteger & Sendable
    /// Human name of the quantity, used in error messages ("memory limit").
    static var quantityName: String { get }
    static var allowedRange: ClosedRange<Value> { get }
    /// Unit appended to the range in error messages ("MiB", "ms"), or "".
    static var unit: String { get }
    /// An extra rule beyond the range (for example "a multiple of 4096"), with its wording.
    static var extraRule: (test: @Sendable (Value) -> Bool, wording: String)? { get }

    var rawValue: Value { get }
    /// Builds the value without checking; only `init(_:)` and vetted constants call it, and it is
    /// not visible outside this package.
    init(uncheckedRawValue: Value)
}

extension BoundedInteger {
    public static var unit: String { "" }
    public static var extraRule: (test: @Sendable (Value) -> Bool, wording: String)? { nil }

    /// The accepted values in words, e.g. "an integer in 1...65535 (ms)".
    public static var expectation: String {
        let unitText = unit.isEmpty ? "" : " \(unit)"
        var text = "an integer in \(allowedRange.lowerBound)...\(allowedRange.upperBound)\(unitText)"
        if let rule = extraRule { text += ", \(rule.wording)" }
        return text
    }

    /// Creates the value, or throws if it is outside the allowed range or breaks the extra rule.
    public init(_ value: Value) throws(InvalidValueError) {
        guard Self.allowedRange.contains(value), Self.extraRule?.test(value) ?? true else {
            throw InvalidValueError(what: Self.quantityName, value: String(value), expected: Self.expectation)
        }
        self.init(uncheckedRawValue: value)
    }

    /// Creates the value from any integer type, rejecting values that do not even fit `Value`.
    public init(exactly value: some BinaryInteger) throws(InvalidValueError) {
        guard let converted = Value(exactly: value) else {
            throw InvalidValueError(what: Self.quantityName, value: String(value), expected: Self.expectation)
        }
        try self.init(converted)
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { String(rawValue) }
}
