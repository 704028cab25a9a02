import AetherCore
import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A virtualenv of the cache: the folder and the interpreter handlers run with.
struct Virtualenv: Sendable, Equatable {
    let folder: String
    let key: String
    var python: String { folder + "/bin/python" }
}

/// The virtualenvs of functions with `requirements:`, one per `VirtualenvKey` in
/// `<state_dir>/venvs/<key>/`, shared by every function whose requirements and interpreter give
/// that key and kept for the next `up`.
///
/// A virtualenv is built in `.build-<key>-<pid>/` beside its place (`python -m venv`, then
/// `pip install -r` with whatever index pip is configured for: PIP_INDEX_URL, PIP_FIND_LINKS,
/// PIP_NO_INDEX and pip.conf are pip's to read) and renamed into place once pip succeeded, so a
/// folder named by a key is always complete. Each folder aether makes holds a `.aether-venv`
/// marker: only folders with one are ever removed. The folders are 0755 (handlers run as their
/// own users and read their virtualenv through a read-only bind); `state_dir` itself stays
/// closed, the sandbox covers it.
final class VirtualenvCache: Sendable {
    /// The marker file of a folder aether made.
    static let marker = ".aether-venv"
    /// Lines of pip's output kept for the error when it fails.
    static let tailLines = 60

    let folder: String

    init(folder: String) {
        self.folder = folder
    }

    /// An interpreter able to make virtualenvs: its absolute path and its version.
    struct Interpreter: Sendable, Equatable {
        let path: String
        let version: String
    }

    /// Runs `python` (an absolute path, or a command looked up in PATH) once to learn its path and
    /// version and that it has the `venv` and `ensurepip` modules. No network.
    static func probe(python: String) -> Result<Interpreter, VirtualenvError> {
        let script = """
            import os; os.dup2(1, 2)
            import sys, venv, ensurepip
            print(sys.executable); print(sys.version.replace("\\n", " "))
            """
        let run: Run
        do {
            run = try Self.run(
                program: python, arguments: ["-c", script], searchPath: !python.hasPrefix("/"), onLine: { _ in })
        } catch {
            return .failure(.interpreterUnusable(python: python, output: error.description))
        }
        let lines = run.tail
        guard run.status == .exited(0), lines.count >= 2, lines[lines.count - 2].hasPrefix("/") else {
            return .failure(
                .interpreterUnusable(python: python, output: "it \(run.status): " + lines.joined(separator: "\n")))
        }
        return .success(Interpreter(path: lines[lines.count - 2], version: lines[lines.count - 1]))
    }

    /// The interpreter a command name (`python3`) means for a handler: the first in the handlers'
    /// PATH that is executable, and with `forOtherUsers` (confined handlers run as users of their
    /// own) the first every user can reach: a python3 under /root (pyenv's) is passed over, as the
    /// handler's own PATH lookup would. An absolute path, or a name not found, is returned as is.
    static func locate(python: String, forOtherUsers: Bool) -> String {
        guard !python.contains("/") else { return python }
        let path = HandlerLaunch.inheritedEnvironment()["PATH"] ?? ""
        for folder in path.split(separator: ":") where folder.hasPrefix("/") {
            let candidate = "\(folder)/\(python)"
            guard access(candidate, X_OK) == 0 else { continue }
            if !forOtherUsers || reachableByEveryone(candidate) { return candidate }
        }
        return python
    }

    /// Every folder above `path` (and the file its symbolic links lead to) is searchable by
    /// others, and the file is executable by them.
    private static func reachableByEveryone(_ path: String) -> Bool {
        guard let resolved = realpath(path, nil) else { return false }
        defer { free(resolved) }
        var current = String(cString: resolved)
        var status = stat()
        guard stat(current, &status) == 0, status.st_mode & 0o001 != 0 else { return false }
        while let slash = current.lastIndex(of: "/"), slash != current.startIndex {
            current = String(current[..<slash])
            guard stat(current, &status) == 0, status.st_mode & 0o001 != 0 else { return false }
        }
        return true
    }

