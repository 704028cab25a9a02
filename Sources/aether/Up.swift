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

        @Option(
            help: ArgumentHelp(
                "Write this file (the orchestrator's PID) once every function serves; removed again when it stops.",
                valueName: "path"))
        var readyFile: String?

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
            let service = OrchestratorService(
                orchestrator: orchestrator, readyFile: readyFile.map { ReadyFile(path: absolutePath($0)) })
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
    let readyFile: ReadyFile?

    func run() async throws {
        try await orchestrator.start()
        do {
            try readyFile?.write()
        } catch {
            await orchestrator.shutdown()
            throw error
        }
        await withGracefulShutdownHandler {
            await orchestrator.waitForShutdownRequest()
        } onGracefulShutdown: {
            orchestrator.requestShutdown()
        }
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
