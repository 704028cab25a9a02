import AetherCore
import AetherIPC
import AetherSystem
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The CLI's side of the control API: one HTTP/1.1 request per connection over the Unix socket,
/// with plain blocking sockets (the CLI has nothing else to do meanwhile).
public struct ControlClient: Sendable {
    public let socketPath: String
    /// How long to wait for an answer (a deploy waits for handlers to start).
    public var timeoutSeconds: Int = 120

    public init(socketPath: String) { self.socketPath = socketPath }

    /// True if something accepts connections on the socket.
    public static func answers(socketPath: String) -> Bool {
        guard let fd = try? Posix.connectUnixSocket(socketPath) else { return false }
        OwnedDescriptor(owning: fd).close()
        return true
    }

    public func status() throws(OrchestratorError) -> OrchestratorStatus {
        try decode(OrchestratorStatus.self, try send("GET", "/v1/status"))
    }

    public func function(_ id: String) throws(OrchestratorError) -> FunctionStatus {
        try decode(FunctionStatus.self, try send("GET", "/v1/functions/\(id)"))
    }

    public func logs(_ id: String, lines: Int) throws(OrchestratorError) -> LogsDocument {
        try decode(LogsDocument.self, try send("GET", "/v1/functions/\(id)/logs?lines=\(lines)"))
    }

    public func deploy(_ request: DeployRequest) throws(OrchestratorError) -> DeployResult {
        let body: Data
        do {
            body = try ControlJSON.encoder().encode(request)
        } catch {
            throw .requestFailed(status: 0, message: "cannot encode the deploy request: \(error)")
        }
        return try decode(DeployResult.self, try send("POST", "/v1/deploy", body: body))
    }

    /// `aether rm`: the function stops (drained first), gives its port back and leaves the
    /// stored state.
    public func remove(_ id: String) throws(OrchestratorError) -> RemoveResult {
        try decode(RemoveResult.self, try send("DELETE", "/v1/functions/\(id)"))
    }

    public func progress(_ name: String, after: Int) throws(OrchestratorError) -> ProgressDocument {
        try decode(ProgressDocument.self, try send("GET", "/v1/progress/\(name)?after=\(after)"))
    }

    public func versions(_ id: String) throws(OrchestratorError) -> VersionsDocument {
        try decode(VersionsDocument.self, try send("GET", "/v1/functions/\(id)/versions"))
    }

    public func rollback(_ id: String, to number: Int?) throws(OrchestratorError) -> RollbackResult {
        let body: Data
        do {
            body = try ControlJSON.encoder().encode(RollbackRequest(to: number))
        } catch {
            throw .requestFailed(status: 0, message: "cannot encode the rollback request: \(error)")
        }
        return try decode(RollbackResult.self, try send("POST", "/v1/functions/\(id)/rollback", body: body))
    }

    public func down() throws(OrchestratorError) {
        _ = try send("POST", "/v1/down")
    }

    /// Asks the orchestrator to start a successor running `executable`, which takes over.
    public func restart(executable: String) throws(OrchestratorError) -> RestartResult {
        let body: Data
        do {
            body = try ControlJSON.encoder().encode(RestartRequest(executable: executable))
        } catch {
            throw .requestFailed(status: 0, message: "cannot encode the restart request: \(error)")
        }
        return try decode(RestartResult.self, try send("POST", "/v1/restart", body: body))
    }

    /// Tells the orchestrator its successor serves: it lets go and stops.
    func handOver() throws(OrchestratorError) {
        _ = try send("POST", "/v1/handover")
    }

    /// The raw JSON of a GET, for `--json`.
    public func raw(_ path: String) throws(OrchestratorError) -> [UInt8] {
        Array(try send("GET", path))
    }

    // MARK: Transport

    /// Sends one request and returns the body of a 2xx answer; anything else is an error.
    private func send(_ method: String, _ path: String, body: Data = Data()) throws(OrchestratorError) -> Data {
        let connection: OwnedDescriptor
        do {
            connection = OwnedDescriptor(owning: try Posix.connectUnixSocket(socketPath))
        } catch {
            throw .notRunning(controlSocket: socketPath, reason: error.reason)
        }
        let fd = connection.rawValue
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        var request = Data(
            "\(method) \(path) HTTP/1.1\r\nHost: aether\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
                .utf8)
        request.append(body)
        var offset = 0
        while offset < request.count {
            do {
                // A stream socket's send takes at least a byte or fails, so this ends.
                offset += try systemCall("send", on: socketPath, failsWith: .minusOne) {
                    request.withUnsafeBytes {
                        Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, CInt(MSG_NOSIGNAL))
                    }
                }
            } catch {
                throw .notRunning(controlSocket: socketPath, reason: "send: \(error.reason)")
            }
        }
        var answer = Data()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n: Int
            do {
                n = try systemCall("recv", on: socketPath, failsWith: .minusOne) {
                    chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                }
            } catch {
                throw .requestFailed(status: 0, message: "no answer from the orchestrator: \(error.reason)")
            }
            if n == 0 { break }
            answer.append(contentsOf: chunk[..<n])
        }
        guard let split = answer.firstRange(of: Data("\r\n\r\n".utf8)) else {
            throw .requestFailed(status: 0, message: "the orchestrator closed the connection without an answer")
        }
        let statusLine =
            String(decoding: answer[..<split.lowerBound], as: UTF8.self).split(separator: "\r\n").first ?? ""
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        let payload = Data(answer[split.upperBound...])
        guard (200..<300).contains(status) else {
            if let document = try? ControlJSON.decoder().decode(ErrorDocument.self, from: payload) {
                let details = document.diagnostics.map { "\n  " + $0.joined(separator: "\n  ") } ?? ""
                throw .requestFailed(status: status, message: document.error + details)
            }
            throw .requestFailed(status: status, message: String(decoding: payload, as: UTF8.self))
        }
        return payload
    }

    private func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws(OrchestratorError) -> T {
        do {
            return try ControlJSON.decoder().decode(type, from: data)
        } catch {
            throw .requestFailed(status: 200, message: "unexpected answer: \(error)")
        }
    }
}
