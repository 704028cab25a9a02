import AetherCore
import AetherSystem
import FoundationEssentials
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The control API: HTTP/1.1 + JSON on a Unix socket (mode 0600), used by `aether list`,
/// `stats`, `deploy`, `rm`, `logs` and `down`.
///
/// | method | path | answer |
/// |---|---|---|
/// | GET | /v1/status | `OrchestratorStatus` |
/// | GET | /v1/functions/ID | `FunctionStatus` (404 if unknown) |
/// | GET | /v1/functions/ID/logs?lines=N | `LogsDocument` |
/// | POST | /v1/deploy | `DeployRequest` -> `DeployResult` (400 invalid config, 409 conflict, 502 a function could not start: nothing applied, 500 state not stored) |
/// | DELETE | /v1/functions/ID | `RemoveResult` (404 if unknown, 409 another change in progress, 500 state not stored) |
/// | POST | /v1/down | 202, then a graceful shutdown |
/// | POST | /v1/restart | `RestartRequest` -> 202: a successor is started and takes over (`aether restart`) |
/// | POST | /v1/handover | 202: the successor serves every function; this orchestrator lets go and stops |
final class ControlServer: Sendable {
    /// Where the socket is, while it is this server's to remove: nil once a successor's socket
    /// took the path (`aether restart`).
    private let path: Mutex<String?>
    private let channel: any Channel

    private init(path: String, channel: any Channel) {
        self.path = Mutex(path)
        self.channel = channel
    }

    /// Moves the socket's file to `destination` (a successor taking the place of the orchestrator
    /// it replaced: rename replaces the old file at once, so a client finds one or the other).
    func move(to destination: String) throws(SystemCallFailure) {
        try path.withLock { (path: inout String?) throws(SystemCallFailure) in
            guard let current = path else { return }
            try systemCall("rename", on: "\(current) to \(destination)", failsWith: .minusOne) {
                rename(current, destination)
            }
            path = destination
        }
    }

    /// The path is somebody else's now: `close` must leave it, and so must SwiftNIO, which
    /// unlinks a Unix server socket's path when the channel closes (whatever socket the path
    /// names by then): after this, the channel is left open until the process exits.
    func letGoOfPath() {
        path.withLock { $0 = nil }
    }

    static func bind(
        path: String, backend: any ControlAPIBackend, group: any EventLoopGroup
    ) async throws(AetherError)
        -> ControlServer
    {
        do {
            let channel = try await ServerBootstrap.http(group: group) { ControlHandler(backend: backend) }
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            chmod(path, 0o600)
            return ControlServer(path: path, channel: channel)
        } catch {
            throw .orchestrator(
                .bindFailed(what: "the control API", address: path, reason: SystemErrorText.describe(error)))
        }
    }

    func close() async {
        guard let path = path.withLock({ $0 }) else { return }
        try? await channel.close()
        unlink(path)
    }
}

enum ControlJSON {
    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

struct ControlAnswer: Sendable {
    var status: HTTPResponseStatus
    var body: Data
    var contentType = "application/json"
}

private final class ControlHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let maximumBody = 65536
    private let backend: any ControlAPIBackend
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()

    init(backend: any ControlAPIBackend) { self.backend = backend }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var chunk):
            if body.readableBytes + chunk.readableBytes <= Self.maximumBody { body.writeBuffer(&chunk) }
        case .end:
            guard let head else { return }
            self.head = nil
            let requestBody = body
            let backend = backend
            let loop = context.eventLoop
            let respond = loop.makePromise(of: ControlAnswer.self)
            respond.futureResult.assumeIsolated().whenSuccess { [self] answer in
                write(context: context, answer: answer, keepAlive: head.isKeepAlive)
            }
            Task {
                let answer = await ControlRouter.route(head: head, body: requestBody, backend: backend)
                respond.succeed(answer)
            }
        }
    }

    private func write(context: ChannelHandlerContext, answer: ControlAnswer, keepAlive: Bool) {
        let (status, body) = (answer.status, answer.body)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: answer.contentType)
        headers.add(name: "content-length", value: String(body.count))
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.count)
        buffer.writeBytes(body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
        if !keepAlive { promise.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
    }
}

