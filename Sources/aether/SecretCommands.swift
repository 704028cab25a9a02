import AetherCore
import AetherOrchestrator
import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Aether {
    struct Secret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage the secrets functions read (`secrets:`) or authenticate callers with (`auth:`).",
            discussion: """
                Secrets are kept in <state_dir>/secrets (a folder only root can read, one file of mode 0600 \
                per secret); no orchestrator needs to be running. The state folder is --state-dir, else \
                $\(OrchestratorConfig.stateDirectoryVariable), else \(OrchestratorConfig.defaultStateDirectory), \
                as for `aether up`. A function's handler reads each secret it lists at /run/secrets/NAME; \
                `up` and `deploy` fail when a function names a secret that is not stored, and read the \
                secrets again at every deploy. Contents are never printed.
                """,
            subcommands: [Create.self, List.self, Remove.self])
    }
}

/// The store the secret commands use: the state folder resolved as `aether up` without a file
/// resolves it.
struct SecretStoreOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The state folder holding secrets/ (default: $\(OrchestratorConfig.stateDirectoryVariable), else \(OrchestratorConfig.defaultStateDirectory)).",
            valueName: "path"))
    var stateDir: String?

    var store: SecretStore { SecretStore(stateDirectory: Aether.Up.stateDirectory(flag: stateDir)) }
}

/// Runs a store operation, turning its error into one line on stderr and exit status 1.
private func secretOperation<T>(_ command: String, _ body: () throws(SecretStoreError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        writeError("aether secret \(command): \(error)")
        throw ExitCode.failure
    }
}

private func secretName(_ text: String, _ command: String) throws -> SecretName {
    try secretOperation(command) { () throws(SecretStoreError) in
        do {
            return try SecretName(text)
        } catch {
            throw .invalidName(text)
        }
    }
}

extension Aether.Secret {
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store a secret from a file (or standard input).",
            discussion: """
                NAME: 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' or '-', not starting with '.'. \
                The contents are stored as they are (at most 1 MiB, not empty); a bearer token for \
                `auth:` is compared without one final line break. An existing secret is only replaced \
                with --replace; running functions see the new contents at their next deploy.
                """)

        @Argument(help: "The secret's name.")
        var name: String

        @Option(
            name: .customLong("from-file"),
            help: ArgumentHelp("The file holding the secret; - reads standard input.", valueName: "file"))
        var fromFile: String

        @Flag(help: "Replace a secret of that name if there is one.")
        var replace = false

        @OptionGroup var options: SecretStoreOptions

        func run() async throws {
            let name = try secretName(name, "create")
            let store = options.store
            let size = try secretOperation("create") { () throws(SecretStoreError) in
                let contents = try SecretStore.readSource(fromFile)
                try store.create(name, contents: contents, replacing: replace)
                return contents.count
            }
            print("stored secret \(name) (\(size) bytes) in \(store.folder)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls",
            abstract: "List the stored secrets: name, size and when it last changed (never the contents).")

        @OptionGroup var options: SecretStoreOptions

        func run() async throws {
            let store = options.store
            let entries = try secretOperation("ls") { () throws(SecretStoreError) in try store.list() }
            let rows = entries.map { [$0.name.rawValue, String($0.size), Self.utc($0.modified)] }
            print(TextTable(header: ["NAME", "BYTES", "MODIFIED (UTC)"], rows: rows).rendered)
        }

        /// `2026-12-01 12:41:31`
        static func utc(_ seconds: Int) -> String {
            var time = time_t(seconds)
            var parts = tm()
            gmtime_r(&time, &parts)
            func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : String(value) }
            return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) "
                + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Remove a stored secret.",
            discussion: """
                Running functions keep what they read; the next `up` or `deploy` of a function that \
                names it fails. An unknown name is an error (exit 1).
                """)

        @Argument(help: "The secret's name.")
        var name: String

        @OptionGroup var options: SecretStoreOptions

        func run() async throws {
            let name = try secretName(name, "rm")
            let store = options.store
            try secretOperation("rm") { () throws(SecretStoreError) in try store.remove(name) }
            print("removed secret \(name)")
        }
    }
}
