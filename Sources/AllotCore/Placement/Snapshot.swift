import Foundation

/// One GPU as the placement core sees it: what it is and how much of it is taken.
public struct GPUSlot: Hashable, Sendable {
    public var index: Int
    public var model: String
    /// GPUs sharing a domain talk over NVLink; nil when the node does not report one.
    public var nvlinkDomain: Int?
    public var health: GPUHealth
    /// Thousandths of this GPU held by live attempts (0…1000; a MIG device's share when held).
    public var usedMilli: Int
    /// Its memory for `gpuMemory` requests, MiB: what nvidia-smi reports, or the size its name states where that is
    /// more (`GPUMemory.forMatching`); 0 when unknown.
    public var memoryMiB: Int
    /// What holding it charges, in thousandths of a GPU: 1000 for a GPU, a MIG device's memory slices of its GPU's.
    public var chargeMilli: Int
    /// The rarer names, each pair behind one reference (nil for none): placement copies slots in its inner loops,
    /// and every string field is a retain and a release per copy.
    private var names: Names?
    private var sharers: Names?

    /// Two optional strings, compared and hashed by value.
    final class Names: Hashable, Sendable {
        let first: String?
        let second: String?
        init?(_ first: String?, _ second: String?) {
            guard first != nil || second != nil else { return nil }
            self.first = first
            self.second = second
        }
        static func == (a: Names, b: Names) -> Bool { a === b || (a.first == b.first && a.second == b.second) }
        func hash(into h: inout Hasher) {
            h.combine(self.first)
            h.combine(self.second)
        }
    }

    /// The product name nvidia-smi gives ("NVIDIA A100 80GB PCIe"): a job's `gpuModel` may name it in full.
    public var productName: String? {
        get { self.names?.first }
        set { self.names = Names(newValue, self.names?.second) }
    }
    /// Set for a MIG device: its profile (`1g.18gb`). Only jobs that ask that profile take it, always whole.
    public var migProfile: String? {
        get { self.names?.second }
        set { self.names = Names(self.names?.first, newValue) }
    }
    /// The organisation and the Unix account whose shares it holds (nil when none).
    public var shareOrg: String? {
        get { self.sharers?.first }
        set { self.sharers = Names(newValue, self.sharers?.second) }
    }
    public var shareAccount: String? {
        get { self.sharers?.second }
        set { self.sharers = Names(self.sharers?.first, newValue) }
    }
    /// Whether it is a MIG device, without reading (and retaining) the profile.
    public var isMIGDevice: Bool { self.names?.second != nil }

    public init(
        index: Int, model: String, nvlinkDomain: Int? = nil, health: GPUHealth = .healthy, usedMilli: Int = 0, productName: String? = nil,
        memoryMiB: Int = 0, migProfile: String? = nil, chargeMilli: Int = 1000, shareOrg: String? = nil
    ) {
        self.index = index
        self.model = model
        self.nvlinkDomain = nvlinkDomain
        self.health = health
        self.usedMilli = usedMilli
        self.names = Names(productName, migProfile)
        self.memoryMiB = memoryMiB
        self.chargeMilli = chargeMilli
        self.sharers = Names(shareOrg, nil)
    }

    public var isFree: Bool { self.usedMilli == 0 }
    public var leftoverMilli: Int { 1000 - self.usedMilli }

    /// Same kind of GPU (model, product name, memory, MIG profile), health and use aside: compared, not hashed.
    static func alike(_ a: GPUSlot, _ b: GPUSlot) -> Bool { a.model == b.model && a.memoryMiB == b.memoryMiB && a.names == b.names }
}

