import AetherCore
import AetherOrchestrator
import AetherSystem
import ArgumentParser
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Aether {
    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the functions of a configuration file, or resume what was last deployed, in the foreground.",
            discussion: """
                Starts every function's handler, waits until each reports READY, and answers HTTP on their \
                trigger ports. Fails at once, stopping everything, if any function cannot start. \
                Ctrl-C, SIGTERM or `aether down` stop it gracefully: requests in flight finish, handlers \
                are stopped, sockets and shared memory are removed.
                With -c FILE, FILE becomes the deployed state (kept in state_dir once everything serves); \
                without it, `up` resumes exactly what was last deployed (`up -c`, then every `deploy` and \
                `rm`), from the state folder: --state-dir, else $AETHER_STATE_DIR, else \
                \(OrchestratorConfig.defaultStateDirectory).
                """
        )

        @Option(
            name: .shortAndLong,
            help: "The configuration file (without it: resume the deployed state).",
            completion: .file(extensions: ["yaml", "yml"]))
        var config: String?

        @OptionGroup var serving: ServingOptions

        @Flag(
            help: ArgumentHelp(
                "Take over from the orchestrator running on the control socket once every function serves (what `aether restart` starts)."
            ))
        var takeover = false

        func run() async throws {
            try await Self.run(config: config, serving: serving, takeover: takeover)
        }

        /// `up`, and `dev` (`watching`: a configuration file whose changes are deployed as they
        /// are saved).
        static func run(
            config: String?, serving: ServingOptions, takeover: Bool, watching: Bool = false
        ) async throws {
            let (stateDir, verbose, readyFile) = (serving.stateDir, serving.verbose, serving.readyFile)
            var loaded: AetherConfig
            let configFile: String
            var resumed: DesiredState?
            if let config {
                do {
                    loaded = try ConfigLoader.load(path: config)
                } catch {
                    ConfigErrorReport.print(error)
                    throw ExitCode.failure
                }
                configFile = absolutePath(config)
                // --state-dir, else the file's state_dir, else $AETHER_STATE_DIR, else the default.
                loaded.orchestrator.stateDirectory =
                    stateDir.map(absolutePath) ?? loaded.orchestrator.stateDirectory ?? Self.stateDirectory(flag: nil)
            } else {
                let store = DesiredStateStore(folder: Self.stateDirectory(flag: stateDir))
                let stored: DesiredState?
                do {
                    stored = try store.load()
                } catch {
                    if case .invalidConfiguration(let problems) = error { ConfigErrorReport.print(problems) }
                    writeError("aether up: cannot resume: \(error)")
                    throw ExitCode.failure
                }
                guard let stored else {
                    writeError(
                        "aether up: nothing has been deployed with the state folder \(store.folder) (no \(store.path)); "
                            + "start with `aether up -c FILE`, or name the folder with --state-dir or $\(OrchestratorConfig.stateDirectoryVariable)"
                    )
                    throw ExitCode.failure
                }
                loaded = stored.config
                // The folder it was found in, even if it was moved since it was written.
                loaded.orchestrator.stateDirectory = store.folder
                configFile = store.path
                resumed = stored
            }
            let level: Logger.Level = verbose ? .debug : .info
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            let logger = Logger(label: "aether")
            if let resumed {
                let count = resumed.config.functions.count
                var metadata: Logger.Metadata = ["state": "\(configFile)"]
                if count > 0 {
                    metadata["from"] = "\(resumed.sources.joined(separator: ", "))"
                    metadata["functions"] =
                        "\(resumed.records.map { "\($0.id) (\($0.source))" }.joined(separator: ", "))"
                }
                logger.info(
                    "resuming the deployed state: \(count) function\(count == 1 ? "" : "s") as of \(resumed.savedAt) (last change: `\(resumed.change)`)",
                    metadata: metadata)
            }
            let orchestrator = Orchestrator(
                config: loaded, configFile: configFile, logger: logger, resuming: resumed, takingOver: takeover)
            let service = OrchestratorService(
                orchestrator: orchestrator, readyFile: readyFile.map { ReadyFile(path: absolutePath($0)) },
                watcher: watching ? DevWatcher(configFile: configFile, orchestrator: orchestrator) : nil)
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger))
            do {
                try await group.run()
            } catch let error as AetherError {
                writeError("aether up: \(error)")
                throw ExitCode.failure
            }
        }
    }
}

/// The options `up` and `dev` share.
struct ServingOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The deployed state's folder (default: the file's state_dir, else $\(OrchestratorConfig.stateDirectoryVariable), else \(OrchestratorConfig.defaultStateDirectory)).",
            valueName: "path"))
    var stateDir: String?

    @Flag(name: .shortAndLong, help: "Log debug messages too.")
    var verbose = false

    @Option(
        help: ArgumentHelp(
            "Write this file (the orchestrator's PID) once every function serves; removed again when it stops.",
            valueName: "path"))
    var readyFile: String?
}

extension Aether.Up {
    /// The state folder without a configuration file: `--state-dir`, else `$AETHER_STATE_DIR`,
    /// else the default; relative paths against the current directory.
    static func stateDirectory(flag: String?) -> String {
        let environment = getenv(OrchestratorConfig.stateDirectoryVariable).map { String(cString: $0) }
        let chosen = flag ?? environment.flatMap { $0.isEmpty ? nil : $0 } ?? OrchestratorConfig.defaultStateDirectory
        return absolutePath(chosen)
    }
}

/// `aether up` as a long-running service: start, serve until asked to stop, stop cleanly.
struct OrchestratorService: Service {
    let orchestrator: Orchestrator
    let readyFile: ReadyFile?
    /// `aether dev`: deploys the configuration's changes while it serves.
    var watcher: DevWatcher? = nil

    func run() async throws {
        try await orchestrator.start()
        do {
            try readyFile?.write()
        } catch {
            await orchestrator.shutdown()
            throw error
        }
        let watching = watcher.map { watcher in Task { await watcher.run() } }
        await withGracefulShutdownHandler {
            await orchestrator.waitForShutdownRequest()
        } onGracefulShutdown: {
            orchestrator.requestShutdown()
        }
        watching?.cancel()
        await watching?.value
        readyFile?.remove()
        await orchestrator.shutdown()
    }
}

/// `up --ready-file`: written (temporary file, then rename) once every function serves, so a
/// script can wait for the file; removed when the orchestrator stops.
struct ReadyFile: Sendable {
    let path: String

    func write() throws(AetherError) {
        let temporary = path + ".tmp-\(getpid())"
        let text = Array("\(getpid())\n".utf8)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("open", temporary) }
        let written = text.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == text.count else {
            unlink(temporary)
            throw failure("write", temporary)
        }
        guard rename(temporary, path) == 0 else {
            let error = failure("rename", path)
            unlink(temporary)
            throw error
        }
    }

    func remove() {
        unlink(path)
    }

    private func failure(_ call: String, _ subject: String) -> AetherError {
        .orchestrator(
            .folderUnavailable(
                purpose: "the ready file (--ready-file)", path: path,
                reason: SystemCallFailure(call: call, subject: subject, errno: errno).description))
    }
}
