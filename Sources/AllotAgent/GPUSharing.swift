public import AllotCore
public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Holds shared GPUs' ranks to their shares with NVIDIA MPS: one control daemon per GPU with shares on it,
/// started before its first shared rank and told to quit after its last, and each rank limited by the client
/// variables MPS reads (`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`, `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`). A node without
/// `nvidia-cuda-mps-control`, or with simulated GPUs, keeps shares as bookkeeping only and says so (`soft`).
///
/// MPS serves one Linux user per GPU at a time: the clients of another account wait for the first one's server
/// to go. Ranks of different organisations run as different accounts, which is one more reason pools keep
/// organisations off each other's shared GPUs (`isolateSharedGPUs`).
public struct GPUSharingControl: Sendable {
    /// `nvidia-cuda-mps-control`, or nil where the node has none.
    public let control: String?
    /// Where each GPU's daemon keeps its pipes and logs (`ROOT/UUID/pipe`, `ROOT/UUID/log`).
    public let root: URL

    public init(control: String?, root: URL) {
        self.control = control
        self.root = root
    }

    /// `ALLOT_MPS_CONTROL`, else `nvidia-cuda-mps-control` on PATH; none for simulated GPUs.
    public static func find(simulated: Bool, root: URL, environment: [String: String] = ProcessInfo.processInfo.environment) -> GPUSharingControl {
        guard !simulated else { return GPUSharingControl(control: nil, root: root) }
        if let explicit = environment["ALLOT_MPS_CONTROL"], !explicit.isEmpty {
            return GPUSharingControl(control: FileManager.default.isExecutableFile(atPath: explicit) ? explicit : nil, root: root)
        }
        let found = (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map { "\($0)/nvidia-cuda-mps-control" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
        return GPUSharingControl(control: found, root: root)
    }

    public var sharing: GPUSharing { self.control == nil ? .soft : .mps }

    public func pipeDirectory(gpu uuid: String) -> URL { self.root.appendingPathComponent("\(Self.folderName(uuid))/pipe") }
    func logDirectory(gpu uuid: String) -> URL { self.root.appendingPathComponent("\(Self.folderName(uuid))/log") }

    /// A UUID as a folder name: letters, digits and '-' only (a legacy MIG name has '/').
    static func folderName(_ uuid: String) -> String {
        String(uuid.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" })
    }

    /// The daemon's environment: it serves only this GPU.
    func daemonEnvironment(gpu uuid: String) -> [String: String] {
        [
            "CUDA_VISIBLE_DEVICES": uuid, "CUDA_MPS_PIPE_DIRECTORY": self.pipeDirectory(gpu: uuid).path,
            "CUDA_MPS_LOG_DIRECTORY": self.logDirectory(gpu: uuid).path, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    }

    /// Starts the GPU's control daemon (`-d` forks it away and returns). Its folders are world-searchable: ranks
    /// run as their own accounts and must reach the pipes.
    /// A daemon left running (by an agent that crashed, or one still quitting) is used as it is. A daemon that will
    /// not start is the node's trouble, not the job's: the launch is answered 409 and allotd tries again.
    public func start(gpu uuid: String) throws {
        guard let control else { return }
        if self.isRunning(gpu: uuid) { return }
        for dir in [self.pipeDirectory(gpu: uuid), self.logDirectory(gpu: uuid)] {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        }
        try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: self.root.path)
        let status = try Self.run(control, ["-d"], environment: self.daemonEnvironment(gpu: uuid), input: nil)
        if status != 0 { throw SupervisorError.spawnFailed("\(control) -d exited with \(status) for GPU \(uuid): MPS could not start") }
    }

    /// Whether the GPU's daemon runs: the pid file it keeps in its pipe folder names a live process.
    func isRunning(gpu uuid: String) -> Bool {
        let file = self.pipeDirectory(gpu: uuid).appendingPathComponent("nvidia-cuda-mps-control.pid")
        guard let text = try? String(contentsOf: file, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0
        else { return false }
        return kill(pid, 0) == 0
    }

    /// Tells the GPU's daemon to quit (it does once its clients are gone).
    public func stop(gpu uuid: String) {
        guard let control else { return }
        _ = try? Self.run(control, [], environment: self.daemonEnvironment(gpu: uuid), input: "quit\n")
    }

    /// What a rank holding `shareMilli` of a GPU with `gpuMemoryMiB` is told: the daemon's pipe, its share of the
    /// GPU's threads (at least 1%) and of its memory. The rank sees one GPU, so its device ordinal is 0.
    public static func clientEnvironment(shareMilli: Int, gpuMemoryMiB: Int, pipe: String) -> [String: String] {
        var env = [
            "CUDA_MPS_PIPE_DIRECTORY": pipe,
            "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "\(max(1, shareMilli / 10))",
        ]
        if gpuMemoryMiB > 0 { env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = "0=\(max(1, gpuMemoryMiB * shareMilli / 1000))M" }
        return env
    }

    private static func run(_ path: String, _ arguments: [String], environment: [String: String], input: String?) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = environment
        let stdin = Pipe()
        process.standardInput = stdin
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try? stdin.fileHandleForWriting.close()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
