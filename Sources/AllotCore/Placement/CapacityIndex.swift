/// The nodes of one placement call, with their usable GPU capacity indexed by profile, so that one decision
/// looks at the few groups of alike nodes (scored once per job shape) and at nodes of the best group in name
/// order until one passes every per-node check — rather than at every node of the pool.
struct Cluster {
    private(set) var nodes: [NodeSnapshot]
    let book: ProfileBook
    private(set) var positionByName: [String: Int] = [:]
    /// Every node of each pool in name order, for explanations that look at all of them.
    private(set) var poolMembers: [String: [Int]] = [:]
    private var poolIDs: [String: Int] = [:]
    /// Ids of the kinds of GPU (model, product name, memory, MIG profile), the same for models that differ only
    /// in case; and each kind by id.
    private var kindIDs: [GPUKind: Int] = [:]
    private var kinds: [GPUKind] = []
    /// The same ids by the fields as agents report them, so indexing a node hashes them without lowercasing.
    private var kindIDsAsReported: [GPUKind: Int] = [:]
    /// Whether some node has MIG devices: then even a job that names no model accepts only some kinds.
    private var hasMIG = false
    /// The kind last indexed: consecutive nodes mostly have GPUs of one kind, found again without hashing.
    private var lastKind: (gpu: GPUSlot, id: Int)?
    /// Pools where some node has a maintenance window, so time limits matter to placement there.
    private(set) var poolsWithMaintenance: Set<String> = []
    /// Pools where some node runs shares under MPS, so a share's account matters to placement there.
    private(set) var poolsWithMPS: Set<String> = []
    /// Pools where some node names its block, so gangs look for one block that holds them.
    private var poolsWithBlocks: Set<String> = []
    /// The profile of each node, or -1 for nodes that take no work.
    private var profileOf: [Int]
    /// Per profile, its nodes' positions, descending: nodes mostly leave a group from its first position
    /// (best fit and name order take the lowest), which is then the cheap end of the array.
    private var members: [[Int32]] = []
    /// Per pool, the profiles that have nodes.
    private var live: [[Int]] = []
    /// Per pool, per model id: free GPU thousandths on nodes that take work, for scarcity.
    private var freeByModel: [[Int]] = []
    /// Per pool and block: nodes that take work with nothing running (free whole nodes), for gangs by block;
    /// and every node of each block, in name order.
    private var idleInBlock: [BlockKey: Int] = [:]
    private var blockMembers: [BlockKey: [Int]] = [:]
    /// Per pool: free CPU and memory on nodes that take work, for the pool's shortage of them.
    private var freeCPU: [Int] = []
    private var freeMemory: [Int] = []

    init(_ snapshot: [NodeSnapshot], book: ProfileBook) {
        // The store hands them over in name order already; sorting is for other callers.
        self.nodes = zip(snapshot, snapshot.dropFirst()).allSatisfy({ $0.name < $1.name }) ? snapshot : snapshot.sorted { $0.name < $1.name }
        self.book = book
        self.profileOf = Array(repeating: -1, count: self.nodes.count)
        self.positionByName.reserveCapacity(self.nodes.count)
        // Consecutive nodes mostly share a pool and a model: compared, not hashed again (a cycle builds this index
        // afresh, and hashing names was most of that).
        var lastPool: (name: String, id: Int)?
        var lastKind: GPUSlot?
        var membersByPool: [[Int]] = []
        for (p, node) in self.nodes.enumerated() {
            self.positionByName[node.name] = p
            let pool: Int
            if let last = lastPool, last.name == node.pool {
                pool = last.id
            } else if let id = self.poolIDs[node.pool] {
                pool = id
            } else {
                pool = self.live.count
                self.poolIDs[node.pool] = pool
                self.live.append([])
                self.freeByModel.append([])
                self.freeCPU.append(0)
                self.freeMemory.append(0)
                membersByPool.append([])
            }
            lastPool = (node.pool, pool)
            membersByPool[pool].append(p)
            if node.maintenanceInSeconds != nil { self.poolsWithMaintenance.insert(node.pool) }
            if node.enforcesShares { self.poolsWithMPS.insert(node.pool) }
            if let block = node.block {
                self.poolsWithBlocks.insert(node.pool)
                self.blockMembers[BlockKey(pool: pool, block: block), default: []].append(p)
            }
            for gpu in node.gpus where lastKind.map({ !GPUKind.alike($0, gpu) }) ?? true {
                lastKind = gpu
                guard self.kindIDsAsReported[GPUKind(reported: gpu)] == nil else { continue }
                let kind = GPUKind(gpu)
                if let id = self.kindIDs[kind] {
                    self.kindIDsAsReported[GPUKind(reported: gpu)] = id
                    continue
                }
                self.kindIDs[kind] = self.kinds.count
                self.kindIDsAsReported[GPUKind(reported: gpu)] = self.kinds.count
                self.kinds.append(kind)
                book.modelNames.append(kind.model)
                if gpu.migProfile != nil { self.hasMIG = true }
            }
            self.index(p)
        }
        for (name, id) in self.poolIDs { self.poolMembers[name] = membersByPool[id] }
        for (pool, profiles) in self.live.enumerated() { book.rank(pool: pool, profiles.map { ($0, self.members[$0].count) }) }
    }

