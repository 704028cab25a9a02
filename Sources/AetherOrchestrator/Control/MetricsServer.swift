import AetherCore
import FoundationEssentials
import NIOCore
import NIOHTTP1
import NIOPosix

/// `metrics_port`, on 127.0.0.1: `GET /metrics` for a Prometheus scraper, `GET /` the live page
/// (`StatusPage`) and `GET /status.json` the status document it polls, and nothing else (the
/// control API, which changes things, stays on its 0600 Unix socket).
final class MetricsServer: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    static func bind(
        port: Port, backend: any ControlAPIBackend, group: any EventLoopGroup
    ) async throws(AetherError)
        -> MetricsServer
    {
        do {
            let channel = try await ServerBootstrap.http(group: group) { MetricsHandler(backend: backend) }
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: "127.0.0.1", port: Int(port.rawValue)).get()
            return MetricsServer(channel: channel)
        } catch {
            throw .orchestrator(
                .bindFailed(
                    what: "metrics (metrics_port)", address: "127.0.0.1:\(port)",
                    reason: SystemErrorText.describe(error)))
        }
    }

    func close() async {
        try? await channel.close()
    }
}

/// The metrics port's endpoints: one request in, one answer out.
///
/// | method | path | answer |
/// |---|---|---|
/// | GET | /metrics | the Prometheus text (`ControlAPIBackend.metricsText`) |
/// | GET | / | the live page (`StatusPage.html`): one HTML document, its CSS and script inline |
/// | GET | /status.json | `OrchestratorStatus` of the control API's `GET /v1/status`, without paths and PIDs (`published`) |
///
/// Anything else (another path, another method, HEAD included) is 404 with a line naming these.
enum MetricsRouter {
    struct Answer: Sendable {
        var status: HTTPResponseStatus
        var contentType: String
        var body: [UInt8]
        /// `cache-control: no-store` (the page and its document change with every request).
        var noStore: Bool
    }

    static let notFoundText = "only GET /, /status.json and /metrics are served here\n"

    static func route(method: HTTPMethod, uri: String, backend: any ControlAPIBackend) -> Answer {
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch (method, path) {
        case (.GET, "/metrics"):
            return Answer(
                status: .ok, contentType: OrchestratorMetrics.contentType, body: Array(backend.metricsText().utf8),
                noStore: false)
        case (.GET, "/"):
            return Answer(
                status: .ok, contentType: "text/html; charset=utf-8", body: Array(StatusPage.html.utf8), noStore: true)
        case (.GET, "/status.json"):
            let answer = ControlRouter.encode(.ok, published(backend.status()))
            return Answer(
                status: answer.status, contentType: answer.contentType, body: Array(answer.body), noStore: true)
        default:
            return Answer(status: .notFound, contentType: "text/plain", body: Array(notFoundText.utf8), noStore: false)
        }
    }

    /// The status document as the metrics port shows it: anything that reaches 127.0.0.1 can
    /// read it (a function on the host network too), so it carries the numbers and names the
    /// page shows, and no paths, PIDs, uids or shared-memory names (`aether list --json`, on the
    /// 0600 control socket, has them).
    static func published(_ status: OrchestratorStatus) -> OrchestratorStatus {
        var status = status
        status.pid = 0
        status.configFile = ""
        status.stateFile = ""
        status.controlSocket = ""
        status.functions = status.functions.map { function in
            var function = function
            function.handler = ""
            function.snapshot?.image = ""
            function.confinement = nil
            function.instances = function.instances.map { instance in
                var instance = instance
                instance.pid = 0
                instance.region = nil
                return instance
            }
            return function
        }
        if var ebpf = status.ebpf {
            ebpf.ports = ebpf.ports.map { port in
                var port = port
                port.pid = 0
                return port
            }
            status.ebpf = ebpf
        }
        return status
    }
}

private final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let backend: any ControlAPIBackend
    private var head: HTTPRequestHead?

    init(backend: any ControlAPIBackend) { self.backend = backend }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let answer = MetricsRouter.route(method: head.method, uri: head.uri, backend: backend)
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: answer.contentType)
            headers.add(name: "content-length", value: String(answer.body.count))
            if answer.noStore { headers.add(name: "cache-control", value: "no-store") }
            if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
            context.write(
                wrapOutboundOut(
                    .head(HTTPResponseHead(version: head.version, status: answer.status, headers: headers))),
                promise: nil)
            var buffer = context.channel.allocator.buffer(capacity: answer.body.count)
            buffer.writeBytes(answer.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let done = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
            if !head.isKeepAlive {
                done.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            }
        }
    }
}
