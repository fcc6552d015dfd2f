/// Names one rank of one attempt: the key by which launches are idempotent.
public struct RankKey: Hashable, Codable, Sendable, CustomStringConvertible {
    public var jobID: Int64
    public var attempt: Int
    public var rank: Int
    public init(jobID: Int64, attempt: Int, rank: Int) {
        self.jobID = jobID
        self.attempt = attempt
        self.rank = rank
    }
    public var description: String { "\(self.jobID).\(self.attempt).\(self.rank)" }
}

/// The rendezvous of a gang, from which the agent sets MASTER_ADDR, NODE_RANK and their PET_ twins.
public struct GangInfo: Hashable, Codable, Sendable {
    public var masterAddr: String
    public var masterPort: Int
    public var nnodes: Int
    public var nodeRank: Int
    public var nprocPerNode: Int
    public init(masterAddr: String, masterPort: Int, nnodes: Int, nodeRank: Int, nprocPerNode: Int) {
        self.masterAddr = masterAddr
        self.masterPort = masterPort
        self.nnodes = nnodes
        self.nodeRank = nodeRank
        self.nprocPerNode = nprocPerNode
    }
}

/// Who a rank runs for and as, and what it may use: the agent confines it to exactly this.
public struct RankTenant: Hashable, Codable, Sendable {
    /// The organisation whose job it is: its output lives in that organisation's folder.
    public var org: String
    /// The token name that submitted the job, visible inside as `ALLOT_USER`.
    public var owner: String
    /// The Unix account (a name, or `uid:gid`) the rank runs as, from `Policies/`; resolved on the node.
    public var account: String
    /// CPU thousandths and memory the rank reserved: its limits (0 for none asked).
    public var cpuMilli: Int
    public var memoryMiB: Int
    /// The OCI image its root filesystem comes from (`NAME[:TAG]` in the node's image folder); nil for the
    /// node's own directories, read-only.
    public var image: String?
    public init(org: String, owner: String, account: String, cpuMilli: Int = 0, memoryMiB: Int = 0, image: String? = nil) {
        self.org = org
        self.owner = owner
        self.account = account
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
        self.image = image
    }
}

/// What the ranks of a batch script are told of their allocation: Slurm's options, and the job's nodes (rank
/// order) with the address each is reached at, for `SLURM_JOB_NODELIST`, `scontrol show hostnames` and the
/// ranks' /etc/hosts.
public struct SlurmLaunch: Hashable, Codable, Sendable {
    public struct Node: Hashable, Codable, Sendable {
        public var name: String
        public var address: String
        /// Where the node's agent takes the steps its tasks run in.
        public var agentURL: String?
        public init(name: String, address: String, agentURL: String? = nil) {
            self.name = name
            self.address = address
            self.agentURL = agentURL
        }
    }
    public var options: SlurmOptions
    public var jobName: String
    /// `SLURM_JOB_ACCOUNT` (the organisation, or `org/project`) and `SLURM_JOB_PARTITION` (the pool).
    public var account: String
    public var partition: String
    public var nodes: [Node]
    /// The attempt's step key (hex): the agents of its nodes sign and check the steps they send one another with
    /// it. Derived by allotd from its secret and the attempt's launch id; never shown to the job.
    public var stepKey: String?
    /// The array the job is a task of (`SLURM_ARRAY_*`, `%A`, `%a`).
    public var array: ArrayTask?
    public struct ArrayTask: Hashable, Codable, Sendable {
        public var jobID: Int64
        public var taskID: Int
        public var count: Int
        public var min: Int
        public var max: Int
        public init(jobID: Int64, taskID: Int, count: Int, min: Int, max: Int) {
            self.jobID = jobID
            self.taskID = taskID
            self.count = count
            self.min = min
            self.max = max
        }
    }
    public init(
        options: SlurmOptions, jobName: String, account: String, partition: String, nodes: [Node], stepKey: String? = nil,
        array: ArrayTask? = nil
    ) {
        self.array = array
        self.stepKey = stepKey
        self.options = options
        self.jobName = jobName
        self.account = account
        self.partition = partition
        self.nodes = nodes
    }
}

