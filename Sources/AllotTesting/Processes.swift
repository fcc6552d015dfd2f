public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A free TCP port on 127.0.0.1, found by binding port 0.
public func freeLoopbackPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// The folder holding the package's built executables (next to the test bundle).
public var builtExecutablesFolder: URL {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    // On Linux the test runner is `.build/<triple>/debug/allotPackageTests.xctest`; elsewhere it may sit deeper.
    for _ in 0..<4 where !FileManager.default.fileExists(atPath: dir.appendingPathComponent("allotd").path) {
        dir.deleteLastPathComponent()
    }
    return dir
}

/// A child process of a test, its output in a file, killed when the test is done with it.
public final class TestProcess: @unchecked Sendable {
    public let process = Process()
    public let logURL: URL
    public let name: String

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], name: String? = nil) throws {
        self.name = name ?? executable
        self.logURL = FileManager.default.temporaryDirectory.appendingPathComponent("allot-\(self.name)-\(UUID().uuidString.prefix(8)).log")
        _ = FileManager.default.createFile(atPath: self.logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: self.logURL)
        self.process.executableURL = builtExecutablesFolder.appendingPathComponent(executable)
        self.process.arguments = arguments
        self.process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        self.process.standardOutput = log
        self.process.standardError = log
        try self.process.run()
    }

    public var output: String { (try? String(contentsOf: self.logURL, encoding: .utf8)) ?? "" }

    /// SIGKILL, as a crash would be.
    public func crash() {
        kill(self.process.processIdentifier, SIGKILL)
        _ = reap(self.process)
    }

    /// SIGTERM, then SIGKILL after 10 s. True when the process was gone, or went on SIGTERM.
    @discardableResult
    public func stop() -> Bool {
        guard self.process.isRunning else { return true }
        self.process.terminate()
        if reap(self.process, within: 10) == nil {
            kill(self.process.processIdentifier, SIGKILL)
            _ = reap(self.process)
            return false
        }
        return true
    }

    deinit { self.stop() }
}

/// Runs a built executable to completion; returns its exit status and output.
public func runBuilt(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
    try runToCompletion(
        builtExecutablesFolder.appendingPathComponent(executable).path, arguments,
        environment: ProcessInfo.processInfo.environment.merging(environment) { _, new in new })
}

/// Runs a program to completion (killed after `seconds`) and returns its exit status and output. The output goes
/// to a file, not a pipe: a grandchild that inherits a pipe (a browser's helpers) would hold it open after the
/// program exits, and a read to its end would never return.
public func runToCompletion(
    _ path: String, _ arguments: [String], environment: [String: String]? = nil, stdin: Data? = nil, within seconds: Double = 120
) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let logURL = FileManager.default.temporaryDirectory.appendingPathComponent("allot-run-\(UUID().uuidString).log")
    _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: logURL) }
    let log = try FileHandle(forWritingTo: logURL)
    defer { try? log.close() }
    process.standardOutput = log
    process.standardError = log
    let input = Pipe()
    if stdin != nil { process.standardInput = input }
    try process.run()
    if let stdin {
        input.fileHandleForWriting.write(stdin)
        try input.fileHandleForWriting.close()
    }
    var status = reap(process, within: seconds)
    if status == nil {
        kill(process.processIdentifier, SIGKILL)
        status = reap(process)
    }
    return (status ?? -1, (try? String(contentsOf: logURL, encoding: .utf8)) ?? "")
}

/// Runs blocking work (a child process and the wait for it) on a thread of its own, so that a server the test
/// runs in-process, on the concurrency pool, can still answer meanwhile: with two cores the pool has two threads,
/// and a test blocking one while another test blocks the other starves the server its child is talking to.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Waits for a child to exit and returns its status (128 + signal when killed). `Process.waitUntilExit` can
/// miss the exit of a child when called from a concurrency thread on Linux, so this also reaps it directly.
@discardableResult
public func reap(_ process: Process, within seconds: Double = 60) -> Int32? {
    let deadline = Date().addingTimeInterval(seconds)
    let pid = process.processIdentifier
    while Date() < deadline {
        if !process.isRunning { return process.terminationStatus }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
        if r == -1 && errno == ECHILD && !process.isRunning { return process.terminationStatus }
        usleep(10_000)
    }
    return nil
}
