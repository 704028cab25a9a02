import AetherCore
import NIOCore
import NIOHTTP1
import NIOPosix

/// `metrics_port`: `GET /metrics` on 127.0.0.1 for a Prometheus scraper, and nothing else (the
/// control API stays on its 0600 Unix socket).
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
            let found = head.method == .GET && head.uri.split(separator: "?").first == "/metrics"
            let text = found ? backend.metricsText() : "only GET /metrics is served here\n"
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: found ? OrchestratorMetrics.contentType : "text/plain")
            headers.add(name: "content-length", value: String(text.utf8.count))
            if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
            context.write(
                wrapOutboundOut(
                    .head(HTTPResponseHead(version: head.version, status: found ? .ok : .notFound, headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            let done = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
            if !head.isKeepAlive {
                done.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            }
        }
    }
}