/// The control API's endpoints: one request in, one answer out.
enum ControlRouter {
    static func route(
        head: HTTPRequestHead, body: ByteBuffer, backend: any ControlAPIBackend
    ) async
        -> ControlAnswer
    {
        let target = head.uri.split(separator: "?", maxSplits: 1)
        let path = target.first.map(String.init) ?? "/"
        let query = target.count > 1 ? String(target[1]) : ""
        let parts = path.split(separator: "/").map(String.init)
        switch (head.method, parts.count, parts.first, parts.dropFirst().first) {
        case (.GET, 2, "v1", "status"):
            return encode(.ok, backend.status())
        case (.GET, 1, "metrics", nil):
            return ControlAnswer(
                status: .ok, body: Data(backend.metricsText().utf8), contentType: OrchestratorMetrics.contentType)
        case (.GET, 3, "v1", "functions"):
            let id = parts[2]
            guard let status = backend.functionStatus(id) else { return unknown(id) }
            return encode(.ok, status)
        case (.GET, 4, "v1", "functions") where parts[3] == "logs":
            let id = parts[2]
            let lines =
                query.split(separator: "&").compactMap { pair -> Int? in
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    return kv.count == 2 && kv[0] == "lines" ? Int(kv[1]) : nil
                }.first ?? 100
            guard let logs = backend.logs(of: id, lines: max(0, min(lines, 100_000))) else { return unknown(id) }
            return encode(.ok, logs)
        case (.POST, 2, "v1", "deploy"):
            let request: DeployRequest
            do {
                request = try ControlJSON.decoder().decode(DeployRequest.self, from: Data(body.readableBytesView))
            } catch {
                return encode(.badRequest, ErrorDocument(error: "the deploy request is not valid JSON: \(error)"))
            }
            do {
                return encode(.ok, try await backend.deploy(request))
            } catch {
                return failure(error)
            }
        case (.GET, 3, "v1", "progress"):
            let after =
                query.split(separator: "&").compactMap { pair -> Int? in
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    return kv.count == 2 && kv[0] == "after" ? Int(kv[1]) : nil
                }.first ?? 0
            return encode(.ok, backend.progress(of: parts[2], after: max(0, after)))
        case (.GET, 4, "v1", "functions") where parts[3] == "versions":
            guard let versions = backend.versions(of: parts[2]) else { return unknown(parts[2]) }
            return encode(.ok, versions)
        case (.POST, 4, "v1", "functions") where parts[3] == "rollback":
            let request: RollbackRequest
            do {
                request = try ControlJSON.decoder().decode(RollbackRequest.self, from: Data(body.readableBytesView))
            } catch {
                return encode(.badRequest, ErrorDocument(error: "the rollback request is not valid JSON: \(error)"))
            }
            do {
                return encode(.ok, try await backend.rollback(parts[2], to: request.to))
            } catch {
                return failure(error)
            }
        case (.DELETE, 3, "v1", "functions"):
            do {
                return encode(.ok, try await backend.remove(parts[2]))
            } catch {
                return failure(error)
            }
        case (.POST, 2, "v1", "down"):
            Task {
                // Answer first, then stop.
                try? await Task.sleep(for: .milliseconds(50))
                backend.requestShutdown()
            }
            return encode(.accepted, ["stopping": true])
        case (.POST, 2, "v1", "restart"):
            let request: RestartRequest
            do {
                request = try ControlJSON.decoder().decode(RestartRequest.self, from: Data(body.readableBytesView))
            } catch {
                return encode(.badRequest, ErrorDocument(error: "the restart request is not valid JSON: \(error)"))
            }
            do {
                return encode(.accepted, try backend.restart(request))
            } catch {
                return encode(.conflict, ErrorDocument(error: error.description))
            }
        case (.POST, 2, "v1", "handover"):
            backend.handOver()
            return encode(.accepted, ["handing_over": true])
        default:
            return encode(.notFound, ErrorDocument(error: "no such endpoint: \(head.method) \(path)"))
        }
    }

    /// A deploy, rollback or rm that changed nothing.
    private static func failure(_ error: DeploymentError) -> ControlAnswer {
        switch error {
        case .refused(.config(.invalid(let file, let diagnostics))):
            return encode(
                .badRequest,
                ErrorDocument(
                    error: "configuration file \(file) has \(diagnostics.count) problem(s)",
                    diagnostics: diagnostics.map(\.description)))
        case .refused(.config), .refused(.orchestrator(.conflict)):
            return encode(.conflict, ErrorDocument(error: error.description))
        case .refused, .startFailed:
            return encode(.badGateway, ErrorDocument(error: error.description))
        case .notStored, .versionNotKept:
            return encode(.internalServerError, ErrorDocument(error: error.description))
        case .versionRefused(.unknownVersion):
            return encode(.notFound, ErrorDocument(error: error.description))
        case .versionRefused(.noEarlierVersion):
            return encode(.conflict, ErrorDocument(error: error.description))
        case .versionRefused:
            return encode(.internalServerError, ErrorDocument(error: error.description))
        case .unknownFunction(let id):
            return unknown(id)
        }
    }

    private static func unknown(_ id: String) -> ControlAnswer {
        encode(.notFound, ErrorDocument(error: "no function \(id) is deployed"))
    }

    /// `value` as the control API's JSON (also `GET /status.json` on the metrics port).
    static func encode<T: Encodable>(_ status: HTTPResponseStatus, _ value: T) -> ControlAnswer {
        do {
            return ControlAnswer(status: status, body: try ControlJSON.encoder().encode(value))
        } catch {
            return ControlAnswer(
                status: .internalServerError, body: Data("{\"error\":\"cannot encode the answer\"}".utf8))
        }
    }
}
