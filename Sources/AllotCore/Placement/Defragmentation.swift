/// A plan to make room for a job that waits only because free capacity is scattered: enough free GPUs in its
/// pool, but no node (or, for a gang in a pool with blocks, no block) that can hold it. It moves
/// the fewest attempts that may be moved off the nodes the job will take — each is stopped (SIGTERM and its
/// grace) and requeued keeping its submit time — and only when every one of them fits elsewhere at once, so
/// the pool loses no work by it.
public struct DefragmentationPlan: Hashable, Sendable, Codable {
    public var jobID: Int64
    public var pool: String
    /// The jobs whose attempts are moved, by id, and the attempt numbers.
    public var moves: [Move]
    /// The nodes the waiting job takes once the moved attempts have stopped, in name order.
    public var nodes: [String]

    public struct Move: Hashable, Sendable, Codable {
        public var jobID: Int64
        public var attempt: Int
        /// The plan's nodes it leaves.
        public var from: [String]
        public init(jobID: Int64, attempt: Int, from: [String]) {
            self.jobID = jobID
            self.attempt = attempt
            self.from = from
        }
    }

    public init(jobID: Int64, pool: String, moves: [Move], nodes: [String]) {
        self.jobID = jobID
        self.pool = pool
        self.moves = moves
        self.nodes = nodes
    }

    /// "moving jobs 12, 19 from gpu-031", as `allot jobs show` says it (the first 20 of each, then how many more).
    public var summary: String {
        func listed(_ xs: [String]) -> String {
            xs.prefix(20).joined(separator: ", ") + (xs.count > 20 ? " and \(xs.count - 20) more" : "")
        }
        let jobs = listed(self.moves.map(\.jobID).sorted().map(String.init))
        return "moving job\(self.moves.count == 1 ? "" : "s") \(jobs) from \(listed(Array(Set(self.moves.flatMap(\.from))).sorted()))"
    }
}

/// What defragmentation may do: how many attempts it may still move (the policy's moves per hour, less those
/// made in the last hour) and how long an attempt must have run before it may be moved.
public struct DefragmentationLimits: Hashable, Sendable {
    public var moves: Int
    public var minimumRuntimeSeconds: Int64
    public init(moves: Int, minimumRuntimeSeconds: Int64) {
        self.moves = moves
        self.minimumRuntimeSeconds = minimumRuntimeSeconds
    }
}

extension Placer {
    /// Whether `attempt` may be moved to make room for `job`: it said so (the job's `movable` flag, for work that
    /// checkpoints) or its class is preemptible; its class does not preempt others (work guaranteed its place);
    /// its priority is no higher than the job's; it has run at least the minimum runtime; and its job has an
    /// attempt left, so the move requeues it rather than ending it.
    public static func mayMove(_ attempt: RunningAttempt, for job: PendingJob, now: Int64, minimumRuntimeSeconds: Int64) -> Bool {
        attempt.jobID != job.id && attempt.pool == job.pool && (attempt.movable || attempt.preemptible) && !attempt.preempts
            && attempt.priority <= job.priority && now - attempt.startedAt >= minimumRuntimeSeconds
            && attempt.attempt < (attempt.maxAttempts ?? Int.max)
    }

