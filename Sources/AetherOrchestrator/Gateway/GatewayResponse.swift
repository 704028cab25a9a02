import AetherCore
import AetherIPC
import NIOCore
import NIOHTTP1

/// What the gateway sends back for one request.
///
/// The gateway is where HTTP's rules for a response (RFC 9110, RFC 9112) are enforced, on the
/// handlers' answers and on the orchestrator's own alike: `answering` refuses what cannot be sent
/// (a status that is not a final one, a header that is not valid HTTP), and `wire(answering:)`
/// frames the rest for the request it answers (which statuses and methods carry a body). What
/// reaches NIO's HTTP handlers is then always one final head, at most one body part and one end,
/// so none of their preconditions can trip (see GatewayHandler).
struct GatewayResponse: Sendable {
    var status: HTTPResponseStatus
    var headers: ResponseHeaders
    var body: ByteBuffer?
    /// The Content-Length a handler declared, used only when it sent no body: a handler that
    /// leaves the body out of its answer to HEAD can still announce the length the GET would have.
    var declaredLength: Int? = nil
    /// What went wrong, when the orchestrator answered itself with an error (not a handler's
    /// answer): logged with the request's id.
    var failure: String? = nil

    /// A response made by the orchestrator itself (errors), with a JSON body naming the problem.
    static func error(
        _ status: HTTPResponseStatus, _ message: String, extraHeaders: [(String, String)] = []
    ) -> GatewayResponse {
        var headers = ResponseHeaders()
        headers.add(name: "content-type", value: "application/json")
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        let text = "{\"error\":\(JSONText.quoted(message))}"
        var buffer = ByteBufferAllocator().buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        return GatewayResponse(status: status, headers: headers, body: buffer, failure: message)
    }

    /// A handler response the gateway will not send, and why (its instance is killed for it).
    struct Rejection: Sendable {
        var instance: InstanceID
        var reason: String
        var status: Int
    }

    /// The statuses a handler may answer with: the final ones. A 1xx status is interim (RFC 9110
    /// §15.2): 100, 102 and 103 announce a final response that would have to follow on the same
    /// request, and 101 would switch the connection to another protocol, which a function behind
    /// the ring cannot speak.
    static let finalStatuses = 200...599

    /// The HTTP answer to an invocation's outcome: the handler's response with its hop-by-hop
    /// headers dropped and the `x-aether-*` headers added, or 429 / 502 / 503 / 504 with a JSON
    /// body. A handler response that is not valid HTTP becomes a 502 and a rejection.
    static func answering(
        _ outcome: InvocationOutcome<HandlerResponse>, function: FunctionID
    ) -> (GatewayResponse, Rejection?) {
        switch outcome {
        case .response(let response, let instance, let coldStart):
            return checking(
                status: response.status, headers: response.headers, body: response.body, instance: instance,
                coldStart: coldStart, function: function)
        case .queueFull(let busy, let queued):
            return (
                .error(
                    .tooManyRequests,
                    "function \(function) is at capacity: \(busy) instance(s) busy and \(queued) request(s) queued (max_queue)",
                    extraHeaders: [("retry-after", "1")]), nil
            )
        case .timedOut(let milliseconds):
            return (
                .error(.gatewayTimeout, "function \(function) did not answer within timeout_ms \(milliseconds)"), nil
            )
        case .instanceFailed(_, let cause):
            return (.error(.badGateway, "function \(function): the instance serving this request \(cause)"), nil)
        case .malformedResponse(_, let reason):
            return (.error(.badGateway, "function \(function) sent a malformed response: \(reason)"), nil)
        case .notAccepting(let mode):
            let message =
                mode == .stopped
                ? "function \(function) is shutting down"
                : "function \(function) is not accepting requests (\(mode.rawValue))"
            return (.error(.serviceUnavailable, message), nil)
        case .unavailable(let error):
            return (
                .error(
                    .serviceUnavailable,
                    "function \(function) has no running instance: \(error.summary) (the orchestrator's log says why)",
                    extraHeaders: [("retry-after", "1")]), nil
            )
        }
    }

