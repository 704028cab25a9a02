public import AetherIPC
import FoundationEssentials

/// One HTTP request, as a Swift handler sees it.
public struct HandlerRequest: Sendable {
    public let method: String
    /// The request target as sent: path and optional `?query`.
    public let target: String
    /// The path, percent-decoded.
    public let path: String
    /// Query parameters, percent-decoded; the first value of a repeated name.
    public let query: [String: String]
    /// Headers in the order sent; look them up with `header(_:)`, which ignores case.
    public let headers: [InvocationHeader]
    public let body: [UInt8]

    init(_ request: InvocationRequest) {
        method = request.method
        target = request.target
        headers = request.headers
        body = request.body
        let parts = request.target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = PercentDecoding.decode(parts.first.map(String.init) ?? "/", plusIsSpace: false)
        var query: [String: String] = [:]
        if parts.count > 1 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = PercentDecoding.decode(String(kv[0]), plusIsSpace: true)
                if query[name] == nil {
                    query[name] = kv.count > 1 ? PercentDecoding.decode(String(kv[1]), plusIsSpace: true) : ""
                }
            }
        }
        self.query = query
    }

    /// The first header with this name, compared case-insensitively.
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name.lowercased() == wanted }?.value
    }

    /// The request's id: its W3C trace id (the `x-request-id` the orchestrator sets, also on
    /// the response; nil outside the orchestrator).
    public var requestID: String? { header("x-request-id") }

    /// The W3C `traceparent` the request came with, or the one the orchestrator started for it.
    public var traceparent: String? { header("traceparent") }

    /// The body as UTF-8 text.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// Decodes the JSON body; a body that does not decode is answered with 400.
    public func json<T: Decodable>(_ type: T.Type) throws(HTTPError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(body))
        } catch {
            throw HTTPError(400, "invalid JSON body: \(error)")
        }
    }
}

/// What a Swift handler answers.
public struct HandlerResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int = 200, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func text(_ text: String, status: Int = 200) -> HandlerResponse {
        HandlerResponse(
            status: status, headers: [("content-type", "text/plain; charset=utf-8")], body: Array(text.utf8))
    }

    /// JSON of any Encodable value (keys sorted, so answers are stable).
    public static func json<T: Encodable>(_ value: T, status: Int = 200) -> HandlerResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            let data = try encoder.encode(value)
            return HandlerResponse(status: status, headers: [("content-type", "application/json")], body: Array(data))
        } catch {
            return .text("cannot encode the response as JSON: \(error)", status: 500)
        }
    }
}

/// Thrown by a handler to answer with an HTTP error status and a JSON `{"error": message}` body.
public struct HTTPError: Error, Sendable {
    public let status: Int
    public let message: String

    public init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
}

enum PercentDecoding {
    static func decode(_ text: String, plusIsSpace: Bool) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%"), iterator.count >= 2,
                let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else if plusIsSpace && byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
