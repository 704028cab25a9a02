import AetherSystem
internal import Yams

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Walks the YAML node tree against the configuration schema and collects every problem.
///
/// It never stops at the first problem: a bad value is reported and the walk goes on with the
/// next key, so one run of `aether validate` shows the whole list. Cross-entry rules (unique ids,
/// unique ports) run on whatever entries were readable.
///
/// One file on purpose (over 500 lines): it is the schema, key by key, and reads best whole.
struct ConfigValidator {
    let file: String
    let baseDirectory: String
    /// `functions: []` is valid (the deployed state after `aether rm` of the last function);
    /// a file a person writes needs at least one.
    let allowsNoFunctions: Bool
    private(set) var diagnostics: [ConfigDiagnostic] = []

    init(file: String, baseDirectory: String, allowsNoFunctions: Bool = false) {
        self.file = file
        self.baseDirectory = baseDirectory
        self.allowsNoFunctions = allowsNoFunctions
    }

    private enum Key {
        static let root = ["orchestrator", "functions"]
        static let orchestrator = [
            "shm_buffer_size", "warm_pool_size", "warm_pool_memory_mb", "restore_timeout_ms", "snapshot_dir",
            "control_socket",
            "listen_address", "client_timeout_ms", "criu_path", "metrics_port", "otlp_endpoint", "dataplane",
            "xdp_interface", "xdp_mode", "python", "state_dir", "confinement", "uid_range", "keep_versions",
        ]
        static let function = [
            "id", "memory_limit_mb", "trigger_port", "handler_path", "timeout_ms", "environment", "protocol",
            "max_instances", "concurrency", "max_queue", "max_body_bytes", "startup_timeout_ms", "snapshot",
            "min_warm", "idle_timeout_ms", "user", "network", "max_pids", "cpu_limit", "secrets", "auth", "asgi",
            "wsgi", "requirements",
        ]
        /// Keys that only mean something when the gateway terminates HTTP (`auth` included: a
        /// process handler's connections never pass through the gateway).
        static let sdkOnly = [
            "concurrency", "max_queue", "max_body_bytes", "snapshot", "min_warm", "idle_timeout_ms", "auth", "asgi",
            "wsgi", "requirements",
        ]
        static let auth = ["secret", "type"]
    }

    static let defaultMemoryLimit = MemoryLimit(uncheckedRawValue: 128)
    static let defaultTimeout = FunctionTimeout(uncheckedRawValue: 30_000)

    /// Returns the configuration if the text is well-formed enough to build one; `diagnostics`
    /// must still be empty for it to be valid.
    mutating func validate(text: String) -> AetherConfig? {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            reportYAMLError(error, text: text)
            return nil
        } catch {
            report(.malformedYAML, line: 1, column: 1, path: "", expected: "well-formed YAML", found: "\(error)")
            return nil
        }
        guard let root else {
            report(
                .emptyDocument, line: 1, column: 1, path: "",
                expected: "a mapping with a `functions` list", found: "an empty document")
            return nil
        }
        guard let fields = mappingFields(root, path: "", allowed: Key.root) else { return nil }

        var orchestrator = OrchestratorConfig()
        if let node = fields["orchestrator"]?.value, !isNull(node) {
            orchestrator = readOrchestrator(node) ?? orchestrator
        }