    /// Readies the cluster for another placement call expecting `mix`: the book forgets what it worked out from
    /// the old mix, and each pool's nodes are ranked again as they are now.
    func refresh(mix: WorkloadMix) {
        self.book.reset(mix: mix)
        for (pool, profiles) in self.live.enumerated() { self.book.rank(pool: pool, profiles.map { ($0, self.members[$0].count) }) }
    }

    /// The job's shape in this cluster's terms.
    func shape(of job: PendingJob) -> Int {
        let models: [Int]? =
            job.gpuModels.isEmpty && job.migProfile == nil && job.gpuMemoryMiB == nil && !self.hasMIG
            ? nil : self.kinds.indices.filter { job.accepts(self.kinds[$0].slot) }
        let r = job.perNode
        return self.book.id(
            of: JobShape(
                gpus: r.gpus, fraction: r.fractionMilli, exclusive: r.exclusive, allMemory: r.allMemory, cpuMilli: r.cpuMilli,
                memoryMiB: r.memoryMiB, models: models))
    }

    // MARK: Searching

    struct Candidate {
        var position: Int
        var score: Score
        var block: String?
        var share: (model: Int, leftover: Int)?
    }

    /// How scarce each model's free capacity is in `pool` for the work expected that can use only some models
    /// (nil when none is expected): Σ over such shapes of their share of the expected GPU demand, spread over
    /// their models by free capacity, divided by the model's share of the pool's free capacity. 1 means that
    /// work alone would take all the model has left, in proportion; 0, no such work wants it.
    func scarcity(pool: Int) -> [Double]? {
        guard !self.book.captive.isEmpty else { return nil }
        let free = self.freeByModel[pool]
        let total = Double(free.reduce(0, +))
        guard total > 0 else { return nil }
        var wanted = Array(repeating: 0.0, count: free.count)
        for (t, share) in self.book.captive {
            let accepts = self.book.accepts(term: t)
            let theirs = free.indices.reduce(0) { $0 + ($1 < accepts.count && accepts[$1] ? free[$1] : 0) }
            guard theirs > 0 else { continue }
            for m in free.indices where m < accepts.count && accepts[m] { wanted[m] += share * Double(free[m]) / Double(theirs) }
        }
        return free.indices.map { free[$0] > 0 ? wanted[$0] * total / Double(free[$0]) : 0 }
    }

    /// What the pool as a whole weighs into a transition's score: how scarce each model is for work that needs
    /// it, and how short of CPU and memory the pool is for the work expected (the CPU its free GPUs would need
    /// over the CPU it has free, at most 1; likewise memory).
    struct PoolPressure {
        var scarcity: [Double]?
        var cpuShortage = 0.0
        var memoryShortage = 0.0
    }

    func pressure(pool: Int) -> PoolPressure? {
        guard self.book.strategy == .fragmentationAware else { return nil }
        let gpus = Double(self.freeByModel[pool].reduce(0, +))
        var p = PoolPressure(scarcity: self.scarcity(pool: pool))
        if let r = self.book.mix.gpuPerCPUMilli, self.freeCPU[pool] > 0 { p.cpuShortage = min(1, gpus / r / Double(self.freeCPU[pool])) }
        if let r = self.book.mix.gpuPerMiB, self.freeMemory[pool] > 0 { p.memoryShortage = min(1, gpus / r / Double(self.freeMemory[pool])) }
        return p
    }