/// GPU memory as jobs ask for it (`gpuMemory: 80G`).
public enum GPUMemory {
    /// A GPU's memory for matching: the larger of what nvidia-smi reports and the size its product name or MIG
    /// profile states (`80GB`, `1g.18gb`), in binary units as users type them: nvidia-smi reports 81,559 MiB
    /// for an "H100 80GB", less than 80 GiB.
    public static func forMatching(reportedMiB: Int, productName: String?, migProfile: String?) -> Int {
        var stated = 0
        if let profile = migProfile, let gb = MIGProfile.parts(profile)?.gigabytes {
            stated = gb * 1024
        } else if let name = productName {
            let words = name.uppercased().split { $0 == " " || $0 == "-" }
            if let w = words.first(where: { $0.hasSuffix("GB") && Int($0.dropLast(2)) != nil }) { stated = Int(w.dropLast(2))! * 1024 }
        }
        return max(reportedMiB, stated)
    }

    /// Whether memory `have` satisfies a request of `asked` MiB. Two percent of slack: a part sold as "141GB"
    /// (the H200) reports 143,771 MiB, a little under 141 GiB.
    public static func satisfies(_ have: Int, asked: Int) -> Bool { Double(have) * 1.02 >= Double(asked) }
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
    /// Its agent runs shared GPUs under MPS, which serves one Linux account per GPU at a time: shares of one GPU
    /// must be one account's there.
    public var enforcesShares = false
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
    /// A MIG profile (`1g.18gb`): its ranks take MIG devices of that profile, `perNode.gpus` of them, and no GPU.
    public var migProfile: String?
    /// The least memory each GPU (or MIG device) must have, MiB.
    public var gpuMemoryMiB: Int?
    /// Its pool keeps organisations off each other's GPUs: a share goes only on a GPU no other organisation shares.
    public var isolatedShares = false
    /// The Unix account its ranks run as (the owner's, else the organisation's): MPS shares one GPU among one.
    public var account: String?

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

    /// Whether this GPU (or MIG device) is of a kind the job takes, whatever holds it now: a MIG device of the
    /// profile it asks, else a GPU; its model by the short name or the product name; memory enough.
    public func accepts(_ gpu: GPUSlot) -> Bool {
        if let asked = self.migProfile {
            guard let profile = gpu.migProfile, MIGProfile.same(asked, profile) else { return false }
        } else if gpu.isMIGDevice {
            return false
        }
        if let asked = self.gpuMemoryMiB, !GPUMemory.satisfies(gpu.memoryMiB, asked: asked) { return false }
        if self.gpuModels.isEmpty { return true }
        return self.gpuModels.contains { asked in
            asked.caseInsensitiveCompare(gpu.model) == .orderedSame || gpu.productName.map { Self.names(asked, product: $0) } == true
        }
    }

    /// `NVIDIA A100 80GB PCIe`, or without its `NVIDIA `, in any case.
    static func names(_ asked: String, product: String) -> Bool {
        if asked.caseInsensitiveCompare(product) == .orderedSame { return true }
        let bare = product.uppercased().hasPrefix("NVIDIA ") ? String(product.dropFirst(7)) : product
        return asked.caseInsensitiveCompare(bare) == .orderedSame
    }

    /// Whether a share of this job may go on this GPU of `node` beside what holds it now: under MPS only beside
    /// its own account's shares; where the pool keeps organisations apart, only beside its organisation's.
    public func mayShare(_ gpu: GPUSlot, on node: NodeSnapshot) -> Bool {
        guard gpu.usedMilli > 0 else { return true }
        if node.enforcesShares, let other = gpu.shareAccount, other != self.account { return false }
        return !self.isolatedShares || gpu.shareOrg == nil || gpu.shareOrg == self.org
    }
}

/// MIG profiles as NVIDIA names them: `1g.10gb`, `3g.40gb`, `1g.10gb+me` (with the media extensions).
public enum MIGProfile {
    /// Whether a Slurm GRES type or a `migProfile` field names a MIG profile rather than a GPU model.
    public static func isProfile(_ s: String) -> Bool { self.parts(s) != nil }

