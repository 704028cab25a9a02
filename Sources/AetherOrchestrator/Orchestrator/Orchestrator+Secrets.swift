import AetherCore

// The secrets store at `up` and `deploy`: every secret a function names must be stored, and the
// bearer tokens of functions with `auth:` are read (again at every deploy, so a redeploy picks
// up a changed secret). Secret contents never reach a log line or an error.
extension Orchestrator {
    /// `<state_dir>/secrets`, the store `aether secret` writes.
    public var secretStore: SecretStore { SecretStore(stateDirectory: store.folder) }

    /// Checks that every secret `functions` name is stored and reads their bearer tokens; throws
    /// (naming each function and missing secret) before anything is started.
    func loadSecrets(for functions: [FunctionConfig]) throws(AetherError) -> [FunctionID: BearerToken] {
        let secrets = secretStore
        var tokens: [FunctionID: BearerToken] = [:]
        do {
            try secrets.verify(functions)
            for function in functions {
                if let token = try secrets.bearerToken(of: function) { tokens[function.id] = token }
            }
        } catch {
            throw .secrets(error)
        }
        return tokens
    }

    /// Gives the gateway the tokens of `functions` (a function without `auth:` has none).
    func installTokens(_ tokens: [FunctionID: BearerToken], for functions: [FunctionConfig]) {
        gateway.routes.tokens.install(tokens, for: functions.map(\.id))
    }
}

extension Orchestrator {
    /// Runs `body`, an error of which refuses the deploy before anything started.
    static func refusing<T>(_ body: () throws(AetherError) -> T) throws(DeploymentError) -> T {
        do {
            return try body()
        } catch {
            throw .refused(error)
        }
    }
}
