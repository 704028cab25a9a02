import AetherCore
import NIOHTTP1
import Synchronization

/// A function's bearer token (`auth: {secret: NAME}`): the secret's contents without one
/// trailing line break. Deliberately not `Equatable`, so the only comparison is `matches`, in
/// constant time; its `description` never shows the bytes.
public struct BearerToken: Sendable, CustomStringConvertible {
    let bytes: [UInt8]

    /// `contents` without one final "\n" or "\r\n" (so a file written by `echo` works).
    public init(secretContents contents: [UInt8]) {
        var bytes = contents
        if bytes.last == UInt8(ascii: "\n") {
            bytes.removeLast()
            if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        }
        self.bytes = bytes
    }

    /// Whether `presented` is the token, in time that depends only on the token's length: every
    /// byte of the token is compared (against the presented byte at the same index, or the last
    /// one when it is shorter), the differences and the difference of the lengths are OR-ed
    /// together, and nothing returns before the end.
    public func matches(_ presented: some Collection<UInt8>) -> Bool {
        ConstantTime.equal(bytes, Array(presented))
    }

    public var description: String { "BearerToken(\(bytes.count) bytes)" }
}

/// Comparison of secrets without an early exit.
enum ConstantTime {
    /// `expected == presented`, taking as long for any `presented` of any length: the loop runs
    /// over `expected` only (the secret, whose length is fixed), reads `presented` at a clamped
    /// index, and accumulates differences with OR; the lengths are compared the same way.
    static func equal(_ expected: [UInt8], _ presented: [UInt8]) -> Bool {
        var difference = UInt64(truncatingIfNeeded: expected.count ^ presented.count)
        let probe = presented.isEmpty ? [0] : presented
        let last = probe.count - 1
        probe.withUnsafeBufferPointer { probe in
            expected.withUnsafeBufferPointer { expected in
                for index in 0..<expected.count {
                    difference |= UInt64(expected[index] ^ probe[min(index, last)])
                }
            }
        }
        return difference == 0
    }
}

/// The gateway's check of a request to a function with `auth:`.
enum InvocationAuth {
    /// What the request's `Authorization` header amounted to.
    enum Verdict: Equatable {
        case allowed
        /// No `Authorization` header, or one of another scheme (RFC 6750 §3.1: no error code).
        case noCredentials
        /// A Bearer token that is not the function's (or an unusable header).
        case invalidToken
    }

    /// Checks `headers` against `token`. The comparison is constant-time; which of the refusals
    /// it is depends only on the header's form, never on how much of the token matched.
    static func check(_ headers: HTTPHeaders, token: BearerToken?) -> Verdict {
        let values = headers["authorization"]
        guard !values.isEmpty else { return .noCredentials }
        guard values.count == 1 else { return .invalidToken }
        let value = values[0].utf8
        // RFC 9110 §11.4: the scheme is case-insensitive, then one or more spaces, then the token.
        let scheme = value.prefix { $0 != UInt8(ascii: " ") }
        guard String(decoding: scheme, as: UTF8.self).lowercased() == "bearer" else { return .noCredentials }
        let credentials = value.dropFirst(scheme.count).drop { $0 == UInt8(ascii: " ") }
        guard let token, !credentials.isEmpty, token.matches(credentials) else { return .invalidToken }
        return .allowed
    }

    /// The 401 answer: `WWW-Authenticate: Bearer realm="<function>"`, with
    /// `error="invalid_token"` when a token was presented, and the JSON error body.
    static func refusal(_ verdict: Verdict, function: FunctionID) -> GatewayResponse {
        var challenge = "Bearer realm=\"\(function.rawValue)\""
        let message: String
        if verdict == .invalidToken {
            challenge += ", error=\"invalid_token\""
            message = "function \(function) requires a valid bearer token: the one presented is not accepted"
        } else {
            message = "function \(function) requires `Authorization: Bearer <token>`"
        }
        return .error(.unauthorized, message, extraHeaders: [("www-authenticate", challenge)])
    }
}

/// The bearer tokens of the running functions with `auth:`, by function id: set at `up` and at
/// every `deploy` (so a redeploy picks up a changed secret, also for a function it leaves
/// running), read by the gateway for each request.
final class BearerTokens: Sendable {
    private let tokens = Mutex<[FunctionID: BearerToken]>([:])

    func token(for function: FunctionID) -> BearerToken? { tokens.withLock { $0[function] } }

    /// Installs the tokens of `functions` (a function without one loses any it had).
    func install(_ new: [FunctionID: BearerToken], for functions: [FunctionID]) {
        tokens.withLock { tokens in
            for function in functions { tokens[function] = new[function] }
        }
    }

    func remove(_ function: FunctionID) { _ = tokens.withLock { $0.removeValue(forKey: function) } }
}
