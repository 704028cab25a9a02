// swift-tools-version: 6.1
// The Swift SDK function's peer in scripts/bench-gateway.sh: a plain Hummingbird 2 server
// answering what the benchmark's other servers answer. Its own package so that the main
// package's dependency set stays lean; the script builds it in release mode into
// .build-bench/swift-peer (`swift build -c release --package-path bench/swift-peer
// --scratch-path .build-bench/swift-peer`).
import PackageDescription

let package = Package(
    name: "swift-peer",
    platforms: [.macOS(.v15)],
    dependencies: [
        // No traits: neither swift-configuration nor full Foundation is needed to answer JSON.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", exact: "2.28.1", traits: []),
    ],
    targets: [
        .executableTarget(
            name: "swift-peer",
            dependencies: [.product(name: "Hummingbird", package: "hummingbird")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
