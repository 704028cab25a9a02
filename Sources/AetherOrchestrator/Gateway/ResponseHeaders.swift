import NIOHTTP1

/// A gateway response's header fields, in the order they go on the wire (`ResponseBytes`).
///
/// A plain array rather than NIO's HTTPHeaders, which checks every added name for `connection`
/// to keep its keep-alive state: the gateway decides the connection header itself
/// (`GatewayResponse.wire`), and an answer's headers are built and written once (measured: the
/// HTTPHeaders and HTTPResponseHead of each answer were about 6% of the orchestrator's CPU at
/// 16 connections).
struct ResponseHeaders: Sendable, Sequence {
    typealias Element = (name: String, value: String)

    private(set) var fields: [Element] = []

    init() {}

    mutating func reserveCapacity(_ count: Int) {
        fields.reserveCapacity(count)
    }

    mutating func add(name: String, value: String) {
        fields.append((name, value))
    }

    /// Removes the fields whose name is one `matches` accepts.
    mutating func removeAll(named matches: (String) -> Bool) {
        fields.removeAll { matches($0.name) }
    }

    /// The values of the fields named `name` (compared without case), in order.
    subscript(name: String) -> [String] {
        let lowercased = name.lowercased()
        return fields.compactMap { Self.name($0.name, is: lowercased) ? $0.value : nil }
    }

    func makeIterator() -> IndexingIterator<[Element]> {
        fields.makeIterator()
    }

    /// For the NIO encoder the control and metrics ports' error answers still go through.
    var httpHeaders: HTTPHeaders {
        HTTPHeaders(fields.map { ($0.name, $0.value) })
    }

    /// Whether the field name `field` is `name`, compared without ASCII case and without
    /// allocating (`name` in lower case, as the gateway's own names are).
    static func name(_ field: String, is name: String) -> Bool {
        guard field.utf8.count == name.utf8.count else { return false }
        return zip(field.utf8, name.utf8).allSatisfy { byte, lower in
            byte == lower || ((UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) && byte | 0x20 == lower)
        }
    }
}

/// The head of a gateway response: what `ResponseBytes` writes before the body.
struct ResponseHead: Sendable {
    var version: HTTPVersion
    var status: HTTPResponseStatus
    var headers: ResponseHeaders
}
