import Foundation

/// One GPU as the placement core sees it: what it is and how much of it is taken.
public struct GPUSlot: Hashable, Sendable {
    public var index: Int
    public var model: String
    /// GPUs sharing a domain talk over NVLink; nil when the node does not report one.
    public var nvlinkDomain: Int?
    public var health: GPUHealth
    /// Thousandths of this GPU held by live attempts (0…1000).
    public var usedMilli: Int

    public init(index: Int, model: String, nvlinkDomain: Int? = nil, health: GPUHealth = .healthy, usedMilli: Int = 0) {
        self.index = index
        self.model = model
        self.nvlinkDomain = nvlinkDomain
        self.health = health
        self.usedMilli = usedMilli
    }

    public var isFree: Bool { self.usedMilli == 0 }
    public var leftoverMilli: Int { 1000 - self.usedMilli }
}

/// A node as the placement core sees it: capacity, what is in use, and whether it takes work.
public struct NodeSnapshot: Hashable, Sendable {
    public var name: String
    public var pool: String
    /// The network switch or rack; gangs prefer nodes of one block.
    public var block: String?
    public var state: NodeState
    public var cpuMilli: Int
    public var memoryMiB: Int
    public var usedCPUMilli: Int
    public var usedMemoryMiB: Int
    public var gpus: [GPUSlot]
    /// Seconds until the node's next maintenance window starts, if one is planned.
    public var maintenanceInSeconds: Int64?

    public init(
        name: String, pool: String, block: String? = nil, state: NodeState = .ready,
        cpuMilli: Int = 0, memoryMiB: Int = 0, usedCPUMilli: Int = 0, usedMemoryMiB: Int = 0, gpus: [GPUSlot]
    ) {
        self.name = name
        self.pool = pool
        self.block = block
        self.state = state
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
        self.usedCPUMilli = usedCPUMilli
        self.usedMemoryMiB = usedMemoryMiB
        self.gpus = gpus
    }

    public var freeWholeGPUs: Int { self.gpus.reduce(0) { $0 + ($1.isFree && $1.health.isSchedulable ? 1 : 0) } }
}

/// A job waiting to be placed, reduced to what placement needs.
public struct PendingJob: Hashable, Sendable {
    public var id: Int64
    public var org: String
    public var pool: String
    /// Acceptable GPU models; empty accepts any.
    public var gpuModels: [String]
    /// Number of nodes; more than one makes a gang.
    public var nodes: Int
    public var perNode: NodeRequest
    public var priority: Int
    /// Seconds since the epoch; older jobs go first among equals.
    public var submittedAt: Int64
    public var timeLimitSeconds: Int64?
    /// The shortest limit it accepts (`--time-min`): backfill may start it with its limit cut down to this or more.
    public var timeMinSeconds: Int64?
    /// Its priority class may preempt preemptible (or borrowing) work of lower priority.
    public var preempts: Bool = false
    /// Its project and owner inside the organisation, for their limits and fair share.
    public var project: String?
    public var owner: String?
    /// What the budget reserves for a job without a time limit (Policies/ `budgetTime`, 24 hours by default).
    public var defaultBudgetSeconds: Int64 = 86_400

    public init(
        id: Int64, org: String = "", pool: String, gpuModels: [String] = [], nodes: Int = 1, perNode: NodeRequest,
        priority: Int = 0, submittedAt: Int64 = 0, timeLimitSeconds: Int64? = nil
    ) {
        self.id = id
        self.org = org
        self.pool = pool
        self.gpuModels = gpuModels
        self.nodes = nodes
        self.perNode = perNode
        self.priority = priority
        self.submittedAt = submittedAt
        self.timeLimitSeconds = timeLimitSeconds
    }

    /// The pool's model a job's GPU type names: the same name in any case, else the one model among its words
    /// (a Slurm site's type `h100-80gb` or `nvidia_a100_sxm4` is the pool's `H100` or `A100`); nil when none or
    /// several do.
    public static func model(named asked: String, among models: Set<String>) -> String? {
        if let same = models.first(where: { $0.caseInsensitiveCompare(asked) == .orderedSame }) { return same }
        let words = Set(asked.lowercased().split { !($0.isLetter || $0.isNumber) }.map(String.init))
        let named = models.filter { words.contains($0.lowercased()) }
        return named.count == 1 ? named.first : nil
    }

    /// Whether a GPU of this model is acceptable (case-insensitive, as operators type models loosely).
    public func accepts(model: String) -> Bool {
        self.gpuModels.isEmpty || self.gpuModels.contains { $0.caseInsensitiveCompare(model) == .orderedSame }
    }
}

extension NodeSnapshot {
    /// Nothing runs on it: no GPU, CPU or memory in use.
    public var isIdle: Bool { self.usedCPUMilli == 0 && self.usedMemoryMiB == 0 && self.gpus.allSatisfy { $0.usedMilli == 0 } }
}

extension Array where Element == NodeSnapshot {
    /// Marks what a rank holds (its GPUs' thousandths, CPU and memory) as in use on its node, or with
    /// `releasing` as free again: how replays, benchmarks and preemption planning move a snapshot on.
    public mutating func hold(_ rank: RankAssignment, releasing: Bool = false) {
        guard let n = self.firstIndex(where: { $0.name == rank.node }) else { return }
        self.hold(rank, at: n, releasing: releasing)
    }

    /// The same, for the node at position `n` (which must be the rank's node).
    public mutating func hold(_ rank: RankAssignment, at n: Int, releasing: Bool = false) {
        let sign = releasing ? -1 : 1
        self[n].usedCPUMilli = Swift.max(0, self[n].usedCPUMilli + sign * rank.cpuMilli)
        self[n].usedMemoryMiB = Swift.max(0, self[n].usedMemoryMiB + sign * rank.memoryMiB)
        for idx in rank.gpuIndices {
            if let g = self[n].gpus.firstIndex(where: { $0.index == idx }) {
                self[n].gpus[g].usedMilli = Swift.max(0, self[n].gpus[g].usedMilli + sign * rank.milliPerGPU)
            }
        }
    }
}

/// Nodes of one shape — pool, CPU, memory, GPUs (model, NVLink domain) — and how many a pool has: what "could this
/// job ever run here" asks of a pool, whatever its nodes hold now.
public struct NodeShape: Sendable, Hashable {
    public var node: NodeSnapshot
    public var count: Int
    public init(node: NodeSnapshot, count: Int) {
        self.node = node
        self.count = count
    }
}