    /// The virtualenv for `requirements` (an absolute path) with `python` (absolute, or a name
    /// `locate` resolves): the cached one, or one built now; `progress` gets each line the build
    /// prints. Blocks for as long as pip runs: call it on a background thread.
    func prepare(
        function: FunctionID, requirements: String, python: String, progress: (String) -> Void
    ) throws(VirtualenvError) -> (virtualenv: Virtualenv, built: Bool) {
        let interpreter = try Self.probe(python: python).get()
        guard let listed = Posix.readBytes(requirements) else {
            throw .installFailed(
                function: function, requirements: requirements, status: "was not run",
                output: "the requirements file cannot be read: \(String(cString: strerror(errno)))")
        }
        let key = VirtualenvKey.make(requirements: listed, python: interpreter.path, version: interpreter.version)
        let virtualenv = Virtualenv(folder: folder + "/" + key, key: key)
        try makeFolders()
        if Self.isComplete(virtualenv.folder) { return (virtualenv, false) }
        if access(virtualenv.folder, F_OK) == 0 {
            guard Self.isOurs(virtualenv.folder) else {
                throw .folderUnavailable(
                    path: virtualenv.folder, reason: "it exists, and aether did not make it (no \(Self.marker) in it)")
            }
            // Ours but broken (its interpreter gone): built again.
            RecursiveRemoval.remove(virtualenv.folder)
        }
        removeStaleBuilds()
        let temporary = folder + "/.build-\(key)-\(getpid())"
        if Self.isOurs(temporary) { RecursiveRemoval.remove(temporary) }
        guard mkdir(temporary, 0o755) == 0, chmod(temporary, 0o755) == 0 else {
            throw .folderUnavailable(path: temporary, reason: String(cString: strerror(errno)))
        }
        let stamp =
            "aether virtualenv\nkey \(key)\npython \(interpreter.path)\nversion \(interpreter.version)\n"
            + "requirements \(requirements)\nbuilt \(time(nil)) by pid \(getpid())\n"
        do {
            let marker = temporary + "/" + Self.marker
            try DurableFile.replace(marker, with: Array(stamp.utf8), temporary: marker + ".tmp", mode: 0o644)
        } catch {
            RecursiveRemoval.remove(temporary)
            throw .folderUnavailable(path: temporary, reason: error.description)
        }
        let run: Run
        do {
            run = try Self.run(
                program: interpreter.path,
                arguments: ["-c", Self.buildScript, temporary, requirements, virtualenv.folder], searchPath: false,
                onLine: progress)
        } catch {
            RecursiveRemoval.remove(temporary)
            throw .interpreterUnusable(python: interpreter.path, output: error.description)
        }
        guard run.status == .exited(0) else {
            RecursiveRemoval.remove(temporary)
            throw .installFailed(
                function: function, requirements: requirements, status: run.status.description,
                output: run.tail.joined(separator: "\n"))
        }
        if rename(temporary, virtualenv.folder) != 0 {
            let reason = String(cString: strerror(errno))
            RecursiveRemoval.remove(temporary)
            // Another build of the same key got there first: the same virtualenv.
            guard Self.isComplete(virtualenv.folder) else {
                throw .folderUnavailable(path: virtualenv.folder, reason: "rename: \(reason)")
            }
            return (virtualenv, false)
        }
        return (virtualenv, true)
    }

    /// What builds a virtualenv: `venv` (pip included), `pip install -r` from the requirements'
    /// folder (so relative paths in it mean what they say), then the build folder's path in
    /// bin/'s scripts (shebangs, activate) becomes the final one. Arguments: the build folder,
    /// the requirements file, the final folder. Everything goes to stdout.
    static let buildScript = """
        import os, subprocess, sys, venv
        os.dup2(1, 2)
        target, requirements, final = sys.argv[1:4]
        os.umask(0o022)
        print("making a virtualenv with %s %s" % (sys.executable, sys.version.split()[0]), flush=True)
        venv.EnvBuilder(with_pip=True, symlinks=True).create(target)
        os.chdir(os.path.dirname(requirements))
        print("pip install -r %s" % requirements, flush=True)
        status = subprocess.call([os.path.join(target, "bin", "python"), "-m", "pip", "install",
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-r", requirements])
        if status != 0:
            sys.exit(status)
        scripts = os.path.join(target, "bin")
        for name in os.listdir(scripts):
            path = os.path.join(scripts, name)
            if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > 1 << 20:
                continue
            with open(path, "rb") as f:
                data = f.read()
            if target.encode() in data:
                with open(path, "wb") as f:
                    f.write(data.replace(target.encode(), final.encode()))
        """

    /// Made by aether, renamed into place, its interpreter there.
    static func isComplete(_ folder: String) -> Bool {
        isOurs(folder) && access(folder + "/bin/python", X_OK) == 0
    }

