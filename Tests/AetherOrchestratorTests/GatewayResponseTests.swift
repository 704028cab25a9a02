import AetherCore
import AetherIPC
import NIOCore
import NIOHTTP1
import Testing

@testable import AetherOrchestrator

/// The gateway's HTTP rules for handler responses (RFC 9110/9112): which statuses are refused,
/// which responses carry a body and a Content-Length. The bytes on the wire are checked by
/// tests/integration/test_http_rules.py.
@Suite struct GatewayResponseTests {
    static let function = try! FunctionID("fn")
    static let instance = InstanceID(3)

    static func handler(
        _ status: Int, _ headers: [(String, String)] = [], body: String = "hello"
    ) -> (GatewayResponse, GatewayResponse.Rejection?) {
        var buffer = ByteBufferAllocator().buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        return GatewayResponse.checking(
            status: status, headers: headers.map { InvocationHeader(name: $0.0, value: $0.1) }, body: buffer,
            instance: instance, coldStart: nil, function: function)
    }

    static func answering(
        _ method: HTTPMethod, version: HTTPVersion = .http1_1, keepAlive: Bool = true
    ) -> GatewayResponse.Answered {
        GatewayResponse.Answered(method: method, version: version, keepAlive: keepAlive)
    }

    @Test(arguments: [100, 101, 102, 103, 150, 199, 0, 99, 600, 999, -1])
    func aStatusThatIsNotFinalIsA502AndARejection(status: Int) throws {
        let (response, rejection) = Self.handler(status)
        #expect(response.status == .badGateway)
        let rejected = try #require(rejection)
        #expect(rejected.instance == Self.instance)
        #expect(rejected.status == status)
        #expect(rejected.reason.contains("status \(status)"))
        let (head, body) = response.wire(answering: Self.answering(.GET))
        #expect(head.status == .badGateway)
        #expect(head.headers["content-length"] == [String(body?.readableBytes ?? -1)])
    }

    @Test(arguments: [200, 201, 204, 205, 299, 304, 418, 500, 599])
    func aFinalStatusIsSent(status: Int) {
        let (response, rejection) = Self.handler(status)
        #expect(rejection == nil)
        #expect(response.status.code == UInt(status))
    }

    @Test(arguments: [204, 304])
    func noContentAndNotModifiedCarryNoBodyAndNoContentLength(status: Int) {
        let (response, _) = Self.handler(status, [("Content-Length", "5"), ("ETag", "\"v1\"")])
        for method in [HTTPMethod.GET, .POST, .HEAD] {
            let (head, body) = response.wire(answering: Self.answering(method))
            #expect(body == nil)
            #expect(head.headers["content-length"].isEmpty)
            #expect(head.headers["transfer-encoding"].isEmpty)
            #expect(head.headers["etag"] == ["\"v1\""])
        }
    }

    @Test func resetContentAnnouncesAnEmptyBody() {
        let (response, _) = Self.handler(205)
        let (head, body) = response.wire(answering: Self.answering(.POST))
        #expect(body == nil)
        #expect(head.headers["content-length"] == ["0"])
    }

    @Test func headKeepsTheLengthOfTheBodyItDoesNotCarry() {
        let (response, _) = Self.handler(200, body: "twelve bytes")
        let (head, body) = response.wire(answering: Self.answering(.HEAD))
        #expect(body == nil)
        #expect(head.headers["content-length"] == ["12"])
        let (getHead, getBody) = response.wire(answering: Self.answering(.GET))
        #expect(getBody?.readableBytes == 12)
        #expect(getHead.headers["content-length"] == ["12"])
    }

    @Test func headWithoutABodyAnnouncesTheLengthTheHandlerDeclared() {
        let (response, _) = Self.handler(200, [("Content-Length", "4096")], body: "")
        #expect(response.wire(answering: Self.answering(.HEAD)).head.headers["content-length"] == ["4096"])
        // For any other method the body that is there is what counts.
        #expect(response.wire(answering: Self.answering(.GET)).head.headers["content-length"] == ["0"])
        let (withBody, _) = Self.handler(200, [("Content-Length", "4096")], body: "abc")
        #expect(withBody.wire(answering: Self.answering(.HEAD)).head.headers["content-length"] == ["3"])
    }