        var functions: [FunctionConfig] = []
        if let node = fields["functions"]?.value {
            functions = readFunctions(node, orchestrator: orchestrator)
            let warm = WarmPool.demand(of: functions)
            if warm > orchestrator.warmPoolSize.rawValue {
                // Point at warm_pool_size itself when the file sets it.
                var anchor = fields["orchestrator"]?.value ?? node
                if case .mapping(let mapping)? = fields["orchestrator"]?.value,
                    let entry = mapping.first(where: { scalarText($0.key) == "warm_pool_size" })
                {
                    anchor = entry.value
                }
                report(
                    .invalidValue, at: anchor, path: "orchestrator.warm_pool_size",
                    expected:
                        "room for the restored instances the functions keep warm: min_warm of the snapshot functions adds up to \(warm)",
                    found: String(orchestrator.warmPoolSize.rawValue))
            }
        } else {
            report(
                .missingKey, at: root, path: "functions",
                expected: "a `functions` list with at least one function", found: "no `functions` key")
        }
        return AetherConfig(orchestrator: orchestrator, functions: functions)
    }

    // MARK: Sections

    private mutating func readOrchestrator(_ node: Node) -> OrchestratorConfig? {
        let path = "orchestrator"
        guard let fields = mappingFields(node, path: path, allowed: Key.orchestrator) else { return nil }
        var config = OrchestratorConfig()
        if let value: ShmBufferSize = boundedInteger(fields, "shm_buffer_size", in: path) {
            config.shmBufferSize = value
        }
        if let value: WarmPoolSize = boundedInteger(fields, "warm_pool_size", in: path) {
            config.warmPoolSize = value
        }
        if let value: KeptVersions = boundedInteger(fields, "keep_versions", in: path) {
            config.keepVersions = value
        }
        if let value: WarmPoolMemory = boundedInteger(fields, "warm_pool_memory_mb", in: path) {
            config.warmPoolMemory = value
        }
        if let value: RestoreTimeout = boundedInteger(fields, "restore_timeout_ms", in: path) {
            config.restoreTimeout = value
        }
        if let value: ClientTimeout = boundedInteger(fields, "client_timeout_ms", in: path) {
            config.clientTimeout = value
        }
        if let value: Port = boundedInteger(fields, "metrics_port", in: path) {
            config.metricsPort = value
        }
        if let entry = fields["otlp_endpoint"], let text = string(entry.value, path: "\(path).otlp_endpoint") {
            do {
                config.otlpEndpoint = try OTLPEndpoint(text: text)
            } catch {
                report(
                    .invalidValue, at: entry.value, path: "\(path).otlp_endpoint", expected: error.expected,
                    found: quoted(text))
            }
        }
        if let entry = fields["criu_path"], let text = string(entry.value, path: "\(path).criu_path") {
            if text.hasPrefix("/") {
                config.criuPath = LexicalPath.normalized(text)
            } else {
                report(
                    .invalidValue, at: entry.value, path: "\(path).criu_path",
                    expected: "an absolute path of the criu binary", found: quoted(text))
            }
        }
        if let entry = fields["snapshot_dir"], let text = string(entry.value, path: "\(path).snapshot_dir") {
            if text.hasPrefix("/") {
                config.snapshotDirectory = text
            } else {
                report(
                    .invalidValue, at: entry.value, path: "\(path).snapshot_dir",
                    expected: "an absolute path", found: quoted(text))
            }
        }
        if let entry = fields["state_dir"], let text = string(entry.value, path: "\(path).state_dir") {
            if text.hasPrefix("/") {
                config.stateDirectory = LexicalPath.normalized(text)
            } else {
                report(
                    .invalidValue, at: entry.value, path: "\(path).state_dir",
                    expected: "an absolute path of a folder", found: quoted(text))
            }
        }
        if let entry = fields["control_socket"], let text = string(entry.value, path: "\(path).control_socket") {
            if !text.hasPrefix("/") || text.hasSuffix("/") {
                report(
                    .invalidValue, at: entry.value, path: "\(path).control_socket",
                    expected: "an absolute path of a socket file", found: quoted(text))
            } else if text.utf8.count > UnixSocketPath.maximumLength {
                report(
                    .invalidValue, at: entry.value, path: "\(path).control_socket",
                    expected:
                        "a path of at most \(UnixSocketPath.maximumLength) bytes (the limit of Unix socket paths)",
                    found: "\(quoted(text)), \(text.utf8.count) bytes")
            } else {
                config.controlSocket = LexicalPath.normalized(text)
            }
        }
        if let entry = fields["listen_address"], let text = string(entry.value, path: "\(path).listen_address") {
            if IPAddressText.isValid(text) {
                config.listenAddress = text
            } else {
                report(
                    .invalidValue, at: entry.value, path: "\(path).listen_address",
                    expected: "an IPv4 or IPv6 address such as 127.0.0.1, 0.0.0.0 or ::1", found: quoted(text))
            }
        }
        readDataplane(fields, into: &config)
        if let entry = fields["confinement"] {
            if let flag = bool(entry.value) {
                config.confinement = flag
            } else {
                report(
                    .wrongType, at: entry.value, path: "\(path).confinement", expected: "true or false",
                    found: describe(entry.value))
            }
        }
        if let entry = fields["uid_range"], let text = string(entry.value, path: "\(path).uid_range") {
            do {
                config.uidRange = try UIDRange(text: text)
            } catch {
                report(
                    .invalidValue, at: entry.value, path: "\(path).uid_range", expected: error.expected,
                    found: error.value)
            }
        }
        if let entry = fields["python"], let text = string(entry.value, path: "\(path).python") {
            if text.hasPrefix("/") {
                do throws(SystemCallFailure) {
                    try systemCall("access", on: text, failsWith: .minusOne) { access(text, X_OK) }
                    config.python = LexicalPath.normalized(text)
                } catch {
                    report(
                        .handlerUnusable, at: entry.value, path: "\(path).python",
                        expected: "an executable Python interpreter", found: "\(text): \(error.reason)")
                }
            } else if !text.isEmpty && !text.contains("/") && !text.contains(where: \.isWhitespace) {
                config.python = text
            } else {
                report(
                    .invalidValue, at: entry.value, path: "\(path).python",
                    expected:
                        "an absolute path of a Python interpreter, or a command name found in PATH such as python3",
                    found: quoted(text))
            }
        }
        return config
    }

    /// `dataplane`, `xdp_interface`, `xdp_mode` and how they go with `listen_address`.
    private mutating func readDataplane(_ fields: Fields, into config: inout OrchestratorConfig) {
        let path = "orchestrator"
        if let entry = fields["dataplane"], let text = string(entry.value, path: "\(path).dataplane") {
            if let value = OrchestratorConfig.Dataplane(rawValue: text) {
                config.dataplane = value
            } else {
                report(
                    .invalidValue, at: entry.value, path: "\(path).dataplane", expected: "one of ebpf, sockets",
                    found: quoted(text))
            }
        }
        if let entry = fields["xdp_interface"], let text = string(entry.value, path: "\(path).xdp_interface") {
            let valid =
                !text.isEmpty && text.utf8.count <= 15 && text != "." && text != ".."
                && !text.contains(where: { $0 == "/" || $0 == ":" || $0.isWhitespace })
            if !valid {
                report(
                    .invalidValue, at: entry.value, path: "\(path).xdp_interface",
                    expected: "a network interface name (1 to 15 bytes, no '/', ':' or spaces) such as lo",
                    found: quoted(text))
            } else if config.dataplane != .ebpf {
                report(
                    .invalidValue, at: entry.value, path: "\(path).xdp_interface",
                    expected: "no XDP interface with dataplane: sockets (XDP is part of the eBPF data plane)",
                    found: quoted(text))
            } else {
                config.xdpInterface = text
            }
        }
        if let entry = fields["xdp_mode"], let text = string(entry.value, path: "\(path).xdp_mode") {
            if let value = OrchestratorConfig.XDPMode(rawValue: text) {
                config.xdpMode = value
                if fields["xdp_interface"] == nil {
                    report(
                        .invalidValue, at: entry.value, path: "\(path).xdp_mode",
                        expected: "xdp_mode only next to xdp_interface", found: quoted(text))
                }
            } else {
                report(
                    .invalidValue, at: entry.value, path: "\(path).xdp_mode", expected: "one of generic, native",
                    found: quoted(text))
            }
        }
        // sk_lookup can filter on one IPv4 address, or steer every address.
        if config.dataplane == .ebpf && config.listenAddress.contains(":") && config.listenAddress != "::",
            let entry = fields["listen_address"]
        {
            report(
                .invalidValue, at: entry.value, path: "\(path).listen_address",
                expected:
                    "with dataplane: ebpf, an IPv4 address or :: (all addresses); use dataplane: sockets to listen on one IPv6 address",
                found: quoted(config.listenAddress))
        }
    }

    private mutating func readFunctions(_ node: Node, orchestrator: OrchestratorConfig) -> [FunctionConfig] {
        guard case .sequence(let sequence) = node else {
            report(.wrongType, at: node, path: "functions", expected: "a list of functions", found: describe(node))
            return []
        }
        if sequence.isEmpty && !allowsNoFunctions {
            report(
                .invalidValue, at: node, path: "functions", expected: "at least one function", found: "an empty list")
        }
        var functions: [FunctionConfig] = []
        var firstIDs: [FunctionID: Node] = [:]
        var firstPorts: [Port: (FunctionID?, Node)] = [:]
        for (index, item) in sequence.enumerated() {
            let path = "functions[\(index)]"
            guard let fields = mappingFields(item, path: path, allowed: Key.function) else { continue }
            let id = readFunctionID(fields, at: item, path: path)
            let port: Port? = boundedInteger(fields, "trigger_port", in: path, requiredIn: item)
            let memory: MemoryLimit? = boundedInteger(fields, "memory_limit_mb", in: path)
            let timeout: FunctionTimeout? = boundedInteger(fields, "timeout_ms", in: path)
            let handler = readHandlerPath(fields, at: item, path: path)
            let environment = readEnvironment(fields, path: path)
            let serving = readServing(fields, path: path, orchestrator: orchestrator)
            let confinement = readConfinement(fields, path: path)
            let requirements = readRequirements(fields, path: path)
            if let id, let idNode = fields["id"]?.value {
                let socket = UnixSocketPath.handlerSocket(function: id, controlSocket: orchestrator.controlSocket)
                if socket.utf8.count > UnixSocketPath.maximumLength {
                    report(
                        .invalidValue, at: idNode, path: "\(path).id",
                        expected:
                            "an id short enough for its handler socket path (at most \(UnixSocketPath.maximumLength) bytes; or a shorter orchestrator.control_socket folder)",
                        found: "\(quoted(socket)), \(socket.utf8.count) bytes")
                }
            }

            if let id, let idNode = fields["id"]?.value {
                if let first = firstIDs[id] {
                    report(
                        .duplicateFunctionID, at: idNode, path: "\(path).id",
                        expected:
                            "a function id not used before (\(quoted(id.rawValue)) is defined at line \(line(of: first)))",
                        found: quoted(id.rawValue))
                } else {
                    firstIDs[id] = idNode
                }
            }
            if let port, let portNode = fields["trigger_port"]?.value {
                if let (owner, first) = firstPorts[port] {
                    let ownerText = owner.map { "function \($0)" } ?? "another function"
                    report(
                        .duplicateTriggerPort, at: portNode, path: "\(path).trigger_port",
                        expected:
                            "a port no other function uses (\(port) is taken by \(ownerText) at line \(line(of: first)))",
                        found: String(port.rawValue))
                } else {
                    firstPorts[port] = (id, portNode)
                }
            }
            if let app = serving?.app, let handler, !handler.hasSuffix(".py"),
                let entry = fields[app.interface.rawValue]
            {
                report(
                    .invalidValue, at: entry.key, path: "\(path).\(app.interface.rawValue)",
                    expected: "a Python handler_path (a .py module holding the app)",
                    found: "handler_path \(quoted(handler))")
                continue
            }
            if let handler, !handler.hasSuffix(".py"), let entry = fields["requirements"] {
                report(
                    .invalidValue, at: entry.key, path: "\(path).requirements",
                    expected: "a Python handler_path (a .py module; the virtualenv is its interpreter's)",
                    found: "handler_path \(quoted(handler))")
                continue
            }
            if let id, let port, let handler, let environment, let serving, let confinement, let requirements {
                functions.append(
                    FunctionConfig(
                        id: id, memoryLimit: memory ?? Self.defaultMemoryLimit, triggerPort: port,
                        handlerPath: handler, timeout: timeout ?? Self.defaultTimeout, environment: environment,
                        handlerProtocol: serving.handlerProtocol, maxInstances: serving.maxInstances,
                        concurrency: serving.concurrency, maxQueue: serving.maxQueue, maxBody: serving.maxBody,
                        startupTimeout: serving.startupTimeout, snapshot: serving.snapshot,
                        snapshotMode: serving.snapshotMode, app: serving.app, minWarm: serving.minWarm,
                        idleTimeout: serving.idleTimeout, user: confinement.user, network: confinement.network,
                        maxPIDs: confinement.maxPIDs, cpuLimit: confinement.cpuLimit, secrets: confinement.secrets,
                        auth: confinement.auth, requirements: requirements.path))
            }
        }
        return functions
    }

    private struct Serving {
        var handlerProtocol = FunctionConfig.HandlerProtocol.sdk
        var maxInstances = InstanceLimit.standard
        var concurrency = Concurrency.standard
        var maxQueue = QueueLimit.standard
        var maxBody = BodyLimit.standard
        var startupTimeout = StartupTimeout.standard
        var snapshot = false
        var snapshotMode = FunctionConfig.SnapshotMode.standard
        var app: FunctionConfig.PythonApp?
        var minWarm = WarmCount.standard
        var idleTimeout = IdleTimeout.standard
    }

    /// Protocol, instance and queue settings; nil (after reporting) if any of them is wrong.
    private mutating func readServing(_ fields: Fields, path: String, orchestrator: OrchestratorConfig) -> Serving? {
        var serving = Serving()
        var valid = true
        if let entry = fields["protocol"] {
            let keyPath = "\(path).protocol"
            if let text = string(entry.value, path: keyPath) {
                if let value = FunctionConfig.HandlerProtocol(rawValue: text) {
                    serving.handlerProtocol = value
                } else {
                    report(
                        .invalidValue, at: entry.value, path: keyPath,
                        expected: "one of sdk, process", found: quoted(text))
                    valid = false
                }
            } else {
                valid = false
            }
        }
        func take<T: BoundedInteger>(_ key: String, into value: inout T) -> Bool {
            guard fields[key] != nil else { return true }
            guard let read: T = boundedInteger(fields, key, in: path) else { return false }
            value = read
            return true
        }
        valid = take("max_instances", into: &serving.maxInstances) && valid
        valid = take("concurrency", into: &serving.concurrency) && valid
        valid = take("max_queue", into: &serving.maxQueue) && valid
        valid = take("startup_timeout_ms", into: &serving.startupTimeout) && valid
        valid = take("min_warm", into: &serving.minWarm) && valid
        valid = take("idle_timeout_ms", into: &serving.idleTimeout) && valid
        if let entry = fields["snapshot"] {
            if let flag = bool(entry.value) {
                serving.snapshot = flag
            } else if tagName(entry.value) == .str, let text = scalarText(entry.value),
                let mode = FunctionConfig.SnapshotMode(rawValue: text)
            {
                serving.snapshot = true
                serving.snapshotMode = mode
            } else {
                report(
                    .wrongType, at: entry.value, path: "\(path).snapshot",
                    expected:
                        "true, false, \(FunctionConfig.SnapshotMode.allCases.map(\.rawValue).joined(separator: " or "))",
                    found: describe(entry.value))
                valid = false
            }
        }
        for interface in FunctionConfig.PythonApp.Interface.allCases {
            guard let entry = fields[interface.rawValue] else { continue }
            let keyPath = "\(path).\(interface.rawValue)"
            if let other = serving.app {
                report(
                    .invalidValue, at: entry.key, path: keyPath,
                    expected: "one of `asgi` and `wsgi`, not both", found: "`\(other.interface.rawValue)` set too")
                valid = false
                continue
            }
            guard let text = string(entry.value, path: keyPath) else {
                valid = false
                continue
            }
            do {
                serving.app = try FunctionConfig.PythonApp(interface, attribute: text)
            } catch {
                report(.invalidValue, at: entry.value, path: keyPath, expected: error.expected, found: quoted(text))
                valid = false
            }
        }
        if let node = fields["min_warm"]?.value, serving.minWarm.rawValue > serving.maxInstances.rawValue {
            report(
                .invalidValue, at: node, path: "\(path).min_warm",
                expected: "at most max_instances (\(serving.maxInstances.rawValue))",
                found: String(serving.minWarm.rawValue))
            valid = false
        }

        let fitting = orchestrator.largestBodyFitting
        if let node = fields["max_body_bytes"]?.value {
            if let read: BodyLimit = boundedInteger(fields, "max_body_bytes", in: path) {
                if read.bytes > fitting {
                    report(
                        .invalidValue, at: node, path: "\(path).max_body_bytes",
                        expected:
                            "at most \(fitting) bytes, the largest body one ring message carries with orchestrator.shm_buffer_size \(orchestrator.shmBufferSize.bytes)",
                        found: String(read.bytes))
                    valid = false
                } else {
                    serving.maxBody = read
                }
            } else {
                valid = false
            }
        } else if fitting < BodyLimit.standard.bytes, let reduced = try? BodyLimit(fitting) {
            serving.maxBody = reduced
        }

        if serving.handlerProtocol == .process {
            for key in Key.sdkOnly {
                guard let entry = fields[key] else { continue }
                report(
                    .invalidValue, at: entry.key, path: "\(path).\(key)",
                    expected: "no `\(key)` for a `protocol: process` handler, which serves HTTP itself",
                    found: "`\(key)` set")
                valid = false
            }
            if let node = fields["max_instances"]?.value {
                if serving.maxInstances != .one {
                    report(
                        .invalidValue, at: node, path: "\(path).max_instances",
                        expected: "1 for a `protocol: process` handler, which binds the trigger port itself",
                        found: String(serving.maxInstances.rawValue))
                    valid = false
                }
            }
            serving.maxInstances = .one
        }
        return valid ? serving : nil
    }

    private struct Confinement {
        var user: UserName?
        var network = FunctionConfig.Network.host
        var maxPIDs = PidsLimit.standard
        var cpuLimit: CPULimit?
        var secrets: [SecretName] = []
        var auth: FunctionConfig.Auth?
    }

    /// `user`, `network`, `max_pids`, `cpu_limit`, `secrets`, `auth`; nil (after reporting) if
    /// any of them is wrong. Syntax only: users and secrets are looked up when the function starts.
    private mutating func readConfinement(_ fields: Fields, path: String) -> Confinement? {
        var confinement = Confinement()
        var valid = true
        if let entry = fields["user"] {
            if let text = string(entry.value, path: "\(path).user") {
                do {
                    confinement.user = try UserName(text)
                } catch {
                    report(
                        .invalidValue, at: entry.value, path: "\(path).user", expected: error.expected,
                        found: error.value)
                    valid = false
                }
            } else {
                valid = false
            }
        }
        if let entry = fields["network"] {
            let keyPath = "\(path).network"
            if let text = string(entry.value, path: keyPath) {
                if let network = FunctionConfig.Network(rawValue: text) {
                    confinement.network = network
                    if network == .loopback, let node = fields["protocol"]?.value, scalarText(node) == "process" {
                        report(
                            .invalidValue, at: entry.value, path: keyPath,
                            expected:
                                "network: host for a `protocol: process` handler, which must serve on a port of the host",
                            found: quoted(text))
                        valid = false
                    }
                } else {
                    report(
                        .invalidValue, at: entry.value, path: keyPath, expected: "one of host, none",
                        found: quoted(text))
                    valid = false
                }
            } else {
                valid = false
            }
        }
        if fields["max_pids"] != nil {
            if let limit: PidsLimit = boundedInteger(fields, "max_pids", in: path) {
                confinement.maxPIDs = limit
            } else {
                valid = false
            }
        }
        if let entry = fields["cpu_limit"] {
            let keyPath = "\(path).cpu_limit"
            if case .scalar(let scalar) = entry.value, tagName(entry.value) == .int || tagName(entry.value) == .float {
                do {
                    confinement.cpuLimit = try CPULimit(decimal: scalar.string)
                } catch {
                    report(.invalidValue, at: entry.value, path: keyPath, expected: error.expected, found: error.value)
                    valid = false
                }
            } else {
                report(
                    .wrongType, at: entry.value, path: keyPath, expected: CPULimit.expectation,
                    found: describe(entry.value))
                valid = false
            }
        }
        if let entry = fields["secrets"] {
            if let secrets = readSecrets(entry.value, path: "\(path).secrets") {
                confinement.secrets = secrets
            } else {
                valid = false
            }
        }
        if let entry = fields["auth"] {
            if let auth = readAuth(entry.value, path: "\(path).auth") {
                confinement.auth = auth
            } else {
                valid = false
            }
        }
        return valid ? confinement : nil
    }

    /// `secrets: [NAME, ...]`: valid names, each once (null or `[]`: none).
    private mutating func readSecrets(_ node: Node, path: String) -> [SecretName]? {
        if isNull(node) { return [] }
        guard case .sequence(let sequence) = node else {
            report(.wrongType, at: node, path: path, expected: "a list of secret names", found: describe(node))
            return nil
        }
        var secrets: [SecretName] = []
        var first: [SecretName: Node] = [:]
        var valid = true
        for (index, item) in sequence.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let text = string(item, path: itemPath) else {
                valid = false
                continue
            }
            let name: SecretName
            do {
                name = try SecretName(text)
            } catch {
                report(.invalidValue, at: item, path: itemPath, expected: error.expected, found: error.value)
                valid = false
                continue
            }
            if let earlier = first[name] {
                report(
                    .invalidValue, at: item, path: itemPath,
                    expected: "each secret once (\(quoted(text)) is listed at line \(line(of: earlier)))",
                    found: quoted(text))
                valid = false
            } else {
                first[name] = item
                secrets.append(name)
            }
        }
        return valid ? secrets : nil
    }

    /// `auth: {secret: NAME, type: bearer}` (`type` optional).
    private mutating func readAuth(_ node: Node, path: String) -> FunctionConfig.Auth? {
        guard let fields = mappingFields(node, path: path, allowed: Key.auth) else { return nil }
        var valid = true
        var kind = FunctionConfig.Auth.Kind.bearer
        if let entry = fields["type"] {
            if let text = string(entry.value, path: "\(path).type") {
                if let read = FunctionConfig.Auth.Kind(rawValue: text) {
                    kind = read
                } else {
                    let allowed = FunctionConfig.Auth.Kind.allCases.map(\.rawValue).joined(separator: ", ")
                    report(
                        .invalidValue, at: entry.value, path: "\(path).type", expected: "one of \(allowed)",
                        found: quoted(text))
                    valid = false
                }
            } else {
                valid = false
            }
        }
        guard let entry = fields["secret"] else {
            report(
                .missingKey, at: node, path: "\(path).secret",
                expected: "a key `secret` (the secret holding the bearer token)", found: "no `secret` key")
            return nil
        }
        guard let text = string(entry.value, path: "\(path).secret") else { return nil }
        do {
            let secret = try SecretName(text)
            return valid ? FunctionConfig.Auth(kind: kind, secret: secret) : nil
        } catch {
            report(.invalidValue, at: entry.value, path: "\(path).secret", expected: error.expected, found: error.value)
            return nil
        }
    }

    private mutating func readFunctionID(_ fields: Fields, at item: Node, path: String) -> FunctionID? {
        guard let entry = fields["id"] else {
            report(
                .missingKey, at: item, path: "\(path).id", expected: "a key `id` (\(FunctionID.expectation))",
                found: "no `id` key")
            return nil
        }
        guard let text = string(entry.value, path: "\(path).id") else { return nil }
        do {
            return try FunctionID(text)
        } catch {
            report(.invalidValue, at: entry.value, path: "\(path).id", expected: error.expected, found: error.value)
            return nil
        }
    }

    private mutating func readHandlerPath(_ fields: Fields, at item: Node, path: String) -> String? {
        let keyPath = "\(path).handler_path"
        guard let entry = fields["handler_path"] else {
            report(
                .missingKey, at: item, path: keyPath, expected: "a key `handler_path` (the handler program)",
                found: "no `handler_path` key")
            return nil
        }
        guard let text = string(entry.value, path: keyPath) else { return nil }
        guard !text.isEmpty else {
            report(
                .invalidValue, at: entry.value, path: keyPath, expected: "a path to the handler program", found: "\"\"")
            return nil
        }
        let absolute = LexicalPath.normalized(text.hasPrefix("/") ? text : baseDirectory + "/" + text)
        if let problem = HandlerCheck.problem(with: absolute) {
            report(.handlerUnusable, at: entry.value, path: keyPath, expected: problem.expected, found: problem.found)
            return nil
        }
        return absolute
    }

    /// A function's `requirements:` setting, read.
    private struct Requirements {
        /// The file's absolute path; nil: the key is absent.
        var path: String?
    }

    /// `requirements: PATH`, relative to the file's folder: an existing, readable regular file
    /// (what pip reads at `up`); nil after reporting.
    private mutating func readRequirements(_ fields: Fields, path: String) -> Requirements? {
        guard let entry = fields["requirements"] else { return Requirements() }
        let keyPath = "\(path).requirements"
        guard let text = string(entry.value, path: keyPath) else { return nil }
        guard !text.isEmpty else {
            report(
                .invalidValue, at: entry.value, path: keyPath,
                expected: "a path to a pip requirements file (such as requirements.txt)", found: "\"\"")
            return nil
        }
        let absolute = LexicalPath.normalized(text.hasPrefix("/") ? text : baseDirectory + "/" + text)
        if let problem = RequirementsCheck.problem(with: absolute) {
            report(.handlerUnusable, at: entry.value, path: keyPath, expected: problem.expected, found: problem.found)
            return nil
        }
        return Requirements(path: absolute)
    }

    private mutating func readEnvironment(_ fields: Fields, path: String) -> [String: String]? {
        guard let entry = fields["environment"], !isNull(entry.value) else { return [:] }
        let envPath = "\(path).environment"
        guard case .mapping(let mapping) = entry.value else {
            report(
                .wrongType, at: entry.value, path: envPath, expected: "a mapping of variable names to values",
                found: describe(entry.value))
            return nil
        }
        var environment: [String: String] = [:]
        var valid = true
        for (keyNode, valueNode) in mapping {
            guard let name = scalarText(keyNode) else {
                report(.wrongType, at: keyNode, path: envPath, expected: "a variable name", found: describe(keyNode))
                valid = false
                continue
            }
            let entryPath = "\(envPath).\(name)"
            if !EnvironmentName.isValid(name) {
                report(
                    .invalidValue, at: keyNode, path: entryPath,
                    expected: "a variable name of A-Z, a-z, 0-9 and '_', not starting with a digit", found: quoted(name)
                )
                valid = false
            } else if name.hasPrefix("AETHER_") {
                report(
                    .invalidValue, at: keyNode, path: entryPath,
                    expected: "a name outside the AETHER_ prefix, which the orchestrator sets itself",
                    found: quoted(name))
                valid = false
            }
            guard let value = string(valueNode, path: entryPath) else {
                valid = false
                continue
            }
            environment[name] = value
        }
        return valid ? environment : nil
    }

    // MARK: Typed reads

    typealias Fields = [String: (key: Node, value: Node)]

    /// The mapping's entries by key, after reporting non-string and unknown keys. Returns nil
    /// (and reports) if `node` is not a mapping.
    private mutating func mappingFields(_ node: Node, path: String, allowed: [String]) -> Fields? {
        guard case .mapping(let mapping) = node else {
            report(
                .wrongType, at: node, path: path,
                expected: "a mapping with keys \(allowed.joined(separator: ", "))", found: describe(node))
            return nil
        }
        var fields: Fields = [:]
        for (key, value) in mapping {
            guard let name = scalarText(key) else {
                report(.wrongType, at: key, path: path, expected: "a key name", found: describe(key))
                continue
            }
            let keyPath = path.isEmpty ? name : "\(path).\(name)"
            guard allowed.contains(name) else {
                var expected = "one of the keys \(allowed.joined(separator: ", "))"
                if let guess = KeySuggestion.closest(to: name, among: allowed) {
                    expected =
                        "`\(guess)` or another of the keys \(allowed.filter { $0 != guess }.joined(separator: ", "))"
                }
                report(.unknownKey, at: key, path: keyPath, expected: expected, found: "unknown key `\(name)`")
                continue
            }
            fields[name] = (key, value)
        }
        return fields
    }

    /// Reads an optional integer key into a bounded newtype; when `requiredIn` is given the key
    /// is required and its absence is reported at that node.
    private mutating func boundedInteger<T: BoundedInteger>(
        _ fields: Fields, _ key: String, in path: String, requiredIn parent: Node? = nil
    ) -> T? {
        let keyPath = "\(path).\(key)"
        guard let node = fields[key]?.value else {
            if let parent {
                report(
                    .missingKey, at: parent, path: keyPath, expected: "a key `\(key)` (\(T.expectation))",
                    found: "no `\(key)` key")
            }
            return nil
        }
        guard case .scalar(let scalar) = node, tagName(node) == .int else {
            report(.wrongType, at: node, path: keyPath, expected: T.expectation, found: describe(node))
            return nil
        }
        guard let integer = Int.construct(from: scalar) else {
            report(.invalidValue, at: node, path: keyPath, expected: T.expectation, found: scalar.string)
            return nil
        }
        do {
            return try T(exactly: integer)
        } catch {
            report(.invalidValue, at: node, path: keyPath, expected: error.expected, found: error.value)
            return nil
        }
    }

    /// A scalar's text for string-typed keys. Numbers and booleans written without quotes are
    /// accepted as their text (`PORT: 8080` means "8080"); null, lists and mappings are not.
    private mutating func string(_ node: Node, path: String) -> String? {
        guard let text = scalarText(node), !isNull(node) else {
            report(.wrongType, at: node, path: path, expected: "a string", found: describe(node))
            return nil
        }
        return text
    }

    // MARK: Reporting

    private mutating func report(
        _ kind: ConfigDiagnostic.Kind, at node: Node, path: String, expected: String, found: String
    ) {
        let mark = node.mark
        report(kind, line: mark?.line ?? 1, column: mark?.column ?? 1, path: path, expected: expected, found: found)
    }

    private mutating func report(
        _ kind: ConfigDiagnostic.Kind, line: Int, column: Int, path: String, expected: String, found: String
    ) {
        diagnostics.append(
            ConfigDiagnostic(
                kind: kind, file: file, line: line, column: column, keyPath: path, expected: expected, found: found))
    }

    private mutating func reportYAMLError(_ error: YamlError, text: String) {
        switch error {
        case .scanner(let context, let problem, let mark, _),
            .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            // libyaml stops at 1000 levels of nesting, which also bounds the composer's recursion.
            var found = problem.hasPrefix("Maximum nesting level") ? "nested deeper than 1000 levels" : problem
            if let context {
                found += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
            }
            report(
                .malformedYAML, line: mark.line, column: mark.column, path: "", expected: "well-formed YAML",
                found: found)
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.map { "`\($0)`" }.joined(separator: ", ")
            report(
                .malformedYAML, line: context.mark.line, column: context.mark.column, path: "",
                expected: "each key once per mapping", found: "duplicate key \(keys)")
        case .reader(let problem, let offset, _, _):
            let bytes = Array(text.utf8)
            let position = SourceText.position(of: min(max(offset ?? 0, 0), bytes.count), in: bytes)
            report(
                .invalidEncoding, line: position.line, column: position.column, path: "", expected: "readable text",
                found: problem)
        default:
            report(.malformedYAML, line: 1, column: 1, path: "", expected: "well-formed YAML", found: "\(error)")
        }
    }

    // MARK: Node helpers

    private func scalarText(_ node: Node) -> String? {
        if case .scalar(let scalar) = node { return scalar.string }
        return nil
    }

    /// A YAML boolean (`true`, `false`, and YAML 1.1's spellings Yams resolves as booleans).
    private func bool(_ node: Node) -> Bool? {
        guard case .scalar(let scalar) = node, tagName(node) == .bool else { return nil }
        return Bool.construct(from: scalar)
    }

    private func isNull(_ node: Node) -> Bool {
        if case .scalar = node { return tagName(node) == .null }
        return false
    }

    /// The resolved YAML tag (`!!int`, `!!str`, ...) of a node.
    private func tagName(_ node: Node) -> Tag.Name { Tag.Name(rawValue: node.tag.rawValue) }

    private func line(of node: Node) -> Int { node.mark?.line ?? 1 }

    /// How a value looks to the user in "found ..." text.
    private func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar):
            switch tagName(node) {
            case .null: return "null"
            case .int: return "the integer \(truncated(scalar.string))"
            case .float: return "the number \(truncated(scalar.string))"
            case .bool: return "the boolean \(scalar.string)"
            default: return "the string \(quoted(scalar.string))"
            }
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    private func quoted(_ text: String) -> String { "\"\(truncated(text))\"" }

    private func truncated(_ text: String) -> String {
        text.count > 60 ? String(text.prefix(57)) + "..." : text
    }
}
