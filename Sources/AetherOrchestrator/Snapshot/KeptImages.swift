import AetherCore
import AetherIPC
import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// CRIU images that outlive the orchestrator: `<state_dir>/images/<function>/<key>/`, where the
/// key is a hash of everything that shapes the image (`ImageKey`). At `up` (or a deploy) a kept
/// image with the function's current key is copied into `snapshot_dir` (tmpfs, where restores
/// read it) with every file's CRC-32 checked against its manifest, and restores start from it
/// without running the handler's init again; a key that changed, a missing or corrupted file is
/// never restored: the image is built again (and kept in its place).
///
/// Layout of one kept image: criu's files, then `manifest`, written last (temporary file,
/// fsync, rename): an image without a manifest is incomplete and ignored.
struct KeptImages: Sendable {
    /// `<state_dir>/images`.
    let folder: String
    /// Images kept per function (`keep_versions`): the newest, so a rollback to a recent
    /// version restores its image instead of running init again.
    let limit: Int

    static let manifestName = "manifest"
    private static let format = "aetherless-image 1"

    /// What a restore needs that is not in criu's files: the inodes of the template's control
    /// connection and output pipes (each copy gets fresh ones in their place).
    struct Manifest: Equatable {
        var controlInode: UInt64
        var stdoutInode: UInt64
        var stderrInode: UInt64
        /// name -> (size, crc32)
        var files: [String: (size: Int, crc: UInt32)] = [:]

        static func == (a: Manifest, b: Manifest) -> Bool {
            a.controlInode == b.controlInode && a.stdoutInode == b.stdoutInode && a.stderrInode == b.stderrInode
                && a.files.mapValues { "\($0.size) \($0.crc)" } == b.files.mapValues { "\($0.size) \($0.crc)" }
        }
    }

    /// Why a kept image was not used.
    enum Refusal: Error, Equatable, CustomStringConvertible {
        /// No complete image with this key (never built, or the inputs changed).
        case none
        case corrupted(file: String, reason: String)

        var description: String {
            switch self {
            case .none: "no kept image"
            case .corrupted(let file, let reason): "the kept image's \(file) is corrupted (\(reason))"
            }
        }
    }

    func path(function: FunctionID, key: String) -> String { "\(folder)/\(function.rawValue)/\(key)" }

    /// Copies the kept image of `function` with `key` into `directory` (which exists, empty but
    /// for the snapshot marker), checking every file; its manifest, or why not.
    func copy(function: FunctionID, key: String, into directory: String) -> Result<Manifest, Refusal> {
        let source = path(function: function, key: key)
        guard let text = Posix.readFile(source + "/" + Self.manifestName) else { return .failure(.none) }
        guard let manifest = Self.parse(text) else {
            return .failure(.corrupted(file: Self.manifestName, reason: "not a manifest"))
        }
        let present = Set((Posix.entries(of: source) ?? []).map(\.name)).subtracting([Self.manifestName])
        if let missing = Set(manifest.files.keys).subtracting(present).sorted().first {
            return .failure(.corrupted(file: missing, reason: "missing"))
        }
        for (name, expected) in manifest.files.sorted(by: { $0.key < $1.key }) {
            switch Self.copyFile(source + "/" + name, to: directory + "/" + name) {
            case .failure(let failure):
                return .failure(.corrupted(file: name, reason: failure.reason))
            case .success(let (size, crc)):
                guard size == expected.size, crc == expected.crc else {
                    return .failure(
                        .corrupted(
                            file: name,
                            reason:
                                "\(size) bytes with CRC-32 \(crc), the manifest says \(expected.size) and \(expected.crc)"
                        ))
                }
            }
        }
        return .success(manifest)
    }

