import Foundation
import Testing

@testable import AetherCore

@Suite struct ConfigLoaderTests {
    /// A function `a` on api.py with `settings` added is refused, with `message` among its problems.
    private func expectRejected(
        _ settings: String, _ message: String, in dir: TemporaryDirectory,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let error = #expect(throws: ConfigError.self, sourceLocation: sourceLocation) {
            try ConfigLoader.load(
                path: dir.write(
                    "bad.yaml", "functions:\n  - {id: a, trigger_port: 80, handler_path: api.py, \(settings)}\n"))
        }
        #expect(
            String(describing: error).contains(message), "\(settings): \(String(describing: error))",
            sourceLocation: sourceLocation)
    }

    @Test func loadsTheFullSchema() throws {
        let dir = TemporaryDirectory()
        dir.write("handler.py", "print('hi')\n")
        dir.write("bin-handler", "#!/bin/sh\n", executable: true)
        let file = dir.write(
            "aetherless.yaml",
            """
            orchestrator:
              shm_buffer_size: 1048576
              warm_pool_size: 3
              restore_timeout_ms: 20
              snapshot_dir: /dev/shm/custom
              dataplane: ebpf
              xdp_interface: veth-a
              xdp_mode: native
              python: /usr/bin/python3
            functions:
              - id: hello-world
                memory_limit_mb: 256
                trigger_port: 8080
                handler_path: ./handler.py
                timeout_ms: 1500
                environment: {GREETING: hi, PORT: 9000, EMPTY: ""}
              - id: native
                trigger_port: 0x1F91
                handler_path: bin-handler
            """)
        let config = try ConfigLoader.load(path: file)
        #expect(config.orchestrator.shmBufferSize.bytes == 1_048_576)
        #expect(config.orchestrator.warmPoolSize.rawValue == 3)
        #expect(config.orchestrator.restoreTimeout.milliseconds == 20)
        #expect(config.orchestrator.snapshotDirectory == "/dev/shm/custom")
        #expect(config.orchestrator.dataplane == .ebpf)
        #expect(config.orchestrator.xdpInterface == "veth-a" && config.orchestrator.xdpMode == .native)
        #expect(config.orchestrator.python == "/usr/bin/python3")
        let hello = try #require(config.functions.first)
        #expect(hello.id.rawValue == "hello-world")
        #expect(hello.memoryLimit.megabytes == 256)
        #expect(hello.triggerPort.rawValue == 8080)
        #expect(hello.handlerPath == "\(dir.path)/handler.py")
        #expect(hello.launcher == .python)
        #expect(hello.timeout.milliseconds == 1500)
        #expect(hello.environment == ["GREETING": "hi", "PORT": "9000", "EMPTY": ""])
        let native = config.functions[1]
        #expect(native.triggerPort.rawValue == 8081)
        #expect(native.launcher == .executable)
        #expect(native.memoryLimit.megabytes == 128, "default memory limit")
        #expect(native.timeout.milliseconds == 30_000, "default timeout")
        #expect(native.environment.isEmpty)
    }

    @Test func orchestratorSectionIsOptionalWithSeedDefaults() throws {
        let dir = TemporaryDirectory()
        dir.write("h.py", "")
        let config = try ConfigLoader.load(
            path: dir.write("c.yaml", "functions:\n  - {id: a, trigger_port: 80, handler_path: h.py}\n"))
        #expect(config.orchestrator == OrchestratorConfig())
        #expect(config.orchestrator.shmBufferSize.bytes == 4_194_304)
        #expect(config.orchestrator.warmPoolSize.rawValue == 10)
        #expect(config.orchestrator.restoreTimeout.milliseconds == 15)
        #expect(config.orchestrator.snapshotDirectory == "/dev/shm/aetherless")
        #expect(config.orchestrator.dataplane == .ebpf && config.orchestrator.xdpInterface == nil)
        #expect(config.orchestrator.python == "python3")
    }

    /// `snapshot:` takes a start mode as well as a boolean; `true` means the standard mode.
    @Test func snapshotModes() throws {
        let dir = TemporaryDirectory()
        dir.write("h.py", "")
        let yaml = """
            functions:
              - {id: a, trigger_port: 80, handler_path: h.py, snapshot: true}
              - {id: b, trigger_port: 81, handler_path: h.py, snapshot: fork}
              - {id: c, trigger_port: 82, handler_path: h.py, snapshot: criu}
              - {id: d, trigger_port: 83, handler_path: h.py, snapshot: false}

            """
        let config = try ConfigLoader.load(path: dir.write("c.yaml", yaml))
        let modes = config.functions.map { $0.snapshot ? $0.snapshotMode.rawValue : "none" }
        #expect(modes == ["criu", "fork", "criu", "none"])
        #expect(config.functions.map(\.usesCriu) == [true, false, true, false])
        let error = #expect(throws: ConfigError.self) {
            let bad = "functions:\n  - {id: a, trigger_port: 80, handler_path: h.py, snapshot: zygote}\n"
            _ = try ConfigLoader.load(path: dir.write("bad.yaml", bad))
        }
        #expect(String(describing: error).contains("functions[0].snapshot: expected true, false, criu or fork, found"))
    }

    /// `asgi:` / `wsgi:` name an app object of a Python handler module; every misuse is named.
    @Test func pythonApps() throws {
        let dir = TemporaryDirectory()
        dir.write("api.py", "")
        dir.write("prog", "")
        chmod(dir.path + "/prog", 0o755)
        let config = try ConfigLoader.load(
            path: dir.write(
                "c.yaml",
                """
                functions:
                  - {id: a, trigger_port: 80, handler_path: api.py, asgi: app}
                  - {id: b, trigger_port: 81, handler_path: api.py, wsgi: web.server}
                  - {id: c, trigger_port: 82, handler_path: api.py}

                """))
        #expect(config.functions.map { $0.app?.environmentValue } == ["asgi:app", "wsgi:web.server", nil])
        let cases: [(String, String)] = [
            ("asgi: app, wsgi: app", "functions[0].wsgi: expected one of `asgi` and `wsgi`, not both"),
            ("asgi: 1app", "functions[0].asgi: expected the name of the app object in the handler module"),
            ("asgi: \"app.\"", "functions[0].asgi: expected the name of the app object"),
            ("asgi: app, protocol: process", "no `asgi` for a `protocol: process` handler"),
        ]
        for (settings, message) in cases { expectRejected(settings, message, in: dir) }
        let error = #expect(throws: ConfigError.self) {
            try ConfigLoader.load(
                path: dir.write(
                    "bin.yaml", "functions:\n  - {id: a, trigger_port: 80, handler_path: prog, asgi: app}\n"))
        }
        #expect(String(describing: error).contains("functions[0].asgi: expected a Python handler_path"))
    }

    /// `requirements:` names a pip requirements file, relative to the configuration's folder, for
    /// a Python sdk handler; every misuse is named with its line.
    @Test func requirements() throws {
        let dir = TemporaryDirectory()
        dir.write("api.py", "")
        dir.write("prog", "#!/bin/sh\n", executable: true)
        dir.write("requirements.txt", "idna==3.7\n")
        dir.write("unreadable.txt", "idna\n")
        chmod(dir.path + "/unreadable.txt", 0o000)
        dir.write("big.txt", String(repeating: "# padding\n", count: 110_000))
        let config = try ConfigLoader.load(
            path: dir.write(
                "c.yaml",
                """
                functions:
                  - {id: a, trigger_port: 80, handler_path: api.py, requirements: requirements.txt}
                  - {id: b, trigger_port: 81, handler_path: api.py, requirements: \(dir.path)/requirements.txt}
                  - {id: c, trigger_port: 82, handler_path: api.py}

                """))
        #expect(
            config.functions.map(\.requirements) == [
                "\(dir.path)/requirements.txt", "\(dir.path)/requirements.txt", nil,
            ])
        var cases: [(String, String)] = [
            (
                "requirements: missing.txt",
                "2:67: functions[0].requirements: expected an existing pip requirements file, found \(dir.path)/missing.txt: No such file or directory"
            ),
            ("requirements: .", "functions[0].requirements: expected a regular file, found \(dir.path)"),
            ("requirements: \"\"", "functions[0].requirements: expected a path to a pip requirements file"),
            ("requirements: [a]", "functions[0].requirements: expected a string, found a list"),
            (
                "requirements: big.txt",
                "functions[0].requirements: expected a requirements file of at most 1048576 bytes"
            ),
            (
                "requirements: requirements.txt, protocol: process",
                "no `requirements` for a `protocol: process` handler"
            ),
        ]
        // Root reads any file: the mode only stops other users.
        if geteuid() != 0 {
            cases.append(("requirements: unreadable.txt", "expected a readable requirements file"))
        }
        for (settings, message) in cases { expectRejected(settings, message, in: dir) }
        let error = #expect(throws: ConfigError.self) {
            try ConfigLoader.load(
                path: dir.write(
                    "bin.yaml",
                    "functions:\n  - {id: a, trigger_port: 80, handler_path: prog, requirements: requirements.txt}\n"))
        }
        #expect(String(describing: error).contains("functions[0].requirements: expected a Python handler_path"))
    }

    @Test func theBundledExampleIsValid() throws {
        let example = Fixtures.root.appendingPathComponent("../../../examples/aetherless.yaml").standardized.path
        let config = try ConfigLoader.load(path: example)
        #expect(!config.functions.isEmpty)
    }

    /// One file, many different mistakes: every one is reported, in file order, with its position.
    @Test func reportsEveryProblemInOnePass() throws {
        let dir = TemporaryDirectory()
        dir.write("ok.py", "")
        let file = dir.write(
            "many.yaml",
            """
            orchestrator:
              shm_buffer_size: 1000
              warm_pool_size: ten
              restore_timout_ms: 15
            functions:
              - id: Hello
                memory_limit_mb: 99999
                trigger_port: 70000
                handler_path: ./missing.py
              - id: b
                trigger_port: [1]
                handler_path: ok.py
              - id: b
                trigger_port: 8080
                handler_path: ok.py
                colour: blue
            """)
        let error = #expect(throws: ConfigError.self) { try ConfigLoader.load(path: file) }
        guard case .invalid(let path, let diagnostics) = error else {
            Issue.record("expected .invalid, got \(String(describing: error))")
            return
        }
        #expect(path == file)
        let summary = diagnostics.map { "\($0.line):\($0.column) \($0.kind) \($0.keyPath)" }
        #expect(
            summary == [
                "2:20 invalidValue orchestrator.shm_buffer_size",
                "3:19 wrongType orchestrator.warm_pool_size",
                "4:3 unknownKey orchestrator.restore_timout_ms",
                "6:9 invalidValue functions[0].id",
                "7:22 invalidValue functions[0].memory_limit_mb",
                "8:19 invalidValue functions[0].trigger_port",
                "9:19 handlerUnusable functions[0].handler_path",
                "11:19 wrongType functions[1].trigger_port",
                "13:9 duplicateFunctionID functions[2].id",
                "16:5 unknownKey functions[2].colour",
            ])
        #expect(diagnostics.allSatisfy { $0.file == file })
        #expect(
            diagnostics[2].description
                == "\(file):4:3: orchestrator.restore_timout_ms: expected `restore_timeout_ms` or another of the keys "
                + "shm_buffer_size, warm_pool_size, warm_pool_memory_mb, snapshot_dir, control_socket, listen_address, "
                + "client_timeout_ms, criu_path, metrics_port, otlp_endpoint, dataplane, xdp_interface, xdp_mode, "
                + "python, state_dir, confinement, uid_range, keep_versions, "
                + "found unknown key `restore_timout_ms`")
        #expect(
            diagnostics[5].description
                == "\(file):8:19: functions[0].trigger_port: expected an integer in 1...65535, found 70000")
    }

    /// The committed corpus of bad files: each gives exactly these diagnostics (kind at line:column),
    /// and none crashes.
    static let aliasBomb: [String] =
        ["unknownKey 1:1", "unknownKey 2:1", "unknownKey 3:1", "unknownKey 4:1", "unknownKey 5:1", "unknownKey 6:1"]
        + Array(repeating: "wrongType 6:4", count: 9) + ["unknownKey 7:1"]

    static let corpus: [String: [String]] = [
        "alias-bomb.yaml": aliasBomb,
        "bad-environment.yaml": ["invalidValue 5:19", "invalidValue 5:37", "wrongType 5:54"],
        "bad-ids.yaml": ["invalidValue 2:9", "invalidValue 5:9"],
        "bad-orchestrator-values.yaml": ["invalidValue 2:17", "invalidValue 3:20"],
        "binary.yaml": ["invalidEncoding"],
        "comment-only.yaml": ["emptyDocument 1:1"],
        "confinement.yaml": [
            "wrongType 2:16", "invalidValue 3:14", "invalidValue 8:11", "invalidValue 9:14", "invalidValue 10:15",
            "invalidValue 11:16", "invalidValue 12:28", "invalidValue 12:37", "invalidValue 12:50",
            "invalidValue 13:33", "invalidValue 18:14", "invalidValue 19:5", "wrongType 23:16", "wrongType 24:14",
            "missingKey 25:11", "unknownKey 25:26", "invalidValue 26:15",
        ],
        "dataplane-ipv6-address.yaml": ["invalidValue 2:19", "invalidValue 3:13"],
        "dataplane-sockets-with-xdp.yaml": ["invalidValue 3:18"],
        "dataplane-values.yaml": ["invalidValue 2:14", "invalidValue 3:18", "invalidValue 4:13"],
        "deep-nesting.yaml": ["malformedYAML 1:13"],
        "duplicate-id-and-port.yaml": ["duplicateFunctionID 5:9", "duplicateTriggerPort 6:19"],
        "duplicate-key.yaml": ["malformedYAML 2:5"],
        "empty-functions.yaml": ["invalidValue 1:12"],
        "empty.yaml": ["emptyDocument 1:1"],
        "functions-not-list.yaml": ["wrongType 2:3"],
        "handler-directory.yaml": ["handlerUnusable 4:19"],
        "handler-missing.yaml": ["handlerUnusable 4:19"],
        "handler-not-executable.yaml": ["handlerUnusable 4:19"],
        "integer-overflow.yaml": ["invalidValue 3:19"],
        "invalid-utf8.yaml": ["invalidEncoding 2:12"],
        "list-root.yaml": ["wrongType 1:1"],
        "missing-required.yaml": ["missingKey 2:5", "missingKey 2:5", "missingKey 2:5"],
        "out-of-range.yaml": ["invalidValue 3:19", "invalidValue 4:22", "invalidValue 5:17"],
        "python-missing.yaml": ["handlerUnusable 2:11"],
        "python-relative.yaml": ["invalidValue 2:11"],
        "scalar-root.yaml": ["wrongType 1:1"],
        "serving-rules.yaml": [
            "invalidValue 2:19", "invalidValue 3:22", "invalidValue 4:17", "invalidValue 5:14", "invalidValue 6:19",
            "invalidValue 18:20", "invalidValue 19:5", "invalidValue 20:5", "wrongType 20:15", "invalidValue 24:15",
            "invalidValue 25:15", "invalidValue 26:21", "invalidValue 27:22",
        ],
        "tab-indent.yaml": ["malformedYAML 3:1"],
        "truncated.yaml": ["malformedYAML 7:1"],
        "two-documents.yaml": ["malformedYAML 2:1"],
        "unclosed-quote.yaml": ["malformedYAML 4:1"],
        "undefined-alias.yaml": ["malformedYAML 3:19"],
        "unknown-keys.yaml": ["unknownKey 2:3", "unknownKey 7:5"],
        "wrong-section-types.yaml": ["wrongType 1:15", "wrongType 3:5"],
        "wrong-types.yaml": ["wrongType 3:19", "wrongType 4:22", "wrongType 5:17", "wrongType 6:19"],
    ]

    @Test(arguments: corpus.keys.sorted())
    func badCorpusFile(_ name: String) throws {
        let path = Fixtures.bad(name)
        let error = #expect(throws: ConfigError.self) { try ConfigLoader.load(path: path) }
        guard case .invalid(_, let diagnostics) = error else {
            Issue.record("expected .invalid, got \(String(describing: error))")
            return
        }
        let expected = try #require(Self.corpus[name])
        let found = diagnostics.map { diagnostic in
            // Binary content's position depends on random bytes: only its kind is fixed.
            name == "binary.yaml" ? "\(diagnostic.kind)" : "\(diagnostic.kind) \(diagnostic.line):\(diagnostic.column)"
        }
        #expect(found == expected, "\(diagnostics.map(\.description).joined(separator: "\n"))")
        #expect(diagnostics.allSatisfy { $0.file == path && $0.line >= 1 && $0.column >= 1 })
    }

    @Test func everyCorpusFileHasAnExpectation() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Fixtures.bad("")).filter { !$0.hasPrefix(".") }
        #expect(Set(files) == Set(Self.corpus.keys))
    }

    @Test func binaryContentIsPositioned() throws {
        let bytes = Array("functions:\n  - id: a\n".utf8) + [0x41, 0x00, 0x42]
        let error = #expect(throws: ConfigError.self) {
            try ConfigLoader.parse(bytes: bytes, file: "mem.yaml", baseDirectory: "/")
        }
        #expect(
            error
                == .invalid(
                    path: "mem.yaml",
                    diagnostics: [
                        ConfigDiagnostic(
                            kind: .invalidEncoding, file: "mem.yaml", line: 3, column: 2, keyPath: "",
                            expected: "UTF-8 text", found: "a NUL byte (binary data)")
                    ]))
    }

    @Test func hugeFileIsRefusedUnparsed() throws {
        let dir = TemporaryDirectory()
        let file = dir.write("huge.yaml", "functions:\n" + String(repeating: "# padding\n", count: 120_000))
        let error = #expect(throws: ConfigError.self) { try ConfigLoader.load(path: file) }
        #expect(error == .tooLarge(path: file, size: 1_200_011, limit: ConfigLoader.maximumFileSize))
    }

    @Test func endlessDeviceIsRefusedAfterTheLimit() throws {
        let error = #expect(throws: ConfigError.self) { try ConfigLoader.load(path: "/dev/zero") }
        guard case .tooLarge(let path, _, let limit) = error else {
            Issue.record("expected .tooLarge, got \(String(describing: error))")
            return
        }
        #expect(path == "/dev/zero")
        #expect(limit == ConfigLoader.maximumFileSize)
    }

    @Test func missingFileAndDirectoryAreUnreadable() throws {
        let dir = TemporaryDirectory()
        #expect(throws: ConfigError.unreadable(path: "\(dir.path)/nope.yaml", reason: "No such file or directory")) {
            try ConfigLoader.load(path: "\(dir.path)/nope.yaml")
        }
        #expect(throws: ConfigError.unreadable(path: dir.path, reason: "it is a directory")) {
            try ConfigLoader.load(path: dir.path)
        }
    }

    @Test func relativeHandlerPathsResolveAgainstTheConfigFolder() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: "\(dir.path)/sub", withIntermediateDirectories: true)
        dir.write("sub/h.py", "")
        let file = dir.write("c.yaml", "functions:\n  - {id: a, trigger_port: 80, handler_path: ./sub/../sub/h.py}\n")
        #expect(try ConfigLoader.load(path: file).functions[0].handlerPath == "\(dir.path)/sub/h.py")
    }

    /// `otlp_endpoint`: the base URL of an OTLP/HTTP receiver; traces go to its `v1/traces`.
    /// Anything else is refused naming the key and the value.
    @Test func otlpEndpoint() throws {
        let dir = TemporaryDirectory()
        dir.write("h.py", "")
        let accepted = [
            "http://127.0.0.1:4318": "http://127.0.0.1:4318/v1/traces",
            "https://collector.example.com": "https://collector.example.com/v1/traces",
            "HTTP://[::1]:4318/otlp/": "http://[::1]:4318/otlp/v1/traces",
            "http://localhost:4318/base": "http://localhost:4318/base/v1/traces",
        ]
        for (text, traces) in accepted {
            let file = dir.write(
                "c.yaml",
                "orchestrator:\n  otlp_endpoint: \"\(text)\"\nfunctions:\n  - {id: a, trigger_port: 80, handler_path: h.py}\n"
            )
            #expect(try ConfigLoader.load(path: file).orchestrator.otlpEndpoint?.tracesURL == traces, "\(text)")
        }
        let refused = [
            "127.0.0.1:4318", "grpc://127.0.0.1:4317", "http://", "http://:4318", "http://host:0", "http://host:65536",
            "http://host:43a", "http://user@host:4318", "http://host:4318/v1?x=1", "http://host:4318/#top",
            "http://ho st:4318", "http://[::1:4318", "http://[::1]x",
        ]
        for text in refused {
            let file = dir.write(
                "bad.yaml",
                "orchestrator:\n  otlp_endpoint: \"\(text)\"\nfunctions:\n  - {id: a, trigger_port: 80, handler_path: h.py}\n"
            )
            let error = #expect(throws: ConfigError.self, "\(text)") { try ConfigLoader.load(path: file) }
            let message = String(describing: error)
            #expect(
                message.contains("orchestrator.otlp_endpoint: expected an http:// or https:// URL")
                    && message.contains("found \"\(text)\""), "\(message)")
        }
        let untraced = dir.write("c.yaml", "functions:\n  - {id: a, trigger_port: 80, handler_path: h.py}\n")
        #expect(try ConfigLoader.load(path: untraced).orchestrator.otlpEndpoint == nil, "off by default")
    }

    @Test func environmentMayBeEmpty() throws {
        let dir = TemporaryDirectory()
        dir.write("h.py", "")
        let file = dir.write(
            "c.yaml", "functions:\n  - id: a\n    trigger_port: 80\n    handler_path: h.py\n    environment:\n")
        #expect(try ConfigLoader.load(path: file).functions[0].environment.isEmpty)
    }
}
