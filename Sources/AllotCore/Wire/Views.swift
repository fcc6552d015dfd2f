public import Foundation

/// The error body of every failed request: `{"error": {"code": …, "message": …, "field": …}}`.
public struct APIErrorBody: Codable, Sendable, Error, CustomStringConvertible {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
        public var field: String?
    }
    public var error: Detail
    public init(code: String, message: String, field: String? = nil) {
        self.error = Detail(code: code, message: message, field: field)
    }
    public var description: String {
        self.error.field.map { "\(self.error.code): \($0): \(self.error.message)" } ?? "\(self.error.code): \(self.error.message)"
    }
}

/// One rank of an attempt: where it ran and on which GPUs.
public struct RankView: Codable, Hashable, Sendable {
    public var rank: Int
    public var node: String
    public var gpus: [Int]
    /// Thousandths of each listed GPU held (1000 for whole GPUs).
    public var gpuMilli: Int
    public var state: RankState
    public var exitCode: Int?
    /// An inference replica's restarts so far (absent when none), and when it may next start when it waits to.
    public var restarts: Int?
    public var restartAt: Date?
    public init(rank: Int, node: String, gpus: [Int], gpuMilli: Int, state: RankState, exitCode: Int?) {
        self.rank = rank
        self.node = node
        self.gpus = gpus
        self.gpuMilli = gpuMilli
        self.state = state
        self.exitCode = exitCode
    }
}

/// One try of a job as users see it.
public struct AttemptView: Codable, Hashable, Sendable {
    public var number: Int
    public var state: AttemptState
    public var reason: String?
    public var exitCode: Int?
    public var placedAt: Date
    public var startedAt: Date?
    public var endedAt: Date?
    public var nodes: [RankView]
    /// Its srun steps (a batch job's), in order.
    public var steps: [StepStatus]?
    public init(
        number: Int, state: AttemptState, reason: String?, exitCode: Int?, placedAt: Date, startedAt: Date?, endedAt: Date?,
        nodes: [RankView], steps: [StepStatus]? = nil
    ) {
        self.steps = steps
        self.number = number
        self.state = state
        self.reason = reason
        self.exitCode = exitCode
        self.placedAt = placedAt
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.nodes = nodes
    }
}

/// A job as `allot jobs` and `allot jobs show` print it (SPEC §5 keys: id, name, org, state, reason, exitCode, attempts).
public struct JobView: Codable, Hashable, Sendable {
    public var id: Int64
    public var name: String
    public var org: String
    public var project: String?
    public var owner: String
    public var kind: JobKind
    public var pool: String
    public var state: JobState
    /// Why it waits, or how it ended.
    public var reason: String?
    /// Why it waits, as a code (`capacity`, `quota`, `budget`, `reserved`, `unschedulable`); nil otherwise.
    public var reasonCode: String?
    public var exitCode: Int?
    public var nodes: Int
    public var gpusPerNode: Int
    public var gpuMilli: Int?
    public var priorityClass: String
    public var priority: Int
    public var timeLimitSeconds: Int64?
    public var maxAttempts: Int
    public var command: String
    public var submittedAt: Date
    public var updatedAt: Date
    public var attempts: [AttemptView]
    /// When a waiting job is expected to start, if running jobs end at their time limits.
    public var estimatedStart: Date?
    /// A task of a job array: the array's id (its first task's), this task's index and the array's `%` limit.
    public var arrayJobID: Int64?
    public var arrayTaskID: Int?
    public var arrayLimit: Int?
    /// What it still waits for (`--dependency`, Slurm's form); nil once met.
    public var dependency: String?
    /// Who holds it (`allot hold`), if anyone.
    public var heldBy: String?
    /// When it ended; `--time-min`; its `--signal`.
    public var endedAt: Date?
    public var timeMinSeconds: Int64?
    public var signal: String?
    /// It may not start before this (`--begin`).
    public var beginAt: Date?
    /// It may be moved by defragmentation (its `movable` flag); nil when not.
    public var movable: Bool?
    /// An inference service that runs with fewer replicas than it asked (some restarting, moving, or left down):
    /// `allot jobs` shows it `degraded`. Its state stays `running` while any replica runs.
    public var degraded: Bool?
    /// Its GPUs are MIG devices of this profile; the least memory it asks of each GPU.
    public var migProfile: String?
    public var gpuMemoryMiB: Int?

    public init(
        id: Int64, name: String, org: String, project: String?, owner: String, kind: JobKind, pool: String, state: JobState,
        reason: String?, exitCode: Int?, nodes: Int, gpusPerNode: Int, gpuMilli: Int?, priorityClass: String, priority: Int,
        timeLimitSeconds: Int64?, maxAttempts: Int, command: String, submittedAt: Date, updatedAt: Date, attempts: [AttemptView],
        estimatedStart: Date? = nil, reasonCode: String? = nil
    ) {
        self.estimatedStart = estimatedStart
        self.reasonCode = reasonCode
        self.id = id
        self.name = name
        self.org = org
        self.project = project
        self.owner = owner
        self.kind = kind
        self.pool = pool
        self.state = state
        self.reason = reason
        self.exitCode = exitCode
        self.nodes = nodes
        self.gpusPerNode = gpusPerNode
        self.gpuMilli = gpuMilli
        self.priorityClass = priorityClass
        self.priority = priority
        self.timeLimitSeconds = timeLimitSeconds
        self.maxAttempts = maxAttempts
        self.command = command
        self.submittedAt = submittedAt
        self.updatedAt = updatedAt
        self.attempts = attempts
    }
}