    /// A handler's answer as the gateway sends it, or a 502 and the rejection that has its
    /// instance killed: for a status that is not final (1xx, or outside 100...599), and for a
    /// header that is not valid HTTP (NIO's header validator would drop the whole response and
    /// close the connection; CR or LF would let the handler write arbitrary bytes into the stream).
    static func checking(
        status: Int, headers handlerHeaders: [InvocationHeader], body: ByteBuffer, instance: InstanceID,
        coldStart: ColdStart?, function: FunctionID
    ) -> (GatewayResponse, Rejection?) {
        guard finalStatuses.contains(status) else {
            let rejection = Rejection(
                instance: instance, reason: "it answered with status \(status), which is not a final HTTP status",
                status: status)
            return (
                .error(
                    .badGateway,
                    "function \(function) answered with status \(status): a response must have a final status (200...599)"
                ), rejection
            )
        }
        var headers = ResponseHeaders()
        headers.reserveCapacity(handlerHeaders.count + 4)
        var declaredLengths: [String] = []
        for header in handlerHeaders {
            guard HeaderSyntax.isValid(name: header.name, value: header.value) else {
                let rejection = Rejection(
                    instance: instance,
                    reason: "it sent an invalid response header \(JSONText.printable(header.name))",
                    status: status)
                return (
                    .error(
                        .badGateway, "function \(function) sent an invalid header name or value (control characters)"
                    ), rejection
                )
            }
            if ResponseHeaders.name(header.name, is: "content-length") { declaredLengths.append(header.value) }
            if !HeaderSyntax.isHopByHop(header.name) { headers.add(name: header.name, value: header.value) }
        }
        headers.add(name: "x-aether-instance", value: String(instance.number))
        if let coldStart {
            headers.add(name: "x-aether-cold-start", value: coldStart.origin.rawValue)
            headers.add(name: "x-aether-startup-ms", value: String(coldStart.milliseconds))
            if let restore = coldStart.restoreMilliseconds {
                headers.add(name: "x-aether-restore-ms", value: String(restore))
            }
        } else {
            headers.add(name: "x-aether-cold-start", value: "no")
        }
        let response = GatewayResponse(
            status: HTTPResponseStatus(statusCode: status), headers: headers, body: body,
            declaredLength: contentLength(declaredLengths))
        return (response, nil)
    }

    /// A Content-Length field's value (RFC 9110 §8.6: digits; repeated, the same each time), or nil.
    static func contentLength(_ values: [String]) -> Int? {
        var length: Int?
        for field in values {
            for element in field.split(separator: ",", omittingEmptySubsequences: false) {
                let digits = String(element).trimmingCharacters(in: " \t")
                guard !digits.isEmpty, digits.utf8.count <= 18,
                    digits.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                    let value = Int(digits), length == nil || length == value
                else { return nil }
                length = value
            }
        }
        return length
    }

    /// The request a response answers, as far as its framing depends on it.
    struct Answered: Sendable {
        var method: HTTPMethod
        var version: HTTPVersion
        /// The connection stays open for another request after this response.
        var keepAlive: Bool
        /// The request's id (`RequestIdentity`), sent back as `x-request-id`.
        var requestID: String? = nil
    }

    /// The head to write and the body to write after it (nil: none), by HTTP's rules for which
    /// responses carry content (RFC 9110 §6.4.1, §9.3.2, §15.3.6; RFC 9112 §6.3):
    /// - 204 and 304 never do, and carry no Content-Length either: what was given is dropped;
    /// - 205 has none either, announced as Content-Length 0;
    /// - a response to HEAD has none, but keeps the Content-Length the GET would have (its body's
    ///   length, or the length the handler declared when it left the body out itself);
    /// - a response to CONNECT (only ever the gateway's refusal) has none and no Content-Length,
    ///   which is also what NIO's encoder makes of it;
    /// - any other has its body and the body's Content-Length.
    /// The connection header says whether the connection stays open. A status that is not final
    /// cannot come from `answering`; should one get here, it goes out as a 502, never as a 1xx
    /// head that NIO's HTTPServerProtocolErrorHandler would trap on.
    func wire(answering request: Answered) -> (head: ResponseHead, body: ByteBuffer?) {
        guard Self.finalStatuses.contains(Int(status.code)) else {
            return GatewayResponse.error(.badGateway, "the gateway refused to send status \(status.code)")
                .wire(answering: request)
        }
        // The fields the gateway sets below replace any of the same name, in one pass.
        let setsConnection = !request.keepAlive || (request.version.major == 1 && request.version.minor == 0)
        var headers = headers
        headers.removeAll { name in
            ResponseHeaders.name(name, is: "content-length") || ResponseHeaders.name(name, is: "transfer-encoding")
                || (request.requestID != nil && ResponseHeaders.name(name, is: "x-request-id"))
                || (setsConnection && ResponseHeaders.name(name, is: "connection"))
        }
        let bodyLength = body?.readableBytes ?? 0
        var content: ByteBuffer?
        switch (status, request.method) {
        case (.noContent, _), (.notModified, _), (_, .CONNECT):
            break
        case (.resetContent, _):
            headers.add(name: "content-length", value: "0")
        case (_, .HEAD):
            let length = bodyLength == 0 ? (declaredLength ?? 0) : bodyLength
            headers.add(name: "content-length", value: String(length))
        default:
            headers.add(name: "content-length", value: String(bodyLength))
            if bodyLength > 0 { content = body }
        }
        if let requestID = request.requestID { headers.add(name: "x-request-id", value: requestID) }
        if setsConnection { headers.add(name: "connection", value: request.keepAlive ? "keep-alive" : "close") }
        return (ResponseHead(version: request.version, status: status, headers: headers), content)
    }
}
