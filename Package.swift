// swift-tools-version:6.1
import PackageDescription

// Every target: explicit existentials, so protocol-typed values read as such at the call site.
let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "allot",
    platforms: [.macOS(.v15)],
    products: [
        // The pure core, for the benchmarks package (Benchmarks/) and for tools that replay traces.
        .library(name: "AllotCore", targets: ["AllotCore"]),
        .executable(name: "allotd", targets: ["allotd"]),
        .executable(name: "allot-agent", targets: ["allot-agent"]),
        .executable(name: "allot", targets: ["allot"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        // Pure: value types, placement, lifecycle rules. Foundation only; no I/O, no clock, no randomness.
        .target(name: "AllotCore", swiftSettings: strict),
        // File contracts: job specs (YAML/JSON), Policies/, durations.
        .target(
            name: "AllotFormats",
            dependencies: ["AllotCore", .product(name: "Yams", package: "Yams")],
            swiftSettings: strict),
        // PostgreSQL: migrations and one store type per table family.
        .target(
            name: "AllotStore",
            dependencies: [
                "AllotCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // What the server and the agent share over HTTP: JSON bodies, the error shape, bearer tokens, a client.
        .target(
            name: "AllotHTTP",
            dependencies: [
                "AllotCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict),
        // allotd as a library: HTTP API, scheduler loop, dispatcher, node monitor.
        .target(
            name: "AllotServer",
            dependencies: [
                "AllotCore", "AllotFormats", "AllotStore", "AllotHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // allot-agent as a library: GPU discovery, process supervision, its HTTP API, heartbeats.
        .target(
            name: "AllotAgent",
            dependencies: [
                "AllotCore", "AllotHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // The allot CLI as a library, so its commands are testable.
        .target(
            name: "AllotCLI",
            dependencies: [
                "AllotCore", "AllotFormats", "AllotHTTP",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        // Shared test support: a PostgreSQL database per test, builders, seeded random clusters.
        .target(
            name: "AllotTesting",
            dependencies: [
                "AllotCore", "AllotStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "allotd",
            dependencies: [
                "AllotServer", "AllotStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "allot-agent",
            dependencies: ["AllotAgent", "AllotFormats", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        .executableTarget(name: "allot", dependencies: ["AllotCLI"], swiftSettings: strict),
        .testTarget(name: "AllotCoreTests", dependencies: ["AllotCore", "AllotTesting"], swiftSettings: strict),
        .testTarget(name: "AllotFormatsTests", dependencies: ["AllotFormats"], swiftSettings: strict),
        .testTarget(name: "AllotStoreTests", dependencies: ["AllotStore", "AllotTesting"], swiftSettings: strict),
        .testTarget(
            name: "AllotServerTests",
            dependencies: [
                "AllotServer", "AllotStore", "AllotTesting", "AllotAgent",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: strict),
        .testTarget(name: "AllotAgentTests", dependencies: ["AllotAgent"], resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(name: "AllotCLITests", dependencies: ["AllotCLI", "AllotTesting"], swiftSettings: strict),
    ]
)
