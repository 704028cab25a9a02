import AetherCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The command line and environment an instance of a function is started with
/// (docs/handler-protocol.md, "Start").
struct HandlerLaunch: Sendable {
    let program: String
    let arguments: [String]
    /// Look `program` up in PATH (for `python3`).
    let searchPath: Bool
    let environment: [String: String]

    /// How Python starts the SDK runtime: `python3 -m aetherless` would do the same, but runpy
    /// imports importlib.util, contextlib, collections and functools (~1 MB in every snapshot
    /// image, and some ms of every cold start).
    static let pythonRuntimeCommand = "import sys, aetherless.runtime as r; sys.exit(r.main())"

    /// Variables passed on from the orchestrator's own environment; everything else a handler
    /// sees comes from its configuration, so two hosts run it alike.
    static let inherited = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONDONTWRITEBYTECODE"]

    /// The `inherited` variables as they are in our environment (PATH always set).
    static func inheritedEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        for name in inherited {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        if environment["PATH"] == nil { environment["PATH"] = "/usr/local/bin:/usr/bin:/bin" }
        return environment
    }

    /// `python`: the orchestrator's `python` setting (an absolute path, or a name looked up in PATH).
    /// `confined`: the handler runs in a sandbox, where the orchestrator's HOME is not its own:
    /// HOME and TMPDIR are its private /tmp (the configuration's `environment` may still say
    /// otherwise).
    init(function: FunctionConfig, socketPath: String, pythonSDK: String?, python: String, confined: Bool = false) {
        var environment = Self.inheritedEnvironment()
        if confined {
            environment["HOME"] = "/tmp"
            environment["TMPDIR"] = "/tmp"
        }
        environment.merge(function.environment) { _, configured in configured }
        // sdk handlers get their connection as AETHER_CONTROL_FD instead (InstanceLauncher).
        if function.handlerProtocol == .process { environment["AETHER_SOCKET"] = socketPath }
        environment["AETHER_FUNCTION_ID"] = function.id.rawValue
        environment["AETHER_TRIGGER_PORT"] = String(function.triggerPort.rawValue)
        environment["AETHER_PUBLIC_PORT"] = String(function.triggerPort.rawValue)
        environment["AETHER_PROTOCOL"] = function.handlerProtocol.rawValue
        environment["AETHER_CONCURRENCY"] = String(function.concurrency.rawValue)
        // asgi:/wsgi:: the runtime serves that app of the module through its adapter.
        if let app = function.app { environment["AETHER_APP"] = app.environmentValue }

        switch (function.launcher, function.handlerProtocol) {
        case (.python, .process):
            program = python
            arguments = [function.handlerPath]
            searchPath = !python.hasPrefix("/")
        case (.python, .sdk):
            program = python
            arguments = ["-c", Self.pythonRuntimeCommand, function.handlerPath]
            searchPath = !python.hasPrefix("/")
            if let pythonSDK {
                let existing = environment["PYTHONPATH"].map { ":" + $0 } ?? ""
                environment["PYTHONPATH"] = pythonSDK + existing
            }
        case (.executable, _):
            program = function.handlerPath
            arguments = []
            searchPath = false
        }
        self.environment = environment
    }

    /// `listenPort`: the port a process handler binds (the trigger port itself with
    /// `dataplane: sockets`). With eBPF it is a private port and the kernel steers the trigger
    /// port to it, so the handler gets it under both names it may read: AETHER_LISTEN_PORT, and
    /// AETHER_TRIGGER_PORT, which a handler written to the seed's protocol binds; the port
    /// clients use is AETHER_PUBLIC_PORT.
    func environment(instance: Int, listenPort: UInt16? = nil) -> [String: String] {
        var environment = environment
        environment["AETHER_INSTANCE"] = String(instance)
        if let listenPort {
            environment["AETHER_LISTEN_PORT"] = String(listenPort)
            environment["AETHER_TRIGGER_PORT"] = String(listenPort)
        }
        return environment
    }
}

/// Finds the Python handler runtime (`sdk/python`, the folder holding the `aetherless` package).
public enum PythonSDKLocator {
    /// `AETHER_PYTHON_SDK` if set, else the `sdk/python` folder of the source tree the running
    /// `aether` binary was built in (it lives under `.build/`), else nil.
    public static func locate() -> String? {
        if let value = getenv("AETHER_PYTHON_SDK") {
            let path = String(cString: value)
            return isSDK(path) ? path : nil
        }
        guard let executable = realpath("/proc/self/exe", nil) else { return nil }
        defer { free(executable) }
        var folder = String(cString: executable)
        while let slash = folder.lastIndex(of: "/"), slash != folder.startIndex {
            folder = String(folder[..<slash])
            let candidate = folder + "/sdk/python"
            if isSDK(candidate) { return candidate }
        }
        return nil
    }

    private static func isSDK(_ folder: String) -> Bool {
        access(folder + "/aetherless/__main__.py", R_OK) == 0
    }
}
