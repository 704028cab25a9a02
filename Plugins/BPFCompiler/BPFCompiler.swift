import Foundation
import PackagePlugin

/// Compiles every `bpf/*.bpf.c` of the target (a folder the target excludes from its own sources)
/// with clang `-target bpf` and embeds each object in the target as a Swift string constant
/// (`<name>BPFObject`, e.g. `dataplaneBPFObject`: base64 text for AetherNet's
/// `EmbeddedBPFObject`), so the binary carries its BPF programs. A BPF compile error fails
/// `swift build` with clang's diagnostic.
@main
struct BPFCompiler: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) async throws -> [Command] {
        let folder = target.directoryURL.appending(path: "bpf")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        let sources = names.filter { $0.hasSuffix(".bpf.c") }.sorted()
        // Headers shared with the orchestrator (map keys and values) live in the CLibBPF target.
        let shared = context.package.directoryURL.appending(path: "Sources/CLibBPF")
        let headers =
            try FileManager.default.contentsOfDirectory(atPath: shared.path)
            .filter { $0.hasSuffix(".h") }.map { shared.appending(path: $0) }
            + names.filter { $0.hasSuffix(".h") }.map { folder.appending(path: $0) }
        let clang = try context.tool(named: "clang").url
        let embed = try context.tool(named: "bpf-embed").url
        // UAPI headers such as <asm/types.h> live in the multiarch folder.
        let multiarch = ["x86_64-linux-gnu", "aarch64-linux-gnu"].map { "/usr/include/\($0)" }
            .filter { FileManager.default.fileExists(atPath: $0) }

        var commands: [Command] = []
        for source in sources {
            let name = String(source.dropLast(".bpf.c".count))
            let input = folder.appending(path: source)
            let object = context.pluginWorkDirectoryURL.appending(path: "\(name).bpf.o")
            let swift = context.pluginWorkDirectoryURL.appending(path: "\(name)BPFObject.swift")
            commands.append(
                .buildCommand(
                    displayName: "Compiling BPF program \(source)",
                    executable: clang,
                    arguments: ["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"]
                        + multiarch.flatMap { ["-I", $0] }
                        + ["-I", shared.path, "-c", input.path, "-o", object.path],
                    inputFiles: [input] + headers,
                    outputFiles: [object]))
            commands.append(
                .buildCommand(
                    displayName: "Embedding BPF object \(name).bpf.o",
                    executable: embed,
                    arguments: [object.path, swift.path, "\(name)BPFObject"],
                    inputFiles: [object],
                    outputFiles: [swift]))
        }
        return commands
    }
}
