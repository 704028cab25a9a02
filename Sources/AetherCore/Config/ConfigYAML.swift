/// Writes a validated configuration back as YAML that `ConfigLoader` reads into an equal
/// configuration: every setting explicit (defaults included, so a later change of a default
/// does not change what was deployed), strings double-quoted, handler paths absolute. The
/// deployed state (`state_dir`) is stored this way.
public enum ConfigYAML {
    /// The YAML text of `config`, after `header` (each line written as a `# ` comment; characters
    /// a comment cannot hold, line breaks included, become `?`).
    public static func render(_ config: AetherConfig, header: [String] = []) -> String {
        var lines = header.map { line in
            "# " + String(String.UnicodeScalarView(line.unicodeScalars.map { isPrintable($0) ? $0 : "?" }))
        }
        lines.append("orchestrator:")
        let settings = config.orchestrator
        func setting(_ key: String, _ value: String) { lines.append("  \(key): \(value)") }
        setting("shm_buffer_size", String(settings.shmBufferSize.bytes))
        setting("warm_pool_size", String(settings.warmPoolSize.rawValue))
        setting("warm_pool_memory_mb", String(settings.warmPoolMemory.rawValue))
        setting("restore_timeout_ms", String(settings.restoreTimeout.milliseconds))
        setting("snapshot_dir", quoted(settings.snapshotDirectory))
        setting("criu_path", quoted(settings.criuPath))
        setting("python", quoted(settings.python))
        if let port = settings.metricsPort { setting("metrics_port", String(port.rawValue)) }
        if let endpoint = settings.otlpEndpoint { setting("otlp_endpoint", quoted(endpoint.url)) }
        setting("control_socket", quoted(settings.controlSocket))
        setting("listen_address", quoted(settings.listenAddress))
        setting("dataplane", quoted(settings.dataplane.rawValue))
        if let interface = settings.xdpInterface {
            setting("xdp_interface", quoted(interface))
            setting("xdp_mode", quoted(settings.xdpMode.rawValue))
        }
        setting("client_timeout_ms", String(settings.clientTimeout.milliseconds))
        if let folder = settings.stateDirectory { setting("state_dir", quoted(folder)) }
        setting("confinement", settings.confinement ? "true" : "false")
        setting("uid_range", quoted(settings.uidRange.description))
        setting("keep_versions", String(settings.keepVersions.rawValue))

        lines.append(config.functions.isEmpty ? "functions: []" : "functions:")
        for function in config.functions {
            var first = true
            /// One key of the entry; a nil value opens a nested mapping.
            func key(_ key: String, _ value: String?) {
                lines.append("\(first ? "  - " : "    ")\(key):" + (value.map { " " + $0 } ?? ""))
                first = false
            }
            key("id", quoted(function.id.rawValue))
            key("trigger_port", String(function.triggerPort.rawValue))
            key("handler_path", quoted(function.handlerPath))
            key("protocol", quoted(function.handlerProtocol.rawValue))
            key("memory_limit_mb", String(function.memoryLimit.megabytes))
            key("timeout_ms", String(function.timeout.milliseconds))
            key("startup_timeout_ms", String(function.startupTimeout.rawValue))
            if function.handlerProtocol == .sdk {
                // Keys that only mean something when the gateway terminates HTTP (errors on a
                // process handler, whose max_instances is always 1).
                key("max_instances", String(function.maxInstances.rawValue))
                key("concurrency", String(function.concurrency.rawValue))
                key("max_queue", String(function.maxQueue.rawValue))
                key("max_body_bytes", String(function.maxBody.bytes))
                key("snapshot", function.snapshot ? function.snapshotMode.rawValue : "false")
                key("min_warm", String(function.minWarm.rawValue))
                if let app = function.app { key(app.interface.rawValue, quoted(app.attribute)) }
                if let requirements = function.requirements { key("requirements", quoted(requirements)) }
                key("idle_timeout_ms", String(function.idleTimeout.milliseconds))
                if let auth = function.auth {
                    key("auth", "{type: \(quoted(auth.kind.rawValue)), secret: \(quoted(auth.secret.rawValue))}")
                }
            }
            if let user = function.user { key("user", quoted(user.rawValue)) }
            key("network", quoted(function.network.rawValue))
            key("max_pids", String(function.maxPIDs.rawValue))
            if let limit = function.cpuLimit { key("cpu_limit", limit.description) }
            key("secrets", "[" + function.secrets.map { quoted($0.rawValue) }.joined(separator: ", ") + "]")
            if function.environment.isEmpty {
                key("environment", "{}")
            } else {
                key("environment", nil)
                for name in function.environment.keys.sorted() {
                    lines.append("      \(quoted(name)): \(quoted(function.environment[name]!))")
                }
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A YAML double-quoted scalar: `"` and `\` escaped, and every character YAML does not allow
    /// in a document (controls, surrogates, U+FFFE/U+FFFF), line breaks included, written as an
    /// escape, so any string survives the round trip.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            default:
                if isPrintable(scalar) {
                    result.unicodeScalars.append(scalar)
                } else {
                    let hex = String(scalar.value, radix: 16, uppercase: true)
                    result += "\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
                }
            }
        }
        return result + "\""
    }

    /// What YAML lets a document hold as is (its `nb-char` set, tab aside; no byte order mark).
    private static func isPrintable(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        return (0x20...0x7E).contains(value) || (0xA0...0xD7FF).contains(value)
            || (0xE000...0xFFFD).contains(value) && value != 0xFEFF || value >= 0x10000
    }
}
