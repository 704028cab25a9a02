public import AetherCore
import AetherSystem

/// The files a function's code is made of: its handler file and, for a Python handler, the
/// modules beside it. What a kept image's key covers and what `aether dev` watches.
public enum FunctionCode {
    public static func files(of config: FunctionConfig) -> [String] {
        var files = [config.handlerPath]
        guard config.launcher == .python else { return files }
        let folder = config.handlerPath.lastIndex(of: "/").map { String(config.handlerPath[..<$0]) } ?? "."
        for entry in (Posix.entries(of: folder) ?? []).sorted(by: { $0.name < $1.name })
        where entry.name.hasSuffix(".py") && !entry.isDirectory {
            let path = folder + "/" + entry.name
            if path != config.handlerPath { files.append(path) }
        }
        return files
    }
}

extension Orchestrator {
    /// Why a deploy `aether dev` started was not applied (the running version keeps serving).
    public struct RedeployFailure: Error, CustomStringConvertible {
        public let description: String
    }

    /// What `aether dev` does when a watched file changes: the same all-or-nothing deploy as
    /// `aether deploy FILE`, also replacing `replacing` (functions whose code changed in a
    /// module beside an unchanged handler file).
    public func redeploy(configFile: String, replacing: [FunctionID]) async throws(RedeployFailure) -> DeployResult {
        do {
            return try await deploy(
                DeployRequest(configFile: configFile, force: false, replacing: replacing.map(\.rawValue)))
        } catch {
            throw RedeployFailure(description: error.description)
        }
    }
}