    private static func isOurs(_ folder: String) -> Bool {
        var status = stat()
        return lstat(folder + "/" + marker, &status) == 0 && (status.st_mode & S_IFMT) == S_IFREG
    }

    /// `<state_dir>/venvs`, 0755; the state folder above it (made 0700 by `up`) gets search
    /// permission (0711: a handler can pass through it to its virtualenv, but not list it; what
    /// else is in it stays closed: the state file and `identities` are 0600, `secrets` and
    /// `images` 0700). Handlers reach it where the state folder is inside a folder bound into
    /// their view (a handler's own folder), which no cover hides.
    private func makeFolders() throws(VirtualenvError) {
        let parent = folder.lastIndex(of: "/").map { String(folder[..<$0]) } ?? ""
        var status = stat()
        if !parent.isEmpty, stat(parent, &status) == 0, status.st_mode & 0o011 != 0o011,
            chmod(parent, (status.st_mode & 0o7777) | 0o011) != 0
        {
            throw .folderUnavailable(path: parent, reason: "chmod: \(String(cString: strerror(errno)))")
        }
        if mkdir(folder, 0o755) != 0 && errno != EEXIST {
            throw .folderUnavailable(path: folder, reason: String(cString: strerror(errno)))
        }
        if chmod(folder, 0o755) != 0 {
            throw .folderUnavailable(path: folder, reason: "chmod: \(String(cString: strerror(errno)))")
        }
    }

    /// Build folders of orchestrators that died while building (their pid gone).
    private func removeStaleBuilds() {
        for entry in Posix.entries(of: folder) ?? [] where entry.isDirectory && entry.name.hasPrefix(".build-") {
            guard let pid = entry.name.split(separator: "-").last.flatMap({ pid_t($0) }), pid != getpid(),
                kill(pid, 0) != 0 && errno == ESRCH
            else { continue }
            let path = folder + "/" + entry.name
            if Self.isOurs(path) { RecursiveRemoval.remove(path) }
        }
    }

    // MARK: Running the interpreter

    struct Run {
        let status: ExitStatus
        /// The last `tailLines` lines it printed.
        let tail: [String]
    }

    /// Runs a program with the orchestrator's environment, stdout (where the scripts send
    /// stderr too) read line by line until it closes, then stderr, then reaps it.
    private static func run(
        program: String, arguments: [String], searchPath: Bool, onLine: (String) -> Void
    ) throws(SpawnError) -> Run {
        let process = try ProcessSpawner.spawn(
            program: program, arguments: arguments, environment: Self.environment(), searchPath: searchPath)
        var tail: [String] = []
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        func emit(_ bytes: ArraySlice<UInt8>) {
            let line = String(decoding: bytes.last == 13 ? bytes.dropLast() : bytes, as: UTF8.self)
            onLine(line)
            tail.append(line)
            if tail.count > tailLines { tail.removeFirst(tail.count - tailLines) }
        }
        // stdout, then stderr: what an interpreter says before the script sends stderr to stdout
        // (or a program that is no Python at all).
        for descriptor in [process.stdout.rawValue, process.stderr.rawValue] {
            while true {
                let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                pending += chunk[..<count]
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    emit(pending[..<newline])
                    pending.removeSubrange(...newline)
                }
            }
            if !pending.isEmpty { emit(pending[...]) }
            pending.removeAll()
        }
        var status: CInt = 0
        while waitpid(process.pid, &status, 0) < 0 && errno == EINTR {}
        return Run(status: ExitStatus(waitStatus: status), tail: tail)
    }

    /// The orchestrator's own environment: pip reads its index settings (PIP_*), HOME (pip.conf,
    /// its cache) and proxies from it.
    private static func environment() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        if result["PATH"] == nil { result["PATH"] = "/usr/local/bin:/usr/bin:/bin" }
        return result
    }
}

/// What `aether validate` and `aether doctor` can check of `requirements:` without network: that
/// the interpreter handlers would get can make virtualenvs. (Whether pip finds the packages is
/// known only when it runs, at `up` or `deploy`.)
public enum VirtualenvPrerequisites {
    /// The interpreter `python` (the `python` setting) means for handlers, its version, or why
    /// it cannot make virtualenvs. `confinement`: handlers run as users of their own.
    public static func check(python: String, confinement: Bool) -> Result<String, VirtualenvError> {
        let located = VirtualenvCache.locate(python: python, forOtherUsers: confinement)
        return VirtualenvCache.probe(python: located).map { "\($0.path) \($0.version.prefix { $0 != " " })" }
    }
}
