public import Foundation

/// A job as submitted (SPEC §3), after parsing and validation: every size in base units.
/// The same shape travels from the CLI to the server and is printed by `allot submit --dry-run`.
public struct JobSpec: Hashable, Codable, Sendable {
    public var name: String
    public var org: String?
    public var project: String?
    public var kind: JobKind
    /// Nil: the default pool (Policies/ `defaults.pool`, else the only pool the organisation has an allocation in),
    /// chosen at submission, as Slurm's default partition is.
    public var pool: String?
    /// Acceptable GPU models; empty accepts any model of the pool.
    public var gpuModel: [String]
    public var nodes: Int
    public var gpusPerNode: Int
    /// A fraction of one GPU (1…999 thousandths) for an inference replica; nil for whole GPUs.
    public var gpuMilli: Int?
    /// A MIG profile (`1g.18gb`): each node's `gpusPerNode` are MIG devices of that profile.
    public var migProfile: String?
    /// The least memory of each GPU (or MIG device), MiB (`gpuMemory: 80G`).
    public var gpuMemoryMiB: Int?
    public var cpuMilliPerNode: Int
    public var memoryMiBPerNode: Int
    public var priorityClass: String?
    public var timeLimitSeconds: Int64?
    public var command: String
    public var env: [String: String]
    public var workingDir: String?
    public var maxAttempts: Int
    /// Whole nodes: every GPU, CPU and byte of memory of each (Slurm's `--exclusive`).
    public var exclusive: Bool
    /// All of each node's memory (Slurm's `--mem=0`).
    public var wholeNodeMemory: Bool
    /// The OCI image the ranks' root filesystem comes from (`NAME[:TAG]`, in the nodes' image folder).
    public var image: String?
    /// Sent ahead of the end: `signal.secondsBefore` before the time limit and before a drain or reclaim stop.
    public var signal: JobSignal?
    /// The shortest time limit the job accepts (Slurm's `--time-min`): backfill may start it with a limit cut
    /// down to as little as this where the full limit does not fit.
    public var timeMinSeconds: Int64?
    /// Set for a batch script: what its ranks' `SLURM_*` environment and output files come from.
    public var slurm: SlurmOptions?
    /// One job per index (`--array`), at most `limit` running at once.
    public var array: JobArray?
    /// What must happen to other jobs before this one may start (`--dependency`).
    public var dependency: JobDependency?
    /// Submitted held (`--hold`): it waits until released.
    public var hold: Bool?
    /// It may not start before this time (`--begin`).
    public var beginAt: Date?
    /// It checkpoints and may be moved: defragmentation may stop it (SIGTERM, then its grace) and requeue it,
    /// keeping its submit time, to make room for work that scattered capacity keeps waiting.
    public var movable: Bool?

    public init(
        name: String, org: String? = nil, project: String? = nil, kind: JobKind = .training, pool: String?,
        gpuModel: [String] = [], nodes: Int = 1, gpusPerNode: Int = 0, gpuMilli: Int? = nil,
        cpuMilliPerNode: Int = 0, memoryMiBPerNode: Int = 0, priorityClass: String? = nil,
        timeLimitSeconds: Int64? = nil, command: String, env: [String: String] = [:], workingDir: String? = nil,
        maxAttempts: Int = 3, exclusive: Bool = false, wholeNodeMemory: Bool = false, image: String? = nil,
        signal: JobSignal? = nil, timeMinSeconds: Int64? = nil, slurm: SlurmOptions? = nil, array: JobArray? = nil,
        dependency: JobDependency? = nil, hold: Bool? = nil, beginAt: Date? = nil, movable: Bool? = nil, migProfile: String? = nil,
        gpuMemoryMiB: Int? = nil
    ) {
        self.migProfile = migProfile
        self.gpuMemoryMiB = gpuMemoryMiB
        self.movable = movable
        self.beginAt = beginAt
        self.array = array
        self.dependency = dependency
        self.hold = hold
        self.image = image
        self.signal = signal
        self.timeMinSeconds = timeMinSeconds
        self.slurm = slurm
        self.name = name
        self.org = org
        self.project = project
        self.kind = kind
        self.pool = pool
        self.gpuModel = gpuModel
        self.nodes = nodes
        self.gpusPerNode = gpusPerNode
        self.gpuMilli = gpuMilli
        self.cpuMilliPerNode = cpuMilliPerNode
        self.memoryMiBPerNode = memoryMiBPerNode
        self.priorityClass = priorityClass
        self.timeLimitSeconds = timeLimitSeconds
        self.command = command
        self.env = env
        self.workingDir = workingDir
        self.maxAttempts = maxAttempts
        self.exclusive = exclusive
        self.wholeNodeMemory = wholeNodeMemory
    }

    /// The job as placement asks whether it could ever fit (at submission): its pool, models, nodes, per-node request,
    /// MIG profile and GPU memory.
    public var pendingShape: PendingJob {
        var job = PendingJob(id: 0, pool: self.pool ?? "", gpuModels: self.gpuModel, nodes: self.nodes, perNode: self.nodeRequest)
        job.migProfile = self.migProfile
        job.gpuMemoryMiB = self.gpuMemoryMiB
        return job
    }

    /// What one node of this job asks of the placement core.
    public var nodeRequest: NodeRequest {
        NodeRequest(
            gpus: self.gpusPerNode, fractionMilli: self.gpuMilli, cpuMilli: self.cpuMilliPerNode, memoryMiB: self.memoryMiBPerNode,
            exclusive: self.exclusive, allMemory: self.wholeNodeMemory)
    }
}

/// Quotes one word for `/bin/sh` unless it needs none: how commands are shown and joined from argument lists.
public enum ShellWord {
    public static func quote(_ s: String) -> String {
        let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:@%+,")
        if !s.isEmpty && s.allSatisfy({ safe.contains($0) }) { return s }
        var quoted = "'"
        for c in s { quoted += c == "'" ? "'\\''" : String(c) }
        return quoted + "'"
    }
}
