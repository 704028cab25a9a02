import AetherCore
import AetherNet
import AetherOrchestrator
import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Aether {
    struct Doctor: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check what `aether up` needs on this host: cgroups, Python, the SDK, eBPF, CRIU.",
            discussion:
                "Exits 1 if something `aether up` needs is missing; eBPF is reported for `dataplane: ebpf`, CRIU for warm snapshots."
        )

        @Option(help: ArgumentHelp("The criu binary to check.", valueName: "path"))
        var criu = Criu.defaultPath

        func run() async throws {
            var rows: [[String]] = []
            var fatal = false
            var name = utsname()
            uname(&name)
            let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            rows.append(["kernel", "ok", release])

            let memory = HostChecks.memoryCgroup()
            rows.append(["memory cgroup", memory.ok ? "ok" : "MISSING", memory.detail])
            fatal = fatal || !memory.ok
            let python = HostChecks.python()
            rows.append(["python3", python.ok ? "ok" : "MISSING", python.detail])
            fatal = fatal || !python.ok
            // Only functions with `requirements:` need it: reported, not fatal.
            switch VirtualenvPrerequisites.check(python: OrchestratorConfig.defaultPython, confinement: true) {
            case .success(let interpreter):
                rows.append(["python venv", "ok", "\(interpreter) makes virtualenvs (requirements:)"])
            case .failure(let problem):
                rows.append(["python venv", "MISSING", problem.description])
            }
            let sdk = PythonSDKLocator.locate()
            rows.append(["python sdk", sdk != nil ? "ok" : "MISSING", sdk ?? "not found; set AETHER_PYTHON_SDK"])
            fatal = fatal || sdk == nil
            // The ring in pure Python still serves: reported, not fatal.
            if let sdk {
                let ring = HostChecks.pythonRing(sdk: sdk)
                rows.append(["python ring", ring.ok ? "ok" : "MISSING", ring.detail])
            }

            // Confinement is on by default: a host that cannot confine cannot run `aether up`
            // without `confinement: false`.
            for (check, result) in HostChecks.confinement() {
                rows.append([check, result.ok ? "ok" : "MISSING", result.detail])
                fatal = fatal || !result.ok
            }

            do {
                rows.append(["ebpf", "ok", try EbpfDataplane.probe()])
            } catch {
                rows.append(["ebpf", "FAILED", error.description])
            }

            let tool = Criu(path: criu)
            do {
                let version = try tool.version()
                rows.append(["criu", "ok", "\(version) at \(criu)"])
                if let problem = try tool.check() {
                    rows.append([
                        "criu check", "FAILED", problem.split(separator: "\n").last.map(String.init) ?? problem,
                    ])
                } else {
                    rows.append(["criu check", "ok", "Looks good."])
                }
            } catch {
                rows.append(["criu", "MISSING", error.description])
            }
            print(TextTable(header: ["CHECK", "STATUS", "DETAIL"], rows: rows).rendered)
            if fatal { throw ExitCode.failure }
        }
    }
}
