import FoundationEssentials
import NIOHTTP1
import Testing

@testable import AetherOrchestrator

/// The metrics port's endpoints: `/metrics` as before, the live page at `/` and the status
/// document it polls at `/status.json` (the control API's JSON); everything else 404. The page in
/// a browser, under load, is tests/integration/test_web_page.py.
@Suite struct MetricsRouterTests {
    /// A backend that answers the two reads the metrics port makes.
    struct Backend: ControlAPIBackend {
        let document: OrchestratorStatus
        let metrics: String

        func status() -> OrchestratorStatus { document }
        func metricsText() -> String { metrics }
        func functionStatus(_ id: String) -> FunctionStatus? { document.functions.first { $0.id == id } }
        func logs(of id: String, lines: Int) -> LogsDocument? { nil }
        func deploy(_ request: DeployRequest) async throws(DeploymentError) -> DeployResult {
            throw .unknownFunction("deploy")
        }
        func remove(_ id: String) async throws(DeploymentError) -> RemoveResult { throw .unknownFunction(id) }
        func versions(of id: String) -> VersionsDocument? { nil }
        func progress(of name: String, after: Int) -> ProgressDocument { ProgressDocument(lines: [], next: after) }
        func rollback(_ id: String, to number: Int?) async throws(DeploymentError) -> RollbackResult {
            throw .unknownFunction(id)
        }
        func requestShutdown() {}
        func restart(_ request: RestartRequest) throws(OrchestratorError) -> RestartResult {
            throw .conflict("restart")
        }
        func handOver() {}
    }

    static let backend = Backend(
        document: OrchestratorStatus(
            ready: true, version: "1.2.3", pid: 42, configFile: "/etc/aether.yaml", stateFile: "/var/lib/state.json",
            controlSocket: "/run/aether.sock", listenAddress: "127.0.0.1", uptimeSeconds: 12.5,
            functions: [
                FunctionStatus(
                    id: "alpha", port: 8080, protocol: "sdk", state: "running", lifecycle: "Running",
                    handler: "/srv/alpha.py", queueDepth: 3, maxInstances: 2, concurrency: 1,
                    instances: [
                        InstanceStatus(
                            number: 0, pid: 100, phase: "serving", inFlight: 1, served: 7, uptimeSeconds: 2,
                            region: nil, memoryBytes: 1_048_576, origin: "spawn", startupMilliseconds: 20.5)
                    ],
                    stats: StatsSummary(
                        invocations: 7, errors: 1, timeouts: 0, rejected: 0, unauthorized: 0, crashes: 0,
                        p50Milliseconds: 1.25, p95Milliseconds: nil, p99Milliseconds: 4.5, window: 7,
                        lastStartupMilliseconds: 20.5, restores: 0, restoreFailures: 0, latencyViolations: 0,
                        restoreP50Milliseconds: nil, restoreP99Milliseconds: nil, spawnColdStarts: 1,
                        restoreColdStarts: 0,
                        starts: [StartStats(kind: "spawn", count: 1, p50Milliseconds: 20.5, p99Milliseconds: 20.5)]),
                    snapshot: nil, confinement: nil)
            ],
            dataplane: "sockets", ebpf: nil, warmPool: nil),
        metrics: "# TYPE faas_invocations counter\nfaas_invocations_total{function=\"alpha\"} 7\n")

    static func get(_ uri: String, method: HTTPMethod = .GET) -> MetricsRouter.Answer {
        MetricsRouter.route(method: method, uri: uri, backend: backend)
    }

    @Test func metricsIsThePrometheusText() {
        let answer = Self.get("/metrics")
        #expect(answer.status == .ok)
        #expect(answer.contentType == "text/plain; version=0.0.4")
        #expect(answer.body == Array(Self.backend.metrics.utf8))
        #expect(!answer.noStore)
        #expect(Self.get("/metrics?name=x").body == answer.body)
    }

    @Test func statusJSONIsTheControlAPIsDocument() throws {
        let answer = Self.get("/status.json")
        #expect(answer.status == .ok)
        #expect(answer.contentType == "application/json")
        #expect(answer.noStore)
        // The control API's document, encoded the same way, without what only root should see.
        let published = MetricsRouter.published(Self.backend.document)
        #expect(answer.body == Array(try ControlJSON.encoder().encode(published)))
        let decoded = try ControlJSON.decoder().decode(OrchestratorStatus.self, from: Data(answer.body))
        #expect(decoded == published)
        #expect(decoded.functions.map(\.id) == Self.backend.document.functions.map(\.id))
        #expect(decoded.pid == 0 && decoded.configFile.isEmpty && decoded.controlSocket.isEmpty)
        #expect(decoded.functions.allSatisfy { $0.handler.isEmpty && $0.confinement == nil })
        #expect(decoded.functions.flatMap(\.instances).allSatisfy { $0.pid == 0 && $0.region == nil })
        // The keys the page reads are there, in the control API's snake_case.
        let text = String(decoding: answer.body, as: UTF8.self)
        for key in ["\"uptime_seconds\"", "\"queue_depth\"", "\"in_flight\"", "\"p99_milliseconds\"", "\"starts\""] {
            #expect(text.contains(key), "\(key) in \(text)")
        }
        #expect(Self.get("/status.json?t=1").status == .ok)
    }

    @Test func thePageIsOneSelfContainedDocument() {
        let answer = Self.get("/")
        #expect(answer.status == .ok)
        #expect(answer.contentType == "text/html; charset=utf-8")
        #expect(answer.noStore)
        let page = String(decoding: answer.body, as: UTF8.self)
        #expect(page.hasPrefix("<!doctype html>"))
        #expect(page.contains("fetch(\"status.json\""))
        #expect(page.components(separatedBy: "<canvas").count - 1 == 3)
        // Nothing from elsewhere: no URL, no external script, style sheet or image.
        for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
            #expect(!page.contains(external), "\(external) in the page")
        }
        // The fields of the status document it reads exist in the model (snake_case there).
        for field in ["uptime_seconds", "queue_depth", "in_flight", "p50_milliseconds", "p99_milliseconds"] {
            #expect(page.contains(field), "\(field)")
        }
        #expect(Self.get("/?refresh=1").status == .ok)
    }

    @Test func everythingElseIsNotFound() {
        for (method, uri) in [
            (HTTPMethod.GET, "/index.html"), (.GET, "/status"), (.GET, "/metrics/"), (.HEAD, "/"), (.HEAD, "/metrics"),
            (.POST, "/status.json"), (.GET, ""),
        ] {
            let answer = Self.get(uri, method: method)
            #expect(answer.status == .notFound, "\(method) \(uri)")
            #expect(answer.contentType == "text/plain")
            #expect(
                String(decoding: answer.body, as: UTF8.self)
                    == "only GET /, /status.json and /metrics are served here\n")
        }
    }
}
