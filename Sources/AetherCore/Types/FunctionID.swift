/// The identifier of a function: `[a-z0-9][a-z0-9_-]{0,62}`.
///
/// It names shared-memory objects, sockets and snapshot folders, so the alphabet is kept to
/// characters that are safe in all of them.
public struct FunctionID: Sendable, Hashable, Comparable, CustomStringConvertible, Codable {
    public let rawValue: String

    public static let maximumLength = 63
    public static let expectation = "1 to 63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"

    public init(_ rawValue: String) throws(InvalidValueError) {
        guard Self.isValid(rawValue) else {
            throw InvalidValueError(what: "function id", value: "\"\(rawValue)\"", expected: Self.expectation)
        }
        self.rawValue = rawValue
    }

    private static func isValid(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, bytes.count <= maximumLength else { return false }
        func isLowerAlnum(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        return isLowerAlnum(first)
            && bytes.dropFirst().allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            try self.init(text)
        } catch {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { rawValue }
}