/// A GPU as an agent reports it and `allot nodes` prints it.
public struct GPUInfo: Codable, Hashable, Sendable {
    public var index: Int
    public var uuid: String
    public var model: String
    public var memoryMiB: Int
    public var nvlinkDomain: Int?
    /// "Enabled"/"Disabled" as nvidia-smi says, nil where the GPU has no MIG.
    public var migMode: String?
    public var health: GPUHealth
    /// Why the agent thinks the GPU is not healthy, when it is not.
    public var healthDetail: String?
    /// PCI bus id as nvidia-smi writes it, to match kernel log lines to GPUs.
    public var pciBusID: String?
    /// The minor number of its device node (`/dev/nvidiaN`), as nvidia-smi reports it; nil when unknown.
    public var minorNumber: Int?
    /// XID events read from the kernel log since the agent started.
    public var xids: [XidEvent]
    /// Since when the agent no longer lists this GPU while it lists others (allotd's answers only).
    public var missingSince: Date?
    /// The product name as nvidia-smi gives it ("NVIDIA H100 80GB HBM3"); `model` is its short form.
    public var productName: String?
    /// The MIG devices cut from it, where MIG is on (the agent's reports).
    public var migDevices: [MIGDevice]?
    /// Set on a MIG device as allotd lists it (a slot of its own): its profile, the slot of the GPU it is cut
    /// from, and the thousandths of that GPU it charges.
    public var migProfile: String?
    public var migParent: Int?
    public var chargeMilli: Int?
    /// Its MIG mode is about to change (at the GPU's next reset): it takes no new work until then.
    public var migPending: Bool?
    public init(
        index: Int, uuid: String, model: String, memoryMiB: Int, nvlinkDomain: Int? = nil, migMode: String? = nil,
        health: GPUHealth = .healthy, healthDetail: String? = nil, pciBusID: String? = nil, xids: [XidEvent] = [], minorNumber: Int? = nil
    ) {
        self.pciBusID = pciBusID
        self.minorNumber = minorNumber
        self.xids = xids
        self.index = index
        self.uuid = uuid
        self.model = model
        self.memoryMiB = memoryMiB
        self.nvlinkDomain = nvlinkDomain
        self.migMode = migMode
        self.health = health
        self.healthDetail = healthDetail
    }
}

/// One MIG device of a GPU as the agent reads it: `nvidia-smi -q -x` gives its GPU and compute instance and
/// memory, `nvidia-smi -L` its profile and UUID.
public struct MIGDevice: Codable, Hashable, Sendable {
    /// Its index among its GPU's MIG devices (`-L`'s "Device N", the XML's `<index>`).
    public var index: Int
    /// `MIG-…`, what CUDA_VISIBLE_DEVICES names it by; empty when `-L` did not list it.
    public var uuid: String
    /// `1g.18gb`; nil when `-L` did not list it.
    public var profile: String?
    public var gpuInstance: Int
    public var computeInstance: Int
    public var memoryMiB: Int
    public init(index: Int, uuid: String, profile: String?, gpuInstance: Int, computeInstance: Int, memoryMiB: Int) {
        self.index = index
        self.uuid = uuid
        self.profile = profile
        self.gpuInstance = gpuInstance
        self.computeInstance = computeInstance
        self.memoryMiB = memoryMiB
    }
}

/// How a node keeps fractional shares of a GPU to their size.
public enum GPUSharing: String, Codable, Sendable {
    /// NVIDIA MPS: one control daemon per shared GPU, each rank limited to its share of threads and memory.
    case mps
    /// Nothing enforces the share (no MPS on the node): a rank may use more than it was given.
    case soft
}

/// A node as `allot nodes` prints it.
public struct NodeView: Codable, Hashable, Sendable {
    public var name: String
    public var pool: String
    public var block: String?
    public var state: NodeState
    public var agentURL: String?
    public var cpuMilli: Int
    public var memoryMiB: Int
    public var lastHeartbeat: Date?
    public var gpus: [GPUInfo]
    /// GPU indices held by live attempts, with the thousandths held on each.
    public var usedGPUMilli: [String: Int]
    /// How the node keeps shares of a GPU to their size: `mps` (enforced), `soft` (bookkeeping only); nil unknown.
    public var gpuSharing: GPUSharing?
    public init(
        name: String, pool: String, block: String?, state: NodeState, agentURL: String?, cpuMilli: Int, memoryMiB: Int,
        lastHeartbeat: Date?, gpus: [GPUInfo], usedGPUMilli: [String: Int]
    ) {
        self.name = name
        self.pool = pool
        self.block = block
        self.state = state
        self.agentURL = agentURL
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
        self.lastHeartbeat = lastHeartbeat
        self.gpus = gpus
        self.usedGPUMilli = usedGPUMilli
    }
}