    /// A transition's score with the pool's pressure added: the thousandths it takes times the model's scarcity,
    /// so work that could go anywhere leaves the models others depend on to them; and the growth of the node's
    /// CPU and memory surplus times the pool's shortage of each, so CPU-hungry work goes where CPU is plenty.
    static func scored(_ t: Transition, pressure: PoolPressure?) -> Score {
        guard let p = pressure else { return t.score }
        var extra = p.cpuShortage * Double(t.surplus.cpu) + p.memoryShortage * Double(t.surplus.memory)
        if let s = p.scarcity, Int(t.model) < s.count { extra += Double(t.takes) * s[Int(t.model)] }
        return Score(primary: t.score.primary + Int((extra * 1000).rounded()), tie: t.score.tie)
    }

    /// The best node for a single rank: lowest score, then first in name order; nil when none can take it.
    func best(for job: PendingJob, shape: Int, excluding excluded: Set<Int>? = nil) -> Candidate? {
        guard let pool = self.poolIDs[job.pool] else { return nil }
        let pressure = self.pressure(pool: pool)
        var best: Candidate?
        for profile in self.live[pool] {
            guard let t = self.book.transition(profile: profile, shape: shape) else { continue }
            let score = Self.scored(t, pressure: pressure)
            if let b = best, b.score < score { continue }
            for m in self.members[profile].reversed() {
                let p = Int(m)
                // Within a score, name order decides: nothing later in this group can beat the best so far.
                if let b = best, b.score == score, p >= b.position { break }
                if excluded?.contains(p) == true || Placer.reject(job, on: self.nodes[p]) != nil { continue }
                best = Candidate(position: p, score: score, block: self.nodes[p].block, share: t.share)
                break
            }
        }
        return best
    }

    /// Visits the nodes that can take one rank of `job`, best first — lowest score, name order within a score —
    /// until `visit` returns true. Lazily: groups of one score are merged in name order as they are read, so
    /// a caller that stops early has checked only the nodes it was shown.
    func walk(_ job: PendingJob, shape: Int, excluding excluded: Set<Int>?, _ visit: (Candidate) -> Bool) {
        guard let pool = self.poolIDs[job.pool] else { return }
        let pressure = self.pressure(pool: pool)
        let scored = self.live[pool].compactMap { p in
            self.book.transition(profile: p, shape: shape).map { (profile: p, transition: $0, score: Self.scored($0, pressure: pressure)) }
        }
        .sorted { $0.score < $1.score }
        var i = 0
        while i < scored.count {
            // One score at a time: its groups' members (each kept descending) merged in ascending position.
            var level: [(profile: Int, transition: Transition, next: Int)] = []
            let score = scored[i].score
            while i < scored.count && scored[i].score == score {
                level.append((scored[i].profile, scored[i].transition, self.members[scored[i].profile].count - 1))
                i += 1
            }
            while true {
                var pick = -1
                for (k, g) in level.enumerated() where g.next >= 0 {
                    if pick < 0 || self.members[g.profile][g.next] < self.members[level[pick].profile][level[pick].next] { pick = k }
                }
                guard pick >= 0 else { break }
                let p = Int(self.members[level[pick].profile][level[pick].next])
                level[pick].next -= 1
                if excluded?.contains(p) == true || Placer.reject(job, on: self.nodes[p]) != nil { continue }
                if visit(Candidate(position: p, score: score, block: self.nodes[p].block, share: level[pick].transition.share)) { return }
            }
        }
    }