    /// The fewest moves that let `job` start (nil when it fits already, when its pool lacks the free GPUs in
    /// all — then it waits for capacity, not for defragmentation — or when no plan within the limits
    /// makes room with every moved attempt fitting elsewhere).
    public func defragmentation(
        for job: PendingJob, on nodes: [NodeSnapshot], running: [RunningAttempt], now: Int64, limits: DefragmentationLimits
    ) -> DefragmentationPlan? {
        guard limits.moves > 0, job.perNode.gpuMilli > 0, !job.perNode.exclusive else { return nil }
        guard Self.neverFitsReason(job, nodes: nodes) == nil, self.place([job], on: nodes).placements.isEmpty else { return nil }
        let pool = nodes.indices.filter { nodes[$0].pool == job.pool && nodes[$0].state.acceptsWork }
        // Only where the pool has the free GPUs in all: scattered, not short.
        guard Self.freeMilli(for: job, in: pool, of: nodes) >= job.totalGPUMilli else { return nil }
        let movable = running.filter { Self.mayMove($0, for: job, now: now, minimumRuntimeSeconds: limits.minimumRuntimeSeconds) }
        var moversOn: [String: [RunningAttempt]] = [:]
        for a in movable {
            for node in Set(a.ranks.map(\.node)) { moversOn[node, default: []].append(a) }
        }
        // Per node that could take a rank once some movable work left: the fewest attempts to move.
        var costs: [(position: Int, moves: [RunningAttempt])] = []
        for p in pool {
            if Placer.reject(job, on: nodes[p]) == nil {
                costs.append((p, []))
            } else if let moves = Self.fewestMoves(for: job, on: nodes[p], from: moversOn[nodes[p].name] ?? [], limit: limits.moves) {
                costs.append((p, moves))
            }
        }
        // The options: for one node, every node that moves make room on; for a gang, per block where the pool
        // names blocks (else the whole pool), its nodes that need the fewest moves.
        var options: [(moves: [RunningAttempt], positions: [Int])] = []
        if job.nodes == 1 {
            for c in costs where !c.moves.isEmpty && c.moves.count <= limits.moves { options.append((c.moves, [c.position])) }
        }
        let blocks = job.nodes > 1 && pool.contains { nodes[$0].block != nil }
        var groups: [String: [(position: Int, moves: [RunningAttempt])]] = [:]
        for c in costs where job.nodes > 1 {
            if blocks && nodes[c.position].block == nil { continue }
            groups[blocks ? nodes[c.position].block! : "", default: []].append(c)
        }
        for members in groups.values {
            let cheapest = members.sorted { a, b in
                a.moves.count != b.moves.count ? a.moves.count < b.moves.count : nodes[a.position].name < nodes[b.position].name
            }
            .prefix(job.nodes)
            guard cheapest.count == job.nodes else { continue }
            var seen = Set<Int64>()
            let moves = cheapest.flatMap(\.moves).filter { seen.insert($0.jobID).inserted }
            guard !moves.isEmpty, moves.count <= limits.moves else { continue }
            options.append((moves, cheapest.map(\.position)))
        }
        options.sort { a, b in
            if a.moves.count != b.moves.count { return a.moves.count < b.moves.count }
            let (ma, mb) = (a.moves.reduce(0) { $0 + $1.totalGPUMilli }, b.moves.reduce(0) { $0 + $1.totalGPUMilli })
            if ma != mb { return ma < mb }
            return a.positions.map { nodes[$0].name }.lexicographicallyPrecedes(b.positions.map { nodes[$0].name })
        }
        // The first option whose moved work all fits elsewhere once the job holds its nodes.
        for option in options.prefix(8) {
            guard let plan = self.verify(job, taking: option.positions, moving: option.moves, on: nodes) else { continue }
            return plan
        }
        return nil
    }

    /// Free GPU thousandths of the models the job accepts on these nodes: whole free GPUs for whole-GPU work,
    /// every GPU's leftover for a share (leftovers too small each may add up to room once work moves).
    static func freeMilli(for job: PendingJob, in positions: [Int], of nodes: [NodeSnapshot]) -> Int {
        var free = 0
        for p in positions {
            for gpu in nodes[p].gpus where gpu.health.isSchedulable && job.accepts(gpu) {
                if job.perNode.fractionMilli != nil {
                    free += gpu.leftoverMilli
                } else if gpu.isFree {
                    free += 1000
                }
            }
        }
        return free
    }

    /// The smallest set of `movers` whose leaving lets one rank of `job` onto `node`: every subset by size up
    /// to `limit` while there are few (a node rarely runs more than a dozen attempts), else the largest first.
    static func fewestMoves(for job: PendingJob, on node: NodeSnapshot, from movers: [RunningAttempt], limit: Int) -> [RunningAttempt]? {
        guard !movers.isEmpty else { return nil }
        func fits(_ leaving: [RunningAttempt]) -> Bool {
            var freed = [node]
            for a in leaving { for r in a.ranks where r.node == node.name { freed.hold(r, at: 0, releasing: true) } }
            return Placer.reject(job, on: freed[0]) == nil
        }
        // Largest share of this node first: fewer moves free more.
        let ordered = movers.sorted { a, b in
            let (ga, gb) = (a.milli(on: node.name), b.milli(on: node.name))
            if ga != gb { return ga > gb }
            return a.startedAt != b.startedAt ? a.startedAt > b.startedAt : a.jobID < b.jobID
        }
        guard fits(ordered) else { return nil }
        if ordered.count <= 12 {
            for size in 1...min(limit, ordered.count) {
                var found: [RunningAttempt]?
                Self.subsets(of: ordered.count, size: size) { picked in
                    let set = picked.map { ordered[$0] }
                    if fits(set) { found = set }
                    return found != nil
                }
                if let found { return found }
            }
            return nil
        }
        var taken: [RunningAttempt] = []
        for a in ordered where !fits(taken) { taken.append(a) }
        return taken.count <= limit ? taken : nil
    }