    @Test(
        arguments: [
            (["12"], 12), (["12", "12"], 12), (["12, 12"], 12), ([" 7 "], 7), (["0"], 0), ([], nil),
            (["12", "13"], nil),
            (["-1"], nil), (["1e3"], nil), (["99999999999999999999"], nil), ([""], nil), (["12,"], nil),
        ] as [([String], Int?)])
    func declaredContentLength(values: [String], expected: Int?) {
        #expect(GatewayResponse.contentLength(values) == expected)
    }

    @Test func theOrchestratorsOwnErrorsFollowTheSameRules() {
        let error = GatewayResponse.error(.badGateway, "nope")
        let length = String(error.body!.readableBytes)
        let (head, body) = error.wire(answering: Self.answering(.HEAD))
        #expect(body == nil)
        #expect(head.headers["content-length"] == [length])
        let (connect, connectBody) = GatewayResponse.error(.notImplemented, "no tunnels")
            .wire(answering: Self.answering(.CONNECT, keepAlive: false))
        #expect(connectBody == nil)
        #expect(connect.headers["content-length"].isEmpty)
        #expect(connect.headers["connection"] == ["close"])
    }

    @Test func aStatusThatIsNotFinalNeverReachesTheWire() {
        for code in [100, 101, 103] {
            let response = GatewayResponse(
                status: HTTPResponseStatus(statusCode: code), headers: ResponseHeaders(), body: nil)
            #expect(response.wire(answering: Self.answering(.GET)).head.status == .badGateway)
        }
    }

    @Test func hopByHopHeadersAreTheGatewaysOwn() {
        let (response, _) = Self.handler(
            200, [("Content-Length", "999"), ("Transfer-Encoding", "chunked"), ("Connection", "close"), ("X-A", "1")])
        let (head, _) = response.wire(answering: Self.answering(.GET, version: .http1_0))
        #expect(head.headers["content-length"] == ["5"])
        #expect(head.headers["transfer-encoding"].isEmpty)
        #expect(head.headers["connection"] == ["keep-alive"])
        #expect(head.headers["x-a"] == ["1"])
        #expect(head.headers["x-aether-instance"] == ["3"])
    }

    /// The fields the gateway sets replace the handler's of the same name (whatever their case),
    /// and come after the handler's own, in one order.
    @Test func theGatewaysOwnFieldsReplaceTheHandlersAndComeLast() {
        let (response, _) = Self.handler(200, [("X-Request-ID", "mine"), ("X-A", "1"), ("x-request-id", "again")])
        var answered = Self.answering(.GET, keepAlive: false)
        answered.requestID = "abc"
        let (head, _) = response.wire(answering: answered)
        #expect(head.headers["X-Request-Id"] == ["abc"])
        #expect(
            head.headers.map(\.name) == [
                "X-A", "x-aether-instance", "x-aether-cold-start", "content-length", "x-request-id", "connection",
            ])
        #expect(head.headers["connection"] == ["close"])
    }

    @Test func fieldNamesCompareWithoutASCIICase() {
        #expect(ResponseHeaders.name("Content-LENGTH", is: "content-length"))
        #expect(ResponseHeaders.name("content-length", is: "content-length"))
        #expect(!ResponseHeaders.name("content_length", is: "content-length"))
        #expect(!ResponseHeaders.name("content-lengths", is: "content-length"))
        #expect(!ResponseHeaders.name("", is: "x"))
        // Only ASCII letters fold: 'É' is not 'é', '@' (0x40) is not '`' (0x60).
        #expect(!ResponseHeaders.name("X-É", is: "x-é"))
        #expect(!ResponseHeaders.name("@", is: "`"))
    }

    /// NIO's response header validator drops a whole response with any of these bytes in a value
    /// (and closes the connection): the gateway refuses them first, as 502.
    @Test(arguments: [0x00, 0x01, 0x08, 0x0A, 0x0D, 0x1F, 0x7F] as [UInt8])
    func aControlCharacterInAHeaderValueIsRejected(byte: UInt8) throws {
        let value = "a" + String(decoding: [byte], as: UTF8.self) + "b"
        let (response, rejection) = Self.handler(200, [("X-Bad", value)])
        #expect(response.status == .badGateway)
        #expect(try #require(rejection).instance == Self.instance)
    }

    @Test func tabsSpacesAndNonASCIIAreValidInValues() {
        let (response, rejection) = Self.handler(200, [("X-Ok", "a\tb c é")])
        #expect(rejection == nil)
        #expect(response.headers["x-ok"] == ["a\tb c é"])
    }
}