    /// Nodes for a gang of `count`: in a pool with blocks, the block that holds it most tightly — of the blocks
    /// that can take it, the one with the fewest free whole nodes (kept per block as the cluster changes), so
    /// blocks with more room stay whole for larger gangs — on its best nodes; else (no block can, or the pool
    /// has none) the best `count` overall. The walk from the best node down stops at the first block that can
    /// take the gang; only a block with fewer free whole nodes is then looked at, node by node.
    func gang(for job: PendingJob, count: Int, shape: Int, excluding excluded: Set<Int>?) -> [Candidate]? {
        var best: [Candidate] = []
        var byBlock: [String: [Candidate]] = [:]
        var chosen: (block: String, nodes: [Candidate])?
        let blocks = self.poolsWithBlocks.contains(job.pool)
        self.walk(job, shape: shape, excluding: excluded) { c in
            if best.count < count { best.append(c) }
            guard blocks else { return best.count == count }
            guard let b = c.block else { return false }
            byBlock[b, default: []].append(c)
            if byBlock[b]!.count == count { chosen = (b, byBlock[b]!) }
            return chosen != nil
        }
        guard let first = chosen, let pool = self.poolIDs[job.pool] else { return best.count == count ? best : nil }
        // Tighter blocks, fewest free whole nodes first: the first that can take the gang takes it.
        let idle = self.idleInBlock[BlockKey(pool: pool, block: first.block)] ?? 0
        let tighter = self.idleInBlock.filter { $0.key.pool == pool && $0.key.block != first.block && $0.value >= count && $0.value < idle }
            .sorted { a, b in a.value != b.value ? a.value < b.value : a.key.block < b.key.block }
        let pressure = self.pressure(pool: pool)
        for t in tighter {
            var candidates: [Candidate] = []
            for p in self.blockMembers[t.key] ?? [] where excluded?.contains(p) != true && self.profileOf[p] >= 0 {
                guard let tr = self.book.transition(profile: self.profileOf[p], shape: shape), Placer.reject(job, on: self.nodes[p]) == nil
                else { continue }
                candidates.append(Candidate(position: p, score: Self.scored(tr, pressure: pressure), block: t.key.block, share: tr.share))
            }
            if candidates.count >= count {
                return Array(candidates.sorted { $0.score != $1.score ? $0.score < $1.score : $0.position < $1.position }.prefix(count))
            }
        }
        return first.nodes
    }

    struct BlockKey: Hashable {
        var pool: Int
        var block: String
    }

    /// Per pool with blocks: the empty nodes of the blocks that the first queued gangs (up to 16 per pool)
    /// would take — the block that holds one most tightly, or for one that fits no block now, the block with the
    /// most nodes that can take a rank, where it will fit first — which single-node work leaves alone while it
    /// has somewhere else to go.
    func gangBlocks(for queue: some Sequence<PendingJob>) -> [String: Set<Int>] {
        var out: [String: Set<Int>] = [:]
        var looked: [String: Int] = [:]
        for job in queue where job.nodes > 1 && self.poolsWithBlocks.contains(job.pool) && looked[job.pool, default: 0] < 16 {
            looked[job.pool, default: 0] += 1
            let shape = self.shape(of: job)
            var block: String?
            if let chosen = self.gang(for: job, count: job.nodes, shape: shape, excluding: nil), let b = chosen.first?.block,
                chosen.allSatisfy({ $0.block == b })
            {
                block = b
            } else {
                var feasible: [String: Int] = [:]
                var seen = 0
                self.walk(job, shape: shape, excluding: nil) { c in
                    if let b = c.block { feasible[b, default: 0] += 1 }
                    seen += 1
                    return seen >= max(32, 2 * job.nodes)
                }
                block = feasible.max { a, b in a.value != b.value ? a.value < b.value : a.key > b.key }?.key
            }
            guard let block else { continue }
            for p in self.poolMembers[job.pool] ?? [] where self.nodes[p].block == block && self.nodes[p].isIdle {
                out[job.pool, default: []].insert(p)
            }
        }
        return out
    }

    /// The GPUs (positions in the node's list) one rank of `job` takes on a node chosen for it.
    func gpus(for job: PendingJob, on candidate: Candidate) -> [Int] {
        let share = candidate.share.map { share in
            { (gpu: GPUSlot) in gpu.leftoverMilli == share.leftover && self.kindIDsAsReported[GPUKind(reported: gpu)] == share.model }
        }
        guard case .fits(let gpus) = Placer.fit(job, on: self.nodes[candidate.position], shareOn: share) else {
            preconditionFailure("the index chose a node that Placer.reject refuses")
        }
        return gpus
    }

    // MARK: Changing

    /// Marks a rank as held (or with `releasing`, as free again) and moves its node to its new profile.
    mutating func hold(_ rank: RankAssignment, releasing: Bool = false, for job: PendingJob? = nil) {
        guard let p = self.positionByName[rank.node] else { return }
        self.unindex(p)
        self.nodes.hold(rank, at: p, releasing: releasing, for: job)
        self.index(p)
    }

