import AetherCore
import AetherOrchestrator
import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where the running orchestrator's control API listens.
struct ControlOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The orchestrator's control socket (default: $AETHER_CONTROL_SOCKET, else \(OrchestratorConfig.defaultControlSocket)).",
            valueName: "path"))
    var socket: String?

    var client: ControlClient {
        let path =
            socket ?? getenv("AETHER_CONTROL_SOCKET").map { String(cString: $0) }
            ?? OrchestratorConfig.defaultControlSocket
        return ControlClient(socketPath: path)
    }
}

/// Runs a control request, turning its error into one line on stderr and exit status 1.
func controlRequest<T>(_ command: String, _ body: () throws(OrchestratorError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        writeError("aether \(command): \(error)")
        throw ExitCode.failure
    }
}

func printJSON(_ bytes: [UInt8]) {
    print(String(decoding: bytes, as: UTF8.self))
}

extension Aether {
    struct Deploy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hot-load the functions of a configuration file into the running orchestrator.",
            discussion: """
                All or nothing. The file is validated first; then every new function and every changed \
                one (its configuration, or its handler or requirements file's bytes) starts beside what \
                runs. If one cannot start, all of them are stopped again and nothing changes: the error names the \
                function. Otherwise the new state is stored (`aether up` without a file resumes it), \
                the traffic moves to the new versions at once, and the old ones finish their requests \
                before they stop. Functions not in the file are left alone (`aether rm` removes one).
                """
        )

        @Argument(help: "The configuration file.", completion: .file(extensions: ["yaml", "yml"]))
        var file: String

        @Flag(help: "Replace functions even when their configuration is unchanged.")
        var force = false

        /// How long a deploy of a file with `requirements:` may take: the orchestrator builds
        /// the virtualenvs before it answers.
        static let virtualenvTimeoutSeconds = 1800

        @OptionGroup var control: ControlOptions

        func run() async throws {
            // Validate here too, so mistakes are shown with the same report as `aether validate`,
            // except that nothing of a file that is not a configuration at all is shown.
            let config: AetherConfig
            do {
                config = try ConfigLoader.load(path: file)
            } catch {
                ConfigErrorReport.print(error.withoutContents())
                throw ExitCode.failure
            }
            let absolute = file.hasPrefix("/") ? file : currentDirectory() + "/" + file
            var client = control.client
            // A virtualenv to build (`requirements:`) is pip downloading and installing: minutes.
            if config.functions.contains(where: { $0.requirements != nil }) {
                client.timeoutSeconds = Self.virtualenvTimeoutSeconds
            }
            // While the orchestrator works (pip building a virtualenv takes minutes), its progress
            // lines are polled on the side and printed to stderr as they come.
            let name = (0..<4).map { _ in String(UInt32.random(in: 0...UInt32.max), radix: 16) }.joined()
            let poller = Task.detached { [client] in
                var after = 0
                while true {
                    let done = Task.isCancelled
                    if let progress = try? client.progress(name, after: after) {
                        for line in progress.lines { writeError("aether deploy: \(line)") }
                        after = progress.next
                    }
                    if done { return }
                    try? await Task.sleep(for: .milliseconds(250))
                }
            }
            let outcome = Result { () throws(OrchestratorError) in
                try client.deploy(DeployRequest(configFile: absolute, force: force, progress: name))
            }
            poller.cancel()
            await poller.value
            let result = try controlRequest("deploy") { () throws(OrchestratorError) in try outcome.get() }
            let rows =
                result.added.map { [$0, "added"] }
                + result.replaced.map {
                    [$0, result.handlerChanged.contains($0) ? "replaced (handler changed)" : "replaced"]
                }
                + result.unchanged.map { [$0, "unchanged"] }
            print(TextTable(header: ["FUNCTION", "RESULT"], rows: rows).rendered)
        }
    }

    struct Rm: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a function for good.",
            discussion: """
                The function stops taking requests, finishes those in flight, stops, and gives its trigger \
                port back; it leaves the stored state, so it stays removed when `aether up` resumes. An \
                unknown id is an error (exit 1).
                """)

        @Argument(help: "The function id.")
        var id: String

        @OptionGroup var control: ControlOptions

        func run() async throws {
            let result = try controlRequest("rm") { () throws(OrchestratorError) in try control.client.remove(id) }
            print("removed \(result.removed) (port \(result.port) released)")
        }
    }

    struct Versions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the kept versions of a function, oldest first.",
            discussion: """
                Every `up -c`, `deploy` (of a changed configuration or handler code) and `rollback` that \
                changes a function makes a new numbered version: its configuration and a copy of its code \
                (the handler, the Python modules beside it, the requirements file). The last \
                `keep_versions` (default 10) are kept; the newest, marked *, is the one that runs. An \
                unknown id is an error (exit 1).
                """)

        @Argument(help: "The function id.")
        var id: String

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var control: ControlOptions

        func run() async throws {
            if json {
                printJSON(
                    try controlRequest("versions") { () throws(OrchestratorError) in
                        try control.client.raw("/v1/functions/\(id)/versions")
                    })
                return
            }
            let document = try controlRequest("versions") { () throws(OrchestratorError) in
                try control.client.versions(id)
            }
            let rows = document.versions.map { version in
                [
                    (version.number == document.current ? "* " : "  ") + String(version.number),
                    version.deployedAt, String(version.code.prefix(12)), version.change,
                ]
            }
            print(TextTable(header: ["VERSION", "DEPLOYED", "CODE", "CHANGE"], rows: rows).rendered)
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run an earlier version of a function again.",
            discussion: """
                Deploys version N (by default the one before the version it runs) the way `deploy` \
                replaces a function: the new generation starts beside the running one, the route swaps at \
                once, requests in flight finish on the old one; if it cannot start, nothing changes. The \
                rollback is itself a new version. It runs from the files it was deployed from when they \
                still hold its code (and restores its kept snapshot image without running init again), \
                else from the copy kept with the version. An unknown id or version is an error (exit 1).
                """)

        @Argument(help: "The function id.")
        var id: String

        @Option(help: "The version to run again (see `aether versions ID`).")
        var to: Int?

        @OptionGroup var control: ControlOptions

        func run() async throws {
            let result = try controlRequest("rollback") { () throws(OrchestratorError) in
                try control.client.rollback(id, to: to)
            }
            if result.replaced {
                print("rolled back \(result.function) to version \(result.to) (now version \(result.version))")
            } else {
                print("\(result.function) already runs version \(result.to)'s configuration and code: nothing to do")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the running functions and their instances.")

        @Flag(help: "Print the orchestrator's JSON status document.")
        var json = false

        @OptionGroup var control: ControlOptions

        func run() async throws {
            if json {
                printJSON(
                    try controlRequest("list") { () throws(OrchestratorError) in try control.client.raw("/v1/status") })
                return
            }
            let status = try controlRequest("list") { () throws(OrchestratorError) in try control.client.status() }
            let rows = status.functions.map { function in
                [
                    function.id, String(function.port), function.protocol, function.state, function.lifecycle,
                    "\(function.instances.count(where: { $0.phase == "serving" }))/\(function.maxInstances)",
                    function.instances.map { String($0.pid) }.joined(separator: ","),
                ]
            }
            print(
                TextTable(header: ["ID", "PORT", "PROTOCOL", "STATE", "LIFECYCLE", "INSTANCES", "PIDS"], rows: rows)
                    .rendered)
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show invocation counts, errors, timeouts, latency percentiles and queue depth.",
            discussion: "Latency percentiles cover the last 8192 requests of each function.")

        @Argument(help: "Only this function (also shows its instances).")
        var id: String?

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var control: ControlOptions

        func run() async throws {
            let client = control.client
            if json {
                let path = id.map { "/v1/functions/\($0)" } ?? "/v1/status"
                printJSON(try controlRequest("stats") { () throws(OrchestratorError) in try client.raw(path) })
                return
            }
            let functions: [FunctionStatus]
            var orchestrator: OrchestratorStatus?
            if let id {
                functions = [try controlRequest("stats") { () throws(OrchestratorError) in try client.function(id) }]
            } else {
                orchestrator = try controlRequest("stats") { () throws(OrchestratorError) in try client.status() }
                functions = orchestrator?.functions ?? []
            }
            func ms(_ value: Double?) -> String { value.map { String(format3($0)) } ?? "-" }
            let rows = functions.map { function in
                let stats = function.stats
                return [
                    function.id, String(stats.invocations), String(stats.errors), String(stats.timeouts),
                    String(stats.rejected), String(stats.unauthorized), String(stats.crashes),
                    ms(stats.p50Milliseconds), ms(stats.p95Milliseconds),
                    ms(stats.p99Milliseconds), String(function.queueDepth),
                ]
            }
            print(
                TextTable(
                    header: [
                        "ID", "INVOCATIONS", "ERRORS", "TIMEOUTS", "REJECTED", "401", "CRASHES", "P50 MS", "P95 MS",
                        "P99 MS",
                        "QUEUE",
                    ], rows: rows
                ).rendered)
            if id != nil, let function = functions.first {
                if let confinement = function.confinement {
                    let refused = (confinement.refusedSyscalls ?? [:]).sorted { $0.key < $1.key }
                        .map { "\($0.key) \($0.value)" }
                    print("")
                    print(
                        "confined: uid \(confinement.uid), network \(confinement.network), max_pids \(confinement.maxPids), "
                            + "cpu_limit \(confinement.cpuLimit.map { String(format3($0)) } ?? "none"); refused system calls: "
                            + (confinement.refusedSyscalls == nil
                                ? "not counted" : refused.isEmpty ? "none" : refused.joined(separator: ", ")))
                }
                print("")
                let instanceRows = function.instances.map { instance in
                    [
                        String(instance.number), String(instance.pid), instance.phase, String(instance.inFlight),
                        String(instance.served), String(Int(instance.uptimeSeconds)),
                        instance.memoryBytes.map { String(format3(Double($0) / 1_048_576)) } ?? "-",
                        instance.region ?? "-",
                    ]
                }
                print(
                    TextTable(
                        header: [
                            "INSTANCE", "PID", "PHASE", "IN FLIGHT", "SERVED", "UPTIME S", "MEMORY MIB",
                            "SHARED MEMORY",
                        ],
                        rows: instanceRows
                    ).rendered)
            }
            if let pool = orchestrator?.warmPool {
                let shares = pool.functions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                print("")
                print(
                    "Warm pool: \(pool.copies) of \(pool.capacity) copies waiting, "
                        + "\(pool.reservedBytes / 1_048_576) of \(pool.memoryBudgetBytes / 1_048_576) MiB"
                        + (shares.isEmpty ? "" : " (" + shares.joined(separator: ", ") + ")"))
            }
            if let orchestrator { printDataplane(orchestrator) }
        }

        /// The eBPF section: what is attached where, and each trigger port's map entry and
        /// counters (packets and bytes only with an XDP program).
        private func printDataplane(_ status: OrchestratorStatus) {
            print("")
            guard let ebpf = status.ebpf else {
                print("Data plane: sockets (the gateway and process handlers bind the trigger ports)")
                return
            }
            print("Data plane: eBPF, steering connections to \(ebpf.listenAddress)")
            print(
                TextTable(
                    header: ["PROGRAM", "PROGRAM ID", "LINK ID", "ATTACHED TO"],
                    rows: ebpf.links.map { [$0.program, String($0.programID), String($0.linkID), $0.target] }
                ).rendered)
            print("")
            let counting = ebpf.links.contains { $0.program == "aether_xdp" }
            let rows = ebpf.ports.map { port in
                [
                    String(port.port), port.function, String(port.pid),
                    port.socket.rawValue + (port.inSocketMap ? "" : " (gone)"), String(port.steered), String(port.held),
                    counting ? String(port.packets) : "-", counting ? String(port.bytes) : "-",
                    counting ? String(port.dropped) : "-", port.dropsNewConnections ? "yes" : "no",
                ]
            }
            print(
                TextTable(
                    header: [
                        "PORT", "FUNCTION", "PID", "SOCKET", "STEERED", "HELD SYN", "PACKETS", "BYTES", "DROPPED SYN",
                        "DROPPING",
                    ], rows: rows
                ).rendered)
        }
    }

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print what a function's handlers wrote to stdout and stderr (the last lines kept).")

        @Argument(help: "The function id.")
        var id: String

        @Option(name: [.customShort("n"), .long], help: "How many lines.")
        var lines = 100

        @Option(
            help: ArgumentHelp(
                "Only the lines of this request (its x-request-id: what aetherless.log and the SDKs write while serving it).",
                valueName: "request-id"))
        var request: String?

        @Flag(name: [.customShort("f"), .long], help: "Keep printing new lines as they come (Ctrl-C ends).")
        var follow = false

        @OptionGroup var control: ControlOptions

        func run() async throws {
            // Filtering looks at every line kept, then prints the last `lines` that match.
            let fetch = request == nil ? lines : LogsWindow.everything
            var printed = LogsWindow()
            let first = try controlRequest("logs") { () throws(OrchestratorError) in
                try control.client.logs(id, lines: fetch)
            }
            for line in printed.new(in: first.lines, matching: request).suffix(lines) { print(Self.render(line)) }
            while follow {
                try await Task.sleep(for: .milliseconds(250))
                let next = try controlRequest("logs") { () throws(OrchestratorError) in
                    try control.client.logs(id, lines: LogsWindow.everything)
                }
                for line in printed.new(in: next.lines, matching: request) { print(Self.render(line)) }
                fflush(nil)
            }
        }

        static func render(_ line: LogBuffer.Line) -> String {
            // The orchestrator's own lines about a request (an error it answered with).
            if line.stream == "aether" { return "[aether] \(line.text)" }
            // Instance -1 is the snapshot template (its init output).
            let instance = line.instance < 0 ? "template" : String(line.instance)
            return "[\(instance) \(line.stream)] \(line.text)"
        }
    }

    /// Which log lines were printed already (by time, then the lines at the newest time seen),
    /// for `--follow`.
    struct LogsWindow {
        static let everything = 100_000
        private var newest = -Double.infinity
        private var atNewest: [LogBuffer.Line] = []

        mutating func new(in lines: [LogBuffer.Line], matching request: String?) -> [LogBuffer.Line] {
            var fresh: [LogBuffer.Line] = []
            for line in lines where line.time > newest || (line.time == newest && !atNewest.contains(line)) {
                fresh.append(line)
            }
            if let last = lines.map(\.time).max(), last >= newest {
                if last > newest { atNewest = [] }
                newest = last
                atNewest += lines.filter { $0.time == last && !atNewest.contains($0) }
            }
            guard let request else { return fresh }
            return fresh.filter { $0.text.contains(request) }
        }
    }

    struct Wait: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Wait until the orchestrator serves every function it was started with.",
            discussion: """
                For scripts: `aether up -c FILE & aether wait && curl ...`. Waits for the orchestrator's \
                control socket to answer (an `up` may still be starting) and for its functions to serve; \
                exits 0 then, or 1 after the timeout with what it was still waiting for.
                """)

        @Option(help: "Give up after this many seconds.")
        var timeout: Double = 60

        @OptionGroup var control: ControlOptions

        func validate() throws {
            guard timeout > 0 else { throw ValidationError("--timeout must be more than 0 seconds, got \(timeout)") }
        }

        func run() async throws {
            let client = control.client
            let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
            var last = "no orchestrator answers on \(client.socketPath)"
            while ContinuousClock.now < deadline {
                do {
                    let status = try client.status()
                    if status.ready {
                        print("ready: \(status.functions.count) function(s) serving")
                        return
                    }
                    let starting = status.functions.filter { $0.state == "starting" }.map(\.id)
                    last = "still starting: \(starting.isEmpty ? "the orchestrator" : starting.joined(separator: ", "))"
                } catch {
                    if case .notRunning = error {} else { last = error.description }
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            writeError("aether wait: not ready within \(format3(timeout)) s (\(last))")
            throw ExitCode.failure
        }
    }

    struct Restart: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace the running orchestrator with a new one without refusing a connection.",
            discussion: """
                The running orchestrator starts a successor (this `aether` binary: install a new one, then \
                restart, to upgrade) that resumes the deployed state, shares its trigger ports and starts \
                every function; once all serve, the old one lets go of the ports and finishes what it has \
                open. Connections keep being answered throughout. Waits until the successor serves.
                """)

        @Option(help: "Give up waiting after this many seconds.")
        var timeout: Double = 120

        @OptionGroup var control: ControlOptions

        func run() async throws {
            let client = control.client
            guard let executable = realpath("/proc/self/exe", nil) else {
                writeError("aether restart: cannot find this aether binary (/proc/self/exe)")
                throw ExitCode.failure
            }
            defer { free(executable) }
            let result = try controlRequest("restart") { () throws(OrchestratorError) in
                try client.restart(executable: String(cString: executable))
            }
            let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
            while ContinuousClock.now < deadline {
                if let status = try? client.status(), status.pid == result.successor, status.ready {
                    print("restarted: orchestrator \(result.pid) handed over to \(result.successor)")
                    return
                }
                if kill(pid_t(result.successor), 0) != 0 && errno == ESRCH {
                    writeError(
                        "aether restart: the successor (pid \(result.successor)) stopped before it served; orchestrator \(result.pid) goes on serving (its log says why)"
                    )
                    throw ExitCode.failure
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            writeError("aether restart: the successor (pid \(result.successor)) did not take over within \(timeout) s")
            throw ExitCode.failure
        }
    }

    struct Down: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop the running orchestrator gracefully and wait until it has stopped.")

        @OptionGroup var control: ControlOptions

        func run() async throws {
            let client = control.client
            try controlRequest("down") { () throws(OrchestratorError) in try client.down() }
            // Wait until the control socket stops answering: the orchestrator removes it last.
            for _ in 0..<600 {
                if !ControlClient.answers(socketPath: client.socketPath) {
                    print("stopped")
                    return
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            writeError("aether down: the orchestrator did not stop within 60 s")
            throw ExitCode.failure
        }
    }
}

private func format3(_ value: Double) -> String {
    let scaled = (value * 1000).rounded() / 1000
    return String(scaled)
}

func currentDirectory() -> String {
    guard let path = getcwd(nil, 0) else { return "." }
    defer { free(path) }
    return String(cString: path)
}

/// `path` made absolute against the current directory.
func absolutePath(_ path: String) -> String {
    path.hasPrefix("/") ? path : currentDirectory() + "/" + path
}