    /// Visits every `size`-element subset of 0..<n in lexicographic order until `visit` returns true.
    static func subsets(of n: Int, size: Int, _ visit: ([Int]) -> Bool) {
        var picked = Array(0..<size)
        while true {
            if visit(picked) { return }
            var i = size - 1
            while i >= 0 && picked[i] == n - size + i { i -= 1 }
            if i < 0 { return }
            picked[i] += 1
            for j in (i + 1)..<size { picked[j] = picked[j - 1] + 1 }
        }
    }

    /// The plan, when the job fits on `positions` once `moves` have left and every moved attempt then fits on
    /// what is left of the pool (off the job's nodes).
    func verify(_ job: PendingJob, taking positions: [Int], moving moves: [RunningAttempt], on nodes: [NodeSnapshot]) -> DefragmentationPlan? {
        var freed = nodes
        for m in moves { Self.release(m, in: &freed) }
        var rank = 0
        for p in positions.sorted() {
            guard case .fits(let gpus) = Self.fit(job, on: freed[p]) else { return nil }
            let (cpu, memory) = Self.reservation(job.perNode, on: freed[p])
            let assignment = RankAssignment(
                rank: rank, node: freed[p].name, gpuIndices: gpus.map { freed[p].gpus[$0].index }, milliPerGPU: job.perNode.fractionMilli ?? 1000,
                cpuMilli: cpu, memoryMiB: memory)
            freed.hold(assignment, at: p)
            rank += 1
        }
        // Off the job's nodes: the scheduler sets them aside for it.
        let names = Set(positions.map { nodes[$0].name })
        let requeued = moves.map(\.asPending)
        guard self.place(requeued, on: freed.filter { !names.contains($0.name) }).placements.count == requeued.count else { return nil }
        return DefragmentationPlan(
            jobID: job.id, pool: job.pool,
            moves: moves.map { m in
                DefragmentationPlan.Move(jobID: m.jobID, attempt: m.attempt, from: Array(Set(m.ranks.map(\.node)).intersection(names)).sorted())
            },
            nodes: names.sorted())
    }
}

extension RunningAttempt {
    /// GPU thousandths it holds on one node.
    func milli(on node: String) -> Int {
        self.ranks.reduce(0) { $0 + ($1.node == node ? $1.gpuIndices.count * $1.milliPerGPU : 0) }
    }

    /// The attempt's job as the queue would hold it once requeued: its per-node request (as its first rank
    /// holds it where the store did not give it), models and priority.
    public var asPending: PendingJob {
        let first = self.ranks.first
        let request =
            self.perNode
            ?? NodeRequest(
                gpus: first.map { $0.milliPerGPU == 1000 ? $0.gpuIndices.count : 0 } ?? 0,
                fractionMilli: first.flatMap { $0.milliPerGPU < 1000 ? $0.milliPerGPU : nil }, cpuMilli: first?.cpuMilli ?? 0,
                memoryMiB: first?.memoryMiB ?? 0)
        var job = PendingJob(
            id: self.jobID, org: self.org, pool: self.pool, gpuModels: self.gpuModels, nodes: max(1, self.ranks.count), perNode: request,
            priority: self.priority, submittedAt: self.startedAt, timeLimitSeconds: self.endsAt.map { $0 - self.startedAt })
        job.migProfile = self.migProfile
        job.gpuMemoryMiB = self.gpuMemoryMiB
        job.isolatedShares = self.isolatedShares
        job.account = self.account
        return job
    }
}
