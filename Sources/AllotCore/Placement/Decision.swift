import Foundation

/// Where one rank of a job runs: its node and the GPUs it holds there.
public struct RankAssignment: Hashable, Codable, Sendable {
    public var rank: Int
    public var node: String
    public var gpuIndices: [Int]
    /// Thousandths held on each listed GPU: 1000 for whole GPUs, the fraction for a shared one.
    public var milliPerGPU: Int
    /// CPU and memory reserved on the node (all of it for an exclusive rank).
    public var cpuMilli: Int
    public var memoryMiB: Int

    public init(rank: Int, node: String, gpuIndices: [Int], milliPerGPU: Int, cpuMilli: Int = 0, memoryMiB: Int = 0) {
        self.rank = rank
        self.node = node
        self.gpuIndices = gpuIndices
        self.milliPerGPU = milliPerGPU
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
    }
}

/// The core's decision to start one job: every rank of it, or (for a gang) nothing at all.
public struct Placement: Hashable, Sendable {
    public var jobID: Int64
    public var ranks: [RankAssignment]
    /// Runs beyond its organisation's guarantee on lent capacity: preemptible, to give the capacity back.
    public var borrowing: Bool
    /// Backfill started it with its time limit cut down (to no less than its `--time-min`): its new limit.
    public var timeLimitSeconds: Int64?
    public init(jobID: Int64, ranks: [RankAssignment], borrowing: Bool = false, timeLimitSeconds: Int64? = nil) {
        self.timeLimitSeconds = timeLimitSeconds
        self.jobID = jobID
        self.ranks = ranks
        self.borrowing = borrowing
    }
}

/// Why a node was not chosen for a job. Counted per cycle so operators see what blocks the queue.
public enum Rejection: String, Hashable, Sendable, CaseIterable, Codable {
    case pool = "not in the job's pool"
    case nodeState = "node not ready"
    case gpuModel = "no acceptable GPU model"
    case gpuHealth = "GPUs unhealthy"
    case gpus = "not enough free GPUs"
    case gpuShare = "no GPU with enough free share"
    case cpu = "not enough free CPU"
    case memory = "not enough free memory"
    case notIdle = "node not idle (exclusive job)"
    case maintenance = "maintenance window before the job's time limit ends"
}

/// Why a job is still waiting after a cycle: data, rendered to text at the edge.
public enum WaitReason: Hashable, Sendable {
    /// The pool has no nodes at all.
    case emptyPool(pool: String)
    /// No node of the pool could hold one rank even if it were empty.
    case neverFits(pool: String, detail: String)
    /// Nodes exist that could hold it, but not enough are free now.
    case capacity(needed: Int, feasible: Int, topRejection: Rejection?)
    /// Its organisation holds as many GPUs in the pool as its allocation's limit allows.
    case quota(org: String, limitGPUs: Double, inUseGPUs: Double)
    /// Its GPUs × time limit do not fit in what is left of the entitlement.
    case budget(org: String, neededGPUHours: Double, leftGPUHours: Double)
    /// Its organisation has no allocation in force in the pool.
    case noAllocation(org: String, pool: String)
    /// It would fit, but only on nodes held back for an earlier job (EASY backfill).
    case reserved(forJob: Int64)
    /// Its dependency is not met yet (`--dependency`): what it waits for.
    case dependency(String)
    /// Its array runs as many tasks as its `%` limit allows.
    case arrayLimit(arrayJobID: Int64, limit: Int)
    /// Someone holds it (`allot hold`, `--hold`); an operator's hold only an operator releases.
    case held(by: String, admin: Bool)
    /// Free capacity was scattered; work is being moved to make room for it (the plan, in words).
    case defragmentation(String)

    /// The short machine-readable reason code, as `allot jobs show --output json` prints it.
    public var code: String {
        switch self {
        case .emptyPool: "capacity"
        case .neverFits: "unschedulable"
        case .capacity: "capacity"
        case .quota: "quota"
        case .budget: "budget"
        case .noAllocation: "quota"
        case .reserved: "reserved"
        case .dependency: "dependency"
        case .arrayLimit: "array_limit"
        case .held(_, let admin): admin ? "held_admin" : "held_user"
        case .defragmentation: "defragmentation"
        }
    }

    /// Slurm's name for a reason code (what squeue's REASON column says), for people coming from Slurm.
    public static func slurmName(code: String) -> String? {
        switch code {
        case "capacity": "Resources"
        case "unschedulable": "BadConstraints"
        case "quota": "AssocGrpGRES"
        case "budget": "AssocGrpGRESMinutes"
        case "reserved": "Priority"
        case "dependency": "Dependency"
        case "array_limit": "JobArrayTaskLimit"
        case "held_user": "JobHeldUser"
        case "held_admin": "JobHeldAdmin"
        case "defragmentation": "Resources"
        case "begin_time": "BeginTime"
        default: nil
        }
    }

    static func gpus(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(format: "%.2f", v) }

    /// One line for people.
    public var text: String {
        switch self {
        case .emptyPool(let pool):
            return "capacity: pool \(pool) has no nodes"
        case .neverFits(let pool, let detail):
            return "no node in pool \(pool) fits \(detail)"
        case .quota(let org, let limit, let inUse):
            return "quota: \(org) holds \(Self.gpus(inUse)) GPUs of its limit of \(Self.gpus(limit)) in this pool"
        case .budget(let org, let needed, let left):
            return String(format: "budget: the job needs %.1f GPU-hours (GPUs × time limit), \(org) has %.1f left this period", needed, left)
        case .noAllocation(let org, let pool):
            return "quota: \(org) has no allocation in force in pool \(pool)"
        case .reserved(let job):
            return "reserved for job \(job): the nodes it fits on are held for an earlier job"
        case .dependency(let what):
            return "dependency: \(what)"
        case .arrayLimit(let array, let limit):
            return "array limit: at most \(limit) tasks of array \(array) run at once"
        case .held(let by, let admin):
            return "held by \(by)\(admin ? " (an operator's hold: an operator releases it)" : ""): allot release lets it run"
        case .defragmentation(let plan):
            return "waiting for defragmentation: \(plan)"
        case .capacity(let needed, let feasible, let top):
            let why = top.map { " (most nodes: \($0.rawValue))" } ?? ""
            return needed > 1
                ? "capacity: gang needs \(needed) nodes, \(feasible) can take a rank now\(why)"
                : "capacity: no node has room now\(why)"
        }
    }
}

/// The outcome of one scheduling cycle.
public struct Plan: Sendable {
    public var placements: [Placement] = []
    public var waiting: [Int64: WaitReason] = [:]
    /// How often each rejection was met this cycle, over all jobs and nodes.
    public var rejections: [Rejection: Int] = [:]
    /// Per pool, the first job waiting for capacity and when and where it will start (EASY backfill).
    public var reservations: [String: Reservation] = [:]
    public init() {}
}

/// What backfill needs beyond the snapshot: the running attempts (with their time limits) and the time now.
public struct Backfill: Sendable {
    public var running: [RunningAttempt]
    /// Seconds since the epoch.
    public var now: Int64
    public init(running: [RunningAttempt], now: Int64) {
        self.running = running
        self.now = now
    }
}

/// Nodes held for a waiting job from the time it can start.
public struct Reservation: Hashable, Sendable {
    public var jobID: Int64
    public var startsAt: Int64
    public var nodes: Set<String>
    public init(jobID: Int64, startsAt: Int64, nodes: Set<String>) {
        self.jobID = jobID
        self.startsAt = startsAt
        self.nodes = nodes
    }
}