    /// Keeps the image built in `directory` as `function`'s image with `key`, replacing any
    /// other kept image of it. Throws why it could not (the image still serves this run).
    func keep(
        function: FunctionID, key: String, from directory: String, inodes: (UInt64, UInt64, UInt64),
        skipping: Set<String>
    ) throws(SystemCallFailure) {
        let functionFolder = "\(folder)/\(function.rawValue)"
        for made in [folder, functionFolder] where mkdir(made, 0o700) != 0 && errno != EEXIST {
            throw SystemCallFailure(call: "mkdir", subject: made, errno: errno)
        }
        let target = path(function: function, key: key)
        let temporary = "\(functionFolder)/.\(key).tmp-\(getpid())"
        RecursiveRemoval.remove(temporary)
        try systemCall("mkdir", on: temporary, failsWith: .minusOne) { mkdir(temporary, 0o700) }
        var manifest = Manifest(controlInode: inodes.0, stdoutInode: inodes.1, stderrInode: inodes.2)
        do {
            for entry in Posix.entries(of: directory) ?? [] where !skipping.contains(entry.name) && !entry.isDirectory {
                let (size, crc) = try Self.copyFile(directory + "/" + entry.name, to: temporary + "/" + entry.name)
                    .get()
                manifest.files[entry.name] = (size, crc)
            }
            try DurableFile.replace(
                temporary + "/" + Self.manifestName, with: Array(Self.render(manifest).utf8),
                temporary: temporary + "/." + Self.manifestName + ".tmp")
            RecursiveRemoval.remove(target)
            try systemCall("rename", on: "\(temporary) -> \(target)", failsWith: .minusOne) {
                rename(temporary, target)
            }
            try DurableFile.syncFolder(of: target)
        } catch {
            RecursiveRemoval.remove(temporary)
            throw error
        }
        // The newest `limit` images of a function are kept (by when they were kept).
        let others = (Posix.entries(of: functionFolder) ?? []).filter { $0.name != key }.map { entry in
            var status = stat()
            let path = functionFolder + "/" + entry.name
            let kept = stat(path + "/" + Self.manifestName, &status) == 0 && !entry.name.hasPrefix(".")
            return (
                path: path, kept: kept, time: kept ? status.st_mtim.tv_sec * 1_000_000_000 + status.st_mtim.tv_nsec : 0
            )
        }
        let newest = others.filter(\.kept).sorted { $0.time > $1.time }.prefix(max(0, limit - 1)).map(\.path)
        for other in others where !newest.contains(other.path) && !other.path.contains(".tmp-\(getpid())") {
            RecursiveRemoval.remove(other.path)
        }
    }

    /// Forgets `function`'s kept images (`aether rm`).
    func remove(function: FunctionID) {
        RecursiveRemoval.remove("\(folder)/\(function.rawValue)")
    }

    // MARK: Files

    /// Copies a file (new, mode 0600) and returns its size and the CRC-32 of what was written.
    private static func copyFile(_ source: String, to target: String) -> Result<(Int, UInt32), SystemCallFailure> {
        do throws(SystemCallFailure) {
            let input = try OwnedDescriptor.open(source, O_RDONLY | O_CLOEXEC)
            let output = try OwnedDescriptor.open(
                target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: 0o600)
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var crc: UInt32 = 0
            var size = 0
            while true {
                let count = try systemCall("read", on: source, failsWith: .minusOne) {
                    buffer.withUnsafeMutableBytes { read(input.rawValue, $0.baseAddress, $0.count) }
                }
                if count == 0 { break }
                crc = buffer.withUnsafeBytes {
                    CRC32.checksum(UnsafeRawBufferPointer(rebasing: $0[..<count]), continuing: crc)
                }
                var offset = 0
                while offset < count {
                    offset += try systemCall("write", on: target, failsWith: .minusOne) {
                        buffer.withUnsafeBytes { write(output.rawValue, $0.baseAddress! + offset, count - offset) }
                    }
                }
                size += count
            }
            return .success((size, crc))
        } catch {
            return .failure(error)
        }
    }

