import AetherCore
import AetherOrchestrator
import ArgumentParser

extension Aether {
    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a configuration file and list its functions.",
            discussion: """
                Exits 0 and lists the functions when the file is valid. Otherwise prints every problem \
                (file:line:column, key path, what was expected, what was found) and exits 1.
                """
        )

        @Argument(help: "The configuration file.", completion: .file(extensions: ["yaml", "yml"]))
        var file: String

        func run() async throws {
            let config: AetherConfig
            do {
                config = try ConfigLoader.load(path: file)
            } catch {
                ConfigErrorReport.print(error)
                throw ExitCode.failure
            }
            // `requirements:`: the interpreter must be able to make virtualenvs (no network here;
            // the packages are pip's to find at `up`).
            if config.functions.contains(where: { $0.requirements != nil }),
                case .failure(let problem) = VirtualenvPrerequisites.check(
                    python: config.orchestrator.python, confinement: config.orchestrator.confinement)
            {
                let ids = config.functions.filter { $0.requirements != nil }.map(\.id.rawValue)
                writeError("\(file): error: requirements of \(ids.joined(separator: ", ")): \(problem)")
                throw ExitCode.failure
            }
            let count = config.functions.count
            print("\(file): valid, \(count) function\(count == 1 ? "" : "s")")
            let rows = config.functions.map { function in
                [
                    function.id.rawValue, String(function.triggerPort.rawValue),
                    "\(function.memoryLimit.megabytes) MiB",
                    "\(function.timeout.milliseconds) ms", function.handlerProtocol.rawValue, function.handlerPath,
                ]
            }
            print(TextTable(header: ["ID", "PORT", "MEMORY", "TIMEOUT", "PROTOCOL", "HANDLER"], rows: rows).rendered)
            let settings = config.orchestrator
            let xdp = settings.xdpInterface.map { "XDP on \($0) (\(settings.xdpMode.rawValue))" } ?? "no XDP"
            print(
                "data plane: \(settings.dataplane.rawValue)\(settings.dataplane == .ebpf ? ", \(xdp)" : ""); "
                    + "trigger ports on \(settings.listenAddress); python: \(settings.python)")
        }
    }
}
