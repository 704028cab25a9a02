/// What the control API and the metrics port serve. The orchestrator implements it; the
/// servers know only this.
protocol ControlAPIBackend: Sendable {
    func status() -> OrchestratorStatus
    func functionStatus(_ id: String) -> FunctionStatus?
    func logs(of id: String, lines: Int) -> LogsDocument?
    func deploy(_ request: DeployRequest) async throws(DeploymentError) -> DeployResult
    func remove(_ id: String) async throws(DeploymentError) -> RemoveResult
    func requestShutdown()
}