    private mutating func index(_ p: Int) {
        let node = self.nodes[p]
        guard node.state.acceptsWork, let pool = self.poolIDs[node.pool] else { return }
        var entries: [Int32] = []
        entries.reserveCapacity(node.gpus.count)
        var kind = self.lastKind
        for gpu in node.gpus where gpu.health.isSchedulable {
            if kind.map({ !GPUKind.alike($0.gpu, gpu) }) ?? true { kind = (gpu, self.kindIDsAsReported[GPUKind(reported: gpu)]!) }
            // A MIG device is held whole, whatever share of its GPU it charges.
            entries.append(Profile.entry(model: kind!.id, leftover: gpu.isMIGDevice && gpu.usedMilli > 0 ? 0 : gpu.leftoverMilli))
        }
        self.lastKind = kind
        entries.sort()
        let profile = Profile(
            pool: pool, gpus: entries, cpuMilli: node.cpuMilli - node.usedCPUMilli, memoryMiB: node.memoryMiB - node.usedMemoryMiB)
        let id = self.book.id(of: profile)
        self.count(profile, sign: 1)
        if let block = node.block, node.isIdle { self.idleInBlock[BlockKey(pool: pool, block: block), default: 0] += 1 }
        if id >= self.members.count { self.members.append(contentsOf: Array(repeating: [], count: id - self.members.count + 1)) }
        if self.members[id].isEmpty { self.live[pool].append(id) }
        let m = Int32(p)
        self.members[id].insert(m, at: self.members[id].insertionPoint(of: m))
        self.profileOf[p] = id
    }

    private mutating func count(_ profile: Profile, sign: Int) {
        let pool = profile.pool
        self.freeCPU[pool] += sign * profile.cpuMilli
        self.freeMemory[pool] += sign * profile.memoryMiB
        for e in profile.gpus {
            let model = Profile.model(e)
            if model >= self.freeByModel[pool].count {
                self.freeByModel[pool].append(contentsOf: repeatElement(0, count: model - self.freeByModel[pool].count + 1))
            }
            self.freeByModel[pool][model] += sign * Profile.leftover(e)
        }
    }

    private mutating func unindex(_ p: Int) {
        let id = self.profileOf[p]
        guard id >= 0 else { return }
        self.count(self.book.profiles[id], sign: -1)
        if let block = self.nodes[p].block, self.nodes[p].isIdle {
            self.idleInBlock[BlockKey(pool: self.book.profiles[id].pool, block: block), default: 0] -= 1
        }
        let m = Int32(p)
        self.members[id].remove(at: self.members[id].insertionPoint(of: m))
        if self.members[id].isEmpty { self.live[self.book.profiles[id].pool].removeAll { $0 == id } }
        self.profileOf[p] = -1
    }
}

/// What makes GPUs alike to placement, health and use aside: model (in any case), product name, memory, MIG profile.
struct GPUKind: Hashable {
    var model: String
    var productName: String?
    var memoryMiB: Int
    var migProfile: String?

    init(_ gpu: GPUSlot) {
        self.model = gpu.model.lowercased()
        self.productName = gpu.productName
        self.memoryMiB = gpu.memoryMiB
        self.migProfile = gpu.migProfile?.lowercased()
    }

    /// The fields as reported, unchanged: a key to find the id of the kind above without lowercasing.
    init(reported gpu: GPUSlot) {
        self.model = gpu.model
        self.productName = gpu.productName
        self.memoryMiB = gpu.memoryMiB
        self.migProfile = gpu.migProfile
    }

    /// Compared, not hashed: consecutive GPUs are mostly alike.
    static func alike(_ a: GPUSlot, _ b: GPUSlot) -> Bool { GPUSlot.alike(a, b) }

    /// A free GPU of this kind, for asking a job whether it takes the kind.
    var slot: GPUSlot {
        GPUSlot(index: 0, model: self.model, productName: self.productName, memoryMiB: self.memoryMiB, migProfile: self.migProfile)
    }
}

extension Array where Element == Int32 {
    /// Where `value` is or would go in this descending array (binary search).
    func insertionPoint(of value: Int32) -> Int {
        var (low, high) = (0, self.count)
        while low < high {
            let mid = (low + high) / 2
            if self[mid] > value { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
