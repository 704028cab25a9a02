import AetherCore
import AetherOrchestrator
import ArgumentParser
import Logging
import ServiceLifecycle

extension Aether {
    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the functions of a configuration file in the foreground.",
            discussion: """
                Starts every function's handler, waits until each reports READY, and answers HTTP on their \
                trigger ports. Fails at once, stopping everything, if any function cannot start. \
                Ctrl-C, SIGTERM or `aether down` stop it gracefully: requests in flight finish, handlers \
                are stopped, sockets and shared memory are removed.
                """
        )

        @Option(name: .shortAndLong, help: "The configuration file.", completion: .file(extensions: ["yaml", "yml"]))
        var config: String

        @Flag(name: .shortAndLong, help: "Log debug messages too.")
        var verbose = false

        func run() async throws {
            let loaded: AetherConfig
            do {
                loaded = try ConfigLoader.load(path: config)
            } catch {
                ConfigErrorReport.print(error)
                throw ExitCode.failure
            }
            let level: Logger.Level = verbose ? .debug : .info
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            let logger = Logger(label: "aether")
            let orchestrator = Orchestrator(config: loaded, configFile: config, logger: logger)
            let service = OrchestratorService(orchestrator: orchestrator)
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

/// `aether up` as a long-running service: start, serve until asked to stop, stop cleanly.
struct OrchestratorService: Service {
    let orchestrator: Orchestrator

    func run() async throws {
        try await orchestrator.start()
        await withGracefulShutdownHandler {
            await orchestrator.waitForShutdownRequest()
        } onGracefulShutdown: {
            orchestrator.requestShutdown()
        }
        await orchestrator.shutdown()
    }
}
