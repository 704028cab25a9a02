import AetherCore
import AetherOrchestrator
import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Aether {
    struct Dev: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Run a configuration file like `up -c`, and deploy every change to it or to its handlers as it is saved.",
            discussion: """
                Watches the configuration file and every function's code (its handler file and, for a Python \
                handler, the modules beside it and its requirements file). When one changes, the file is deployed as `aether deploy` would \
                (all or nothing): only the functions that changed get a new generation (a new snapshot too), and \
                the routes swap once it serves. A change that does not validate or cannot start is printed and \
                the running version keeps serving. Each deploy prints how long it took from the save.
                """
        )

        @Option(
            name: .shortAndLong, help: "The configuration file.", completion: .file(extensions: ["yaml", "yml"]))
        var config: String

        @OptionGroup var serving: ServingOptions

        func run() async throws {
            try await Up.run(config: config, serving: serving, takeover: false, watching: true)
        }
    }
}

/// `aether dev`'s watch: polls the configuration file and the functions' code files (cheap, and
/// it sees every way an editor saves: in place, or a new file renamed over the old) and deploys
/// what changed.
struct DevWatcher: Sendable {
    let configFile: String
    let orchestrator: Orchestrator
    var interval: Duration = .milliseconds(100)

    /// What a file looked like: a save changes one of these.
    struct Stamp: Equatable {
        var inode: UInt
        var size: Int
        var modified: timespec
        var changed: timespec

        static func == (a: Stamp, b: Stamp) -> Bool {
            a.inode == b.inode && a.size == b.size && a.modified.tv_sec == b.modified.tv_sec
                && a.modified.tv_nsec == b.modified.tv_nsec && a.changed.tv_sec == b.changed.tv_sec
                && a.changed.tv_nsec == b.changed.tv_nsec
        }

        /// nil: the file is not there (an editor between removing and renaming, say).
        init?(_ path: String) {
            var info = stat()
            guard stat(path, &info) == 0 else { return nil }
            inode = UInt(info.st_ino)
            size = Int(info.st_size)
            modified = info.st_mtim
            changed = info.st_ctim
        }
    }

    /// The watched files' stamps: the configuration's, and each function's code files'.
    struct Snapshot: Equatable {
        var config: Stamp?
        var code: [FunctionID: [String: Stamp?]]
    }

    func run() async {
        // The functions of the last file that validated: an invalid edit keeps their code watched.
        var functions = (try? ConfigLoader.load(path: configFile))?.functions ?? []
        var seen = snapshot(functions)
        writeError("aether dev: watching \(configFile) and the code of \(functions.count) function(s)")
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            var now = snapshot(functions)
            guard now != seen else { continue }
            let began = ContinuousClock.now
            // An editor may save in steps: deploy once the files hold still for a moment.
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(20))
                let again = snapshot(functions)
                if again == now { break }
                now = again
            }
            let edited = now.code.keys.filter { now.code[$0] != seen.code[$0] }.sorted()
            seen = now
            let config: AetherConfig
            do {
                config = try ConfigLoader.load(path: configFile)
            } catch {
                ConfigErrorReport.print(error)
                writeError("aether dev: not deployed; the running version keeps serving")
                continue
            }
            functions = config.functions
            // Files of functions the new file adds are watched from now on.
            seen = snapshot(functions)
            do {
                let result = try await orchestrator.redeploy(configFile: configFile, replacing: edited)
                let took = ContinuousClock.now - began
                let changed = result.added + result.replaced
                writeError(
                    "aether dev: deployed in \(Self.milliseconds(took)) ms from the save"
                        + (changed.isEmpty ? " (nothing changed)" : ": \(changed.joined(separator: ", "))"))
            } catch {
                writeError("aether dev: not deployed, the running version keeps serving: \(error)")
            }
        }
    }

    private func snapshot(_ functions: [FunctionConfig]) -> Snapshot {
        var code: [FunctionID: [String: Stamp?]] = [:]
        for function in functions {
            var files: [String: Stamp?] = [:]
            for file in FunctionCode.files(of: function) + [function.requirements].compactMap({ $0 }) {
                files[file] = Stamp(file)
            }
            code[function.id] = files
        }
        return Snapshot(config: Stamp(configFile), code: code)
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}
