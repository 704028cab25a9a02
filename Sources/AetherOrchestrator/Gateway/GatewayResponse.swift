import AetherCore
import NIOCore
import NIOHTTP1

/// What the gateway sends back for one request.
struct GatewayResponse: Sendable {
    var status: HTTPResponseStatus
    var headers: HTTPHeaders
    var body: ByteBuffer?

    /// A response made by the orchestrator itself (errors), with a JSON body naming the problem.
    static func error(
        _ status: HTTPResponseStatus, _ message: String, extraHeaders: [(String, String)] = []
    ) -> GatewayResponse {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        let text = "{\"error\":\(JSONText.quoted(message))}"
        var buffer = ByteBufferAllocator().buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        return GatewayResponse(status: status, headers: headers, body: buffer)
    }

    /// A handler response the gateway will not send, and why (its instance is killed for it).
    struct Rejection: Sendable {
        var instance: InstanceID
        var reason: String
        var status: Int
    }

    /// The HTTP answer to an invocation's outcome: the handler's response with its hop-by-hop
    /// headers dropped and the `x-aether-*` headers added, or 429 / 502 / 503 / 504 with a JSON
    /// body. A handler response whose headers are not valid HTTP becomes a 502 and a rejection.
    static func answering(
        _ outcome: InvocationOutcome<HandlerResponse>, function: FunctionID
    ) -> (GatewayResponse, Rejection?) {
        switch outcome {
        case .response(let response, let instance, let coldStart):
            var headers = HTTPHeaders()
            for header in response.headers where !HeaderSyntax.hopByHop.contains(header.name.lowercased()) {
                guard HeaderSyntax.isValid(name: header.name, value: header.value) else {
                    // CR or LF in a header would let a handler write arbitrary bytes into the HTTP stream.
                    let rejection = Rejection(
                        instance: instance,
                        reason: "it sent an invalid response header \(JSONText.printable(header.name))",
                        status: response.status)
                    return (
                        .error(
                            .badGateway,
                            "function \(function) sent an invalid header name or value (control characters)"),
                        rejection
                    )
                }
                headers.add(name: header.name, value: header.value)
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
            let status = HTTPResponseStatus(statusCode: response.status)
            return (GatewayResponse(status: status, headers: headers, body: response.body), nil)
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
                    .serviceUnavailable, "function \(function) has no running instance: \(error)",
                    extraHeaders: [("retry-after", "1")]), nil
            )
        }
    }
}