    /// `3g.40gb` → (nil, 3, 40); a compute instance of a GPU instance split further, `1c.3g.40gb` → (1, 3, 40).
    static func parts(_ s: String) -> (computeSlices: Int?, gpuSlices: Int, gigabytes: Int)? {
        let lower = s.lowercased()
        let base = lower.split(separator: "+", maxSplits: 1).first.map(String.init) ?? lower
        var parts = base.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        var compute: Int?
        if parts.count == 3 {
            guard parts[0].hasSuffix("c"), let c = Int(parts[0].dropLast()), c > 0 else { return nil }
            compute = c
            parts.removeFirst()
        }
        guard parts.count == 2, parts[0].hasSuffix("g"), let g = Int(parts[0].dropLast()), g > 0, parts[1].hasSuffix("gb"),
            let gb = Int(parts[1].dropLast(2))
        else { return nil }
        return (compute, g, gb)
    }

    public static func same(_ a: String, _ b: String) -> Bool { a.caseInsensitiveCompare(b) == .orderedSame }

    /// A MIG device's share of its GPU in thousandths, by memory: its memory slices of the GPU's eight
    /// (A100, H100, H200: a 1g device holds one, 2g two, 3g and 4g four, 7g all eight; `1g.20gb` on an 80 GB part
    /// two). From the profile's stated size against the GPU's memory; eighths, at least one.
    /// A compute instance that shares its GPU instance with others (`1c.3g.40gb`) charges its compute slices' part
    /// of the instance's share, so the instance's devices together charge what the instance would.
    public static func shareMilli(profile: String, gpuMemoryMiB: Int) -> Int {
        guard let (compute, slices, gb) = self.parts(profile), gpuMemoryMiB > 0 else { return 125 }
        let eighths = min(8, max(1, Int((Double(gb * 1024) * 8 / Double(gpuMemoryMiB)).rounded())))
        guard let compute, compute < slices else { return eighths * 125 }
        return max(1, eighths * 125 * compute / slices)
    }
}

extension NodeSnapshot {
    /// Nothing runs on it: no GPU, CPU or memory in use.
    public var isIdle: Bool { self.usedCPUMilli == 0 && self.usedMemoryMiB == 0 && self.gpus.allSatisfy { $0.usedMilli == 0 } }
}

extension Array where Element == NodeSnapshot {
    /// Marks what a rank holds (its GPUs' thousandths, CPU and memory) as in use on its node, or with
    /// `releasing` as free again: how replays, benchmarks and preemption planning move a snapshot on.
    public mutating func hold(_ rank: RankAssignment, releasing: Bool = false, for job: PendingJob? = nil) {
        guard let n = self.firstIndex(where: { $0.name == rank.node }) else { return }
        self.hold(rank, at: n, releasing: releasing, for: job)
    }

    /// The same, for the node at position `n` (which must be the rank's node). A share held for a job marks its GPU
    /// with the job's organisation and account (for pools that keep organisations apart, and MPS).
    public mutating func hold(_ rank: RankAssignment, at n: Int, releasing: Bool = false, for job: PendingJob? = nil) {
        let sign = releasing ? -1 : 1
        self[n].usedCPUMilli = Swift.max(0, self[n].usedCPUMilli + sign * rank.cpuMilli)
        self[n].usedMemoryMiB = Swift.max(0, self[n].usedMemoryMiB + sign * rank.memoryMiB)
        for idx in rank.gpuIndices {
            if let g = self[n].gpus.firstIndex(where: { $0.index == idx }) {
                self[n].gpus[g].usedMilli = Swift.max(0, self[n].gpus[g].usedMilli + sign * rank.milliPerGPU)
                if self[n].gpus[g].usedMilli == 0 {
                    self[n].gpus[g].shareOrg = nil
                    self[n].gpus[g].shareAccount = nil
                } else if !releasing, let job, rank.milliPerGPU < 1000, self[n].gpus[g].migProfile == nil {
                    self[n].gpus[g].shareOrg = self[n].gpus[g].shareOrg ?? job.org
                    self[n].gpus[g].shareAccount = self[n].gpus[g].shareAccount ?? job.account
                }
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
