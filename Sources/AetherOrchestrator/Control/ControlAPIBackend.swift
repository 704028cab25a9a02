/// What the control API and the metrics port serve. The orchestrator implements it; the
/// servers know only this.
protocol ControlAPIBackend: Sendable {
    func status() -> OrchestratorStatus
    /// The Prometheus text of `GET /metrics`.
    func metricsText() -> String
    func functionStatus(_ id: String) -> FunctionStatus?
    func logs(of id: String, lines: Int) -> LogsDocument?
    func deploy(_ request: DeployRequest) async throws(DeploymentError) -> DeployResult
    func remove(_ id: String) async throws(DeploymentError) -> RemoveResult
    func versions(of id: String) -> VersionsDocument?
    /// The progress lines of the deploy the client named `name`, from line `after` on.
    func progress(of name: String, after: Int) -> ProgressDocument
    func rollback(_ id: String, to number: Int?) async throws(DeploymentError) -> RollbackResult
    func requestShutdown()
    /// Starts a successor that takes over (`aether restart`).
    func restart(_ request: RestartRequest) throws(OrchestratorError) -> RestartResult
    /// The successor serves: let go of the ports and the control socket's path, finish, stop.
    func handOver()
}
