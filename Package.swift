// swift-tools-version:6.1
import PackageDescription

// Every target: explicit existentials, imports that say what they bring (an import is internal unless marked
// `public import`, and a member is visible only where its module is imported), so an undeclared dependency or
// a leaked type fails the build.
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

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
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // Already in the graph through PostgresNIO: HMAC for requests allotd signs to its agents.
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        // Pure: value types, placement, lifecycles as state machines, wire types. Foundation only; no I/O, no
        // clock, no randomness.
        .target(name: "AllotCore", swiftSettings: strict),
        // File contracts: job specs (YAML/JSON), Policies/, #SBATCH scripts, durations, sizes, addresses.
        .target(
            name: "AllotFormats",
            dependencies: ["AllotCore", .product(name: "Yams", package: "Yams")],
            swiftSettings: strict),
        // PostgreSQL: migrations, one writer per table family, the lifecycles applied in transactions, the
        // scheduling cycle. PostgresNIO stays inside: the API speaks the core's types.
        .target(
            name: "AllotStore",
            dependencies: [
                "AllotCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        // JSON over HTTP, the calling side: the CLI, the dispatcher and the agent's heartbeats; and the signatures
        // allotd puts on its requests to agents.
        .target(
            name: "AllotHTTPClient",
            dependencies: [
                "AllotCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ],
            swiftSettings: strict),
        // JSON over HTTP, the answering side (allotd and the agent): the error shape, bodies, bearer tokens.
        .target(
            name: "AllotHTTPServer",
            dependencies: [
                "AllotCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ],
            swiftSettings: strict),
        // ArgumentParser's types for Allot's options (addresses, durations, sizes, strategies) and token files.
        .target(
            name: "AllotCommandLine",
            dependencies: [
                "AllotCore", "AllotFormats", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // allotd as a library: HTTP API (routes by resource, access and errors as middleware), scheduler loop,
        // dispatcher, node monitor, metrics.
        .target(
            name: "AllotServer",
            dependencies: [
                "AllotCore", "AllotFormats", "AllotStore", "AllotHTTPClient", "AllotHTTPServer", "AllotCommandLine",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict),
        // posix_spawn's close-from, which Swift's Glibc module cannot reach (see its header).
        .target(name: "CAllotSpawn"),
        // allot-agent as a library: GPU discovery, process supervision (ranks in OCI containers), its HTTP API, heartbeats.
        .target(
            name: "AllotAgent",
            dependencies: [
                "AllotCore", "AllotHTTPClient", "AllotHTTPServer", "CAllotSpawn",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict),
        // The allot CLI as a library, so its commands are testable. It links no server.
        .target(
            name: "AllotCLI",
            dependencies: [
                "AllotCore", "AllotFormats", "AllotHTTPClient", "AllotCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        // Test support without a database: builders, seeded random clusters, child processes.
        .target(name: "AllotTesting", dependencies: ["AllotCore"], swiftSettings: strict),
        // Test support with one: a fresh, migrated PostgreSQL database per test.
        .target(
            name: "AllotDatabaseTesting",
            dependencies: [
                "AllotStore", "AllotTesting", .product(name: "Logging", package: "swift-log"), .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "allotd",
            dependencies: [
                "AllotCore", "AllotFormats", "AllotServer", "AllotStore", "AllotCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "allot-agent",
            dependencies: [
                "AllotAgent", "AllotCore", "AllotFormats", "AllotCommandLine", "AllotHTTPClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .executableTarget(name: "allot", dependencies: ["AllotCLI"], swiftSettings: strict),
        .testTarget(name: "AllotCoreTests", dependencies: ["AllotCore", "AllotTesting"], swiftSettings: strict),
        .testTarget(name: "AllotFormatsTests", dependencies: ["AllotCore", "AllotFormats", "AllotTesting"], swiftSettings: strict),
        .testTarget(
            name: "AllotStoreTests",
            dependencies: [
                "AllotCore", "AllotStore", "AllotTesting", "AllotDatabaseTesting", .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "AllotServerTests",
            dependencies: [
                "AllotCore", "AllotServer", "AllotStore", "AllotTesting", "AllotDatabaseTesting", "AllotAgent", "AllotHTTPClient",
                "AllotHTTPServer",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "AllotAgentTests",
            dependencies: ["AllotAgent", "AllotCore", "AllotHTTPServer", .product(name: "HummingbirdTesting", package: "hummingbird")],
            resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(name: "AllotCLITests", dependencies: ["AllotCLI", "AllotCore", "AllotTesting"], swiftSettings: strict),
    ]
)
