// swift-tools-version: 6.1
import PackageDescription

let strictSwift6: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "aetherless",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "aether", targets: ["aether"]),
        .executable(name: "aether-sandbox", targets: ["aether-sandbox"]),
        .library(name: "AetherCore", targets: ["AetherCore"]),
        .library(name: "AetherIPC", targets: ["AetherIPC"]),
        .library(name: "AetherHandler", targets: ["AetherHandler"]),
        .executable(name: "hello-swift", targets: ["hello-swift"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // Traces over OTLP/HTTP only: the gRPC exporter's trait stays off (it would add grpc-swift to the build).
        .package(url: "https://github.com/swift-otel/swift-otel.git", exact: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
    ],
    targets: [
        // POSIX plumbing every other module shares: SystemCallFailure, the one system call helper
        // (errno capture, EINTR retry), OwnedDescriptor, small file and socket chores, threads.
        .target(
            name: "AetherSystem",
            dependencies: ["CAetherSystem"],
            swiftSettings: strictSwift6
        ),
        // Config and validation, newtypes, the lifecycle state machine, their errors. Ring-derived
        // limits (max_body_bytes) come from AetherIPC's layout.
        .target(
            name: "AetherCore",
            dependencies: ["AetherIPC", "AetherSystem", .product(name: "Yams", package: "Yams")],
            swiftSettings: strictSwift6
        ),
        // futex and CRC-32 kernels the ring needs from C; -O2 even in debug builds, since the CRC runs
        // over every byte of every test message.
        .target(name: "CAetherIPC", cSettings: [.unsafeFlags(["-O2"])]),
        // Shared-memory regions, the SPSC ring (docs/shm-layout.md), invocation messages and the
        // handler control line. A leaf of our own code: the Swift handler SDK links only this.
        .target(
            name: "AetherIPC",
            dependencies: [
                "AetherSystem", "CAetherSystem", "CAetherIPC", .product(name: "Atomics", package: "swift-atomics"),
            ],
            swiftSettings: strictSwift6
        ),
        // GNU-only system calls (pipe2, thread names, pidfd, subreaper).
        .target(name: "CAetherSystem"),
        // Puts one handler instance (or a criu restore service) into its confinement and execs
        // it: C, since it runs between clone and exec of every instance (see its main.c).
        .executableTarget(name: "aether-sandbox", dependencies: ["CAetherSystem"]),
        // libbpf (Debian's libbpf-dev) and the map layouts shared with the BPF programs.
        .systemLibrary(name: "CLibBPF", pkgConfig: "libbpf", providers: [.apt(["libbpf-dev"])]),
        // Compiles a target's bpf/*.bpf.c with clang -target bpf and embeds the objects.
        .plugin(name: "BPFCompiler", capability: .buildTool(), dependencies: ["bpf-embed"]),
        .executableTarget(name: "bpf-embed", dependencies: ["AetherSystem"], swiftSettings: strictSwift6),
        // The eBPF data plane: sk_lookup dispatch of trigger ports to sockets, XDP counters.
        // AetherCore for the configuration's XDP mode.
        .target(
            name: "AetherNet",
            dependencies: ["AetherCore", "AetherSystem", "CAetherSystem", "CLibBPF"],
            exclude: ["bpf"],
            swiftSettings: strictSwift6,
            plugins: ["BPFCompiler"]
        ),
        // The orchestrator behind `aether up`: handler processes, instance pools, the HTTP
        // gateway on trigger ports and the control API.
        .target(
            name: "AetherOrchestrator",
            dependencies: [
                "AetherCore", "AetherIPC", "AetherNet", "AetherSystem", "CAetherSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strictSwift6
        ),
        // The Swift handler SDK: a function written in Swift, served over the rings.
        .target(
            name: "AetherHandler",
            dependencies: ["AetherIPC", "AetherSystem"],
            swiftSettings: strictSwift6
        ),
        // examples/hello-swift: the Swift SDK example function.
        .executableTarget(
            name: "hello-swift",
            dependencies: ["AetherHandler"],
            path: "examples/hello-swift",
            swiftSettings: strictSwift6
        ),
        // The `aether` command line.
        .executableTarget(
            name: "aether",
            dependencies: [
                "AetherCore", "AetherOrchestrator", "AetherNet", "AetherSystem", "CAetherSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift6
        ),
        .testTarget(
            name: "AetherCoreTests",
            dependencies: ["AetherCore"],
            exclude: ["Fixtures"],
            swiftSettings: strictSwift6
        ),
        // A ring peer in its own process, for cross-process tests and benchmarks.
        .executableTarget(
            name: "aether-ipc-peer",
            dependencies: [
                "AetherIPC", "AetherSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift6
        ),
        // Ring vs Unix socket vs TCP vs memcpy, in one run (scripts/bench-ipc.sh).
        .executableTarget(
            name: "aether-ipc-bench",
            dependencies: [
                "AetherIPC", "AetherSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift6
        ),
        // eBPF dispatch vs direct binding vs a userspace relay (scripts/bench-dataplane.sh).
        .executableTarget(
            name: "aether-net-bench",
            dependencies: [
                "AetherNet", "AetherSystem", "CAetherSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift6
        ),
        .testTarget(
            name: "AetherSystemTests",
            dependencies: ["AetherSystem"],
            swiftSettings: strictSwift6
        ),
        .testTarget(
            name: "AetherIPCTests",
            dependencies: ["AetherIPC", "AetherSystem"],
            swiftSettings: strictSwift6
        ),
        // Runs the built `aether` binary as a user would.
        // The orchestrator's parts with real processes: CRIU checkpoint and restore (root).
        .testTarget(
            name: "AetherOrchestratorTests",
            dependencies: ["AetherOrchestrator", "AetherCore"],
            swiftSettings: strictSwift6
        ),
        // The data plane loaded into the kernel (root; run in a private network namespace).
        .testTarget(
            name: "AetherNetTests",
            dependencies: ["AetherNet", "AetherCore", "AetherSystem", "CLibBPF"],
            exclude: ["bpf"],
            swiftSettings: strictSwift6,
            plugins: ["BPFCompiler"]
        ),
        // Runs the built `aether` binary as a user would; `aether top`'s model as pure logic.
        .testTarget(
            name: "AetherCLITests",
            dependencies: ["AetherCore", "AetherOrchestrator", "aether"],
            swiftSettings: strictSwift6
        ),
    ]
)