/// What the dispatcher asks an agent to start (`POST /v1/attempts`).
public struct LaunchRequest: Hashable, Codable, Sendable {
    public var key: RankKey
    public var command: String
    public var env: [String: String]
    public var workingDir: String?
    /// Allot's slots of the rank's GPUs (see `gpuUUIDs`).
    public var gpuIndices: [Int]
    /// The same GPUs by UUID: the agent finds each where nvidia-smi lists it now, so a renumbering (a GPU fallen
    /// off the bus shifts those after it) gives the rank the GPUs it was placed on. Nil from an older allotd.
    /// A MIG device is named by its `MIG-` UUID (its slot is the GPU it is cut from, once the agent finds it).
    public var gpuUUIDs: [String]?
    /// A share of its one GPU, in thousandths: the agent runs it under MPS held to that share, where it can.
    public var shareMilli: Int?
    /// A restarted inference replica's launch (1, 2, …; nil for the first): its reports carry it back.
    public var launch: Int?
    public var gang: GangInfo
    public var gracePeriodSeconds: Int
    public var tenant: RankTenant
    /// The attempt's random id: a rank the agent holds under the same key but another id is another database's.
    public var launchID: String?
    /// The job's time limit and the signal it wants that long before it (`--signal`): the agent sends it.
    public var timeLimitSeconds: Int64?
    public var signal: JobSignal?
    /// Set for a batch script.
    public var slurm: SlurmLaunch?
    /// The leader epoch that placed it (see `Fence`): an agent that has taken a launch of a newer epoch refuses
    /// it, so a deposed leader that wakes up mid-dispatch starts nothing.
    public var epoch: Int64?
    public init(
        key: RankKey, command: String, env: [String: String], workingDir: String?, gpuIndices: [Int], gang: GangInfo,
        gracePeriodSeconds: Int, tenant: RankTenant, launchID: String? = nil, timeLimitSeconds: Int64? = nil, signal: JobSignal? = nil,
        slurm: SlurmLaunch? = nil, epoch: Int64? = nil, gpuUUIDs: [String]? = nil
    ) {
        self.gpuUUIDs = gpuUUIDs
        self.epoch = epoch
        self.launchID = launchID
        self.timeLimitSeconds = timeLimitSeconds
        self.signal = signal
        self.slurm = slurm
        self.key = key
        self.command = command
        self.env = env
        self.workingDir = workingDir
        self.gpuIndices = gpuIndices
        self.gang = gang
        self.gracePeriodSeconds = gracePeriodSeconds
        self.tenant = tenant
    }
}

/// What an agent knows of one rank it runs or ran.
public struct RankStatus: Hashable, Codable, Sendable {
    public enum State: String, Codable, Sendable {
        case running
        case exited
        /// The agent lost track of the process (it restarted and the process is gone): the exit code is unknown.
        case vanished
    }
    public var key: RankKey
    public var state: State
    public var exitCode: Int?
    /// The signal that ended it, if one did.
    public var signal: Int?
    public var pid: Int32?
    /// Why it ended, when its limits say more than the status: "out of memory (limit 4 GiB)".
    public var detail: String?
    /// Which launch of a restarted replica this is (the launch request's `launch`); nil for the first.
    public var launch: Int?
    public init(key: RankKey, state: State, exitCode: Int? = nil, signal: Int? = nil, pid: Int32? = nil, detail: String? = nil) {
        self.key = key
        self.state = state
        self.exitCode = exitCode
        self.signal = signal
        self.pid = pid
        self.detail = detail
    }
}

/// The agent's register and heartbeat body: its inventory and the state of every rank it knows.
public struct AgentReport: Hashable, Codable, Sendable {
    public var node: String
    /// Where the scheduler reaches this agent's API: fixed at enrolment (or the first registration); a report
    /// that names another address is refused.
    public var agentURL: String
    public var cpuMilli: Int
    public var memoryMiB: Int
    public var gpus: [GPUInfo]
    public var ranks: [RankStatus]
    /// The srun steps of the batch jobs whose first node this is, running or ended lately.
    public var steps: [StepStatus]?
    /// Whether the node enforces GPU shares (MPS) or only books them.
    public var gpuSharing: GPUSharing?
    public init(
        node: String, agentURL: String, cpuMilli: Int, memoryMiB: Int, gpus: [GPUInfo], ranks: [RankStatus], steps: [StepStatus]? = nil
    ) {
        self.steps = steps
        self.node = node
        self.agentURL = agentURL
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
        self.gpus = gpus
        self.ranks = ranks
    }
}

/// The scheduler's answer to a heartbeat: the ranks it still considers live on this node.
/// The agent stops any other process it runs that it started before sending the heartbeat.
public struct HeartbeatReply: Hashable, Codable, Sendable {
    public var live: [RankKey]
    /// Ranks whose reports the scheduler has recorded; the agent may forget them.
    public var acknowledged: [RankKey]
    public init(live: [RankKey], acknowledged: [RankKey]) {
        self.live = live
        self.acknowledged = acknowledged
    }
}

/// `POST /v1/attempts/{job}/{attempt}/{rank}/stop`: SIGTERM, then SIGKILL after the grace period.
public struct StopRequest: Hashable, Codable, Sendable {
    public var gracePeriodSeconds: Int
    /// A drain or a reclaim: a rank that asked for a warning signal (`--signal`) gets it first, and SIGTERM that
    /// many seconds later.
    public var warnFirst: Bool?
    public init(gracePeriodSeconds: Int, warnFirst: Bool? = nil) {
        self.gracePeriodSeconds = gracePeriodSeconds
        self.warnFirst = warnFirst
    }
}