    static func render(_ manifest: Manifest) -> String {
        var lines = [
            format, "inodes \(manifest.controlInode) \(manifest.stdoutInode) \(manifest.stderrInode)",
        ]
        for (name, file) in manifest.files.sorted(by: { $0.key < $1.key }) {
            lines.append("file \(file.size) \(file.crc) \(name)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func parse(_ text: String) -> Manifest? {
        let lines = text.split(separator: "\n")
        guard lines.first == Substring(format), lines.count >= 2 else { return nil }
        let inodes = lines[1].split(separator: " ")
        guard inodes.count == 4, inodes[0] == "inodes", let control = UInt64(inodes[1]),
            let stdout = UInt64(inodes[2]), let stderr = UInt64(inodes[3])
        else { return nil }
        var manifest = Manifest(controlInode: control, stdoutInode: stdout, stderrInode: stderr)
        for line in lines.dropFirst(2) {
            let fields = line.split(separator: " ", maxSplits: 3)
            guard fields.count == 4, fields[0] == "file", let size = Int(fields[1]), let crc = UInt32(fields[2]),
                !fields[3].contains("/"), !fields[3].hasPrefix(".")
            else { return nil }
            manifest.files[String(fields[3])] = (size, crc)
        }
        return manifest.files.isEmpty ? nil : manifest
    }
}

/// The key of a function's image: SHA-256 over everything that shapes what criu dumps. Any
/// change (the handler file or a Python module beside it, the SDK, the interpreter, criu, this
/// program's version, the handler's environment and arguments, its identity and file system
/// view) gives another key, so a kept image is never restored into a world it was not made in.
enum ImageKey {
    static func make(
        config: FunctionConfig, launch: HandlerLaunch, sandbox: InstanceSandbox?, criuVersion: String,
        pythonSDK: String?
    ) -> String {
        var hash = SHA256()
        func add(_ label: String, _ value: String) { hash.update(Array("\(label)=\(value)\n".utf8)) }
        add("format", "1")
        add("aether", AetherVersion.current)
        add("criu", criuVersion)
        // What the image's code chose at start-up by CPUID (glibc's memcpy variants, the CRC
        // kernels of the SDKs): restored on a CPU without those instructions it would crash.
        add("cpu", cpuFeatures)
        add("program", launch.program)
        add("arguments", launch.arguments.joined(separator: "\u{0}"))
        for (name, value) in launch.environment.sorted(by: { $0.key < $1.key }) { add("env " + name, value) }
        // The interpreter a Python handler runs with, as the file it resolves to.
        if let program = resolved(launch.program, searchPath: launch.searchPath) {
            add("program file", program + " " + fileStamp(program))
        }
        // A virtualenv aether built (`requirements:`): its marker names its key and build, so a
        // virtualenv built again (unpinned packages resolve anew) gives another key.
        if launch.program.hasSuffix("/bin/python"),
            let marker = Posix.readFile(
                String(launch.program.dropLast("/bin/python".count)) + "/" + VirtualenvCache.marker)
        {
            add("virtualenv", marker)
        }
        add("handler", fileHash(config.handlerPath))
        for module in FunctionCode.files(of: config).dropFirst() {
            add("module " + module.split(separator: "/").last.map(String.init)!, fileHash(module))
        }
        if let pythonSDK {
            let package = pythonSDK + "/aetherless"
            for entry in (Posix.entries(of: package) ?? []).sorted(by: { $0.name < $1.name })
            where entry.name.hasSuffix(".py") {
                add("sdk " + entry.name, fileHash(package + "/" + entry.name))
            }
            // The ring's C half beside the package (scripts/build-python-ext.sh): the image maps
            // it, so one built again (or removed, or built for the first time) gives another key.
            for entry in (Posix.entries(of: pythonSDK) ?? []).sorted(by: { $0.name < $1.name })
            where entry.name.hasPrefix("_aetherless_cring") && entry.name.hasSuffix(".so") {
                add("sdk " + entry.name, fileHash(pythonSDK + "/" + entry.name))
            }
        }
        if let sandbox {
            add("identity", sandbox.identity.description)
            add("binds", sandbox.binds.joined(separator: ":"))
            add("covers", sandbox.covers.joined(separator: ":"))
            add("network none", String(sandbox.networkNone))
            add("secrets", String(sandbox.secrets != nil))
            add("working directory", sandbox.workingDirectory)
        } else {
            add("confinement", "false")
        }
        return hash.finalize().hex
    }

    /// The first `flags` line of /proc/cpuinfo: the instruction set the host offers.
    static let cpuFeatures: String = {
        guard let text = Posix.readFile("/proc/cpuinfo") else { return "unknown" }
        return text.split(separator: "\n").first { $0.hasPrefix("flags") }.map(String.init) ?? "unknown"
    }()

    private static func fileHash(_ path: String) -> String {
        (try? SHA256.hex(ofFile: path)) ?? "unreadable"
    }

    /// Size and modification time: enough to notice an interpreter that was replaced, without
    /// hashing megabytes at every start.
    private static func fileStamp(_ path: String) -> String {
        var status = stat()
        guard stat(path, &status) == 0 else { return "missing" }
        return "\(status.st_size) \(status.st_mtim.tv_sec).\(status.st_mtim.tv_nsec)"
    }

    private static func resolved(_ program: String, searchPath: Bool) -> String? {
        let candidates =
            searchPath && !program.contains("/")
            ? (HandlerLaunch.inheritedEnvironment()["PATH"] ?? "").split(separator: ":").map { "\($0)/\(program)" }
            : [program]
        for candidate in candidates where access(candidate, X_OK) == 0 {
            guard let real = realpath(candidate, nil) else { continue }
            defer { free(real) }
            return String(cString: real)
        }
        return nil
    }
}
