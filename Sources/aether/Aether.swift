import AetherCore
import ArgumentParser

@main
struct Aether: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aether",
        abstract: "Aetherless: a serverless function orchestrator for one Linux host.",
        discussion: """
            Functions are declared in a YAML file (id, trigger port, handler program, memory limit, timeout).
            `aether validate FILE` checks such a file and reports every problem in it at once; \
            `aether up -c FILE` runs its functions until `aether down`, SIGTERM or Ctrl-C; \
            `aether deploy FILE` and `aether rm ID` change them while they run, and `aether up` without \
            a file resumes what was last deployed.
            """,
        version: AetherVersion.current,
        subcommands: [
            Validate.self, Up.self, Dev.self, Wait.self, Deploy.self, Versions.self, Rollback.self, Rm.self, List.self,
            Stats.self, Top.self,
            Logs.self, Restart.self, Down.self, Doctor.self, Secret.self,
        ]
    )
}
