// swift-tools-version: 6.1
// libFuzzer targets for what a handler or an operator hands the orchestrator: configuration
// files, ring words and records, invocation messages. A package of its own, so the normal
// `swift build` / `swift test` of the root package never sees the fuzzer flags; `scripts/fuzz.sh`
// builds it with `-sanitize=fuzzer,address` into `.build-fuzz` and runs each target on its corpus
// under `Corpus/<target>/`.
import PackageDescription

// Each target has its own `main` (`fuzz_<target>_main`, see its source), so no top-level code.
let settings: [SwiftSetting] = [
    .unsafeFlags(["-parse-as-library"]),
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// libFuzzer's runtime, for the three programs only: the code under test is instrumented by the
// flags scripts/fuzz.sh passes to every module (address sanitizer and coverage, no `main`).
let linking: [LinkerSetting] = [.unsafeFlags(["-sanitize=fuzzer"])]

let package = Package(
    name: "aetherless-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "aetherless", path: "../")
    ],
    targets: [
        // The declaration of libFuzzer's driver, which each target's `main` calls.
        .target(name: "CFuzzerDriver"),
        // Arbitrary bytes as a configuration file: ConfigLoader.parse (UTF-8 check, YAML, schema).
        .executableTarget(
            name: "fuzz-config",
            dependencies: ["CFuzzerDriver", .product(name: "AetherCore", package: "aetherless")],
            swiftSettings: settings,
            linkerSettings: linking
        ),
        // Arbitrary head, tail and poisoned words and data bytes of a ring, as a hostile handler
        // writes them, against RingConsumer.tryRead and RingProducer.tryWrite.
        .executableTarget(
            name: "fuzz-ring",
            dependencies: ["CFuzzerDriver", .product(name: "AetherIPC", package: "aetherless")],
            swiftSettings: settings,
            linkerSettings: linking
        ),
        // Arbitrary bytes as a request and as a response message (docs/handler-protocol.md).
        .executableTarget(
            name: "fuzz-invocation",
            dependencies: ["CFuzzerDriver", .product(name: "AetherIPC", package: "aetherless")],
            swiftSettings: settings,
            linkerSettings: linking
        ),
    ]
)
