// swift-tools-version:6.1
import PackageDescription

// A package of its own, so the benchmarks never slow the main build or CI (as postgres-nio keeps its own).
let package = Package(
    name: "allot-benchmarks",
    platforms: [.macOS(.v15)],
    // Named, so the product resolves whatever the checkout folder is called.
    dependencies: [.package(name: "allot", path: "../")],
    targets: [
        .executableTarget(
            name: "allot-bench",
            dependencies: [.product(name: "AllotCore", package: "allot")],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")])
    ]
)
