/// How the placer ranks the nodes that can take a rank. Chosen by policy; benchmarks compare them side by side.
public enum ScoringStrategy: String, CaseIterable, Sendable, Codable {
    /// Fill the node that is left with the least free capacity, keeping whole nodes free for big jobs.
    case bestFit = "best-fit"
    /// Take the first feasible node in name order.
    case firstFit = "first-fit"
    /// Take the node with the most free capacity (least allocated).
    case spread

    /// Lower is better. `freeAfter` is the node's free GPU capacity in thousandths once the rank is placed,
    /// `position` its place in name order, so every strategy is deterministic.
    func score(freeAfterMilli: Int, position: Int) -> Int {
        switch self {
        case .bestFit: freeAfterMilli
        case .firstFit: position
        case .spread: -freeAfterMilli
        }
    }
}

/// The outcome of checking one node for one rank of a job.
public enum NodeFit: Hashable, Sendable {
    case fits(gpuPositions: [Int])
    case rejected(Rejection)
}

/// The placement core: a pure function from a queue and a cluster snapshot to a plan.
///
/// ```swift
/// let plan = Placer(strategy: .bestFit).place(queue, on: snapshot.nodes)
/// ```
/// Jobs go in order (priority, then submit time); each one either gets every rank placed, consuming
/// capacity on a private copy of the snapshot, or a `WaitReason`. No I/O, no clock, no randomness.
public struct Placer: Sendable {
    public var strategy: ScoringStrategy

    public init(strategy: ScoringStrategy = .bestFit) {
        self.strategy = strategy
    }

    /// The queue order of SPEC §4.1: higher priority first, then earlier submission, then lower id.
    public static func inQueueOrder(_ a: PendingJob, _ b: PendingJob) -> Bool {
        if a.priority != b.priority { return a.priority > b.priority }
        if a.submittedAt != b.submittedAt { return a.submittedAt < b.submittedAt }
        return a.id < b.id
    }

    /// Places what fits. With a `quota` book, jobs are also admitted by their organisation's allocation
    /// (limit, entitlement) and ordered by fair share among equal priorities; without one, by capacity alone.
    ///
    /// With `backfill` (the running attempts and the current time), EASY backfill applies per pool: the first
    /// job that waits for capacity gets a reservation — the earliest time it fits if running jobs end at their
    /// time limits, and the nodes it would take then — and later jobs start only where they cannot delay it:
    /// off those nodes, or ending before the reservation starts.
    public func place(_ queue: [PendingJob], on snapshot: [NodeSnapshot], quota: QuotaBook? = nil, backfill: Backfill? = nil) -> Plan {
        var nodes = snapshot.sorted { $0.name < $1.name }
        var byPool: [String: [Int]] = [:]
        for (i, node) in nodes.enumerated() { byPool[node.pool, default: []].append(i) }
        var book = quota
        var runningNow = backfill?.running ?? []

        var plan = Plan()
        let ordered = quota.map { q in queue.sorted { Self.inFairShareOrder($0, $1, q) } } ?? queue.sorted(by: Self.inQueueOrder)
        for job in ordered {
            var borrowing = false
            if let q = book {
                switch q.admit(job) {
                case .waits(let reason):
                    plan.waiting[job.id] = reason
                    continue
                case .admitted(let borrows): borrowing = borrows
                }
            }
            var candidates = byPool[job.pool] ?? []
            let reservation = plan.reservations[job.pool]
            var restricted = false
            if let r = reservation, let b = backfill, b.now + (job.timeLimitSeconds ?? Int64.max / 2) > r.startsAt {
                // Would still run when the reservation starts: keep off its nodes.
                candidates.removeAll { r.nodes.contains(nodes[$0].name) }
                restricted = true
            }
            switch self.placeOne(job, candidates: candidates, nodes: nodes, rejections: &plan.rejections) {
            case .success(let ranks):
                var assignments: [RankAssignment] = []
                for r in ranks {
                    let (cpu, memory) = Self.reservation(job.perNode, on: nodes[r.position])
                    assignments.append(
                        RankAssignment(
                            rank: r.rank, node: nodes[r.position].name, gpuIndices: r.gpuPositions.map { nodes[r.position].gpus[$0].index },
                            milliPerGPU: job.perNode.fractionMilli ?? 1000, cpuMilli: cpu, memoryMiB: memory))
                    Self.consume(r, of: job, in: &nodes[r.position])
                }
                plan.placements.append(Placement(jobID: job.id, ranks: assignments, borrowing: borrowing))
                book?.charge(job)
                if let b = backfill {
                    runningNow.append(
                        RunningAttempt(
                            jobID: job.id, attempt: 0, org: job.org, pool: job.pool, borrowing: borrowing, startedAt: b.now, ranks: assignments,
                            endsAt: job.timeLimitSeconds.map { b.now + $0 }))
                }
            case .failure(let reason):
                plan.waiting[job.id] = reason.reason
                guard let b = backfill else { continue }
                if let r = reservation {
                    if restricted {
                        // Say what holds it back: the reservation, or the cluster itself.
                        var scratch: [Rejection: Int] = [:]
                        switch self.placeOne(job, candidates: byPool[job.pool] ?? [], nodes: nodes, rejections: &scratch) {
                        case .success: plan.waiting[job.id] = .reserved(forJob: r.jobID)
                        case .failure(let unrestricted): plan.waiting[job.id] = unrestricted.reason
                        }
                    }
                } else if case .capacity = reason.reason, let r = self.reserve(job, nodes: nodes, running: runningNow, now: b.now) {
                    plan.reservations[job.pool] = r
                }
            }
        }
        return plan
    }

    /// The earliest time `job` fits if running attempts end at their time limits, and the nodes it takes then.
    func reserve(_ job: PendingJob, nodes: [NodeSnapshot], running: [RunningAttempt], now: Int64) -> Reservation? {
        var freed = nodes
        var ignored: [Rejection: Int] = [:]
        let candidates = freed.indices.filter { freed[$0].pool == job.pool }
        for r in running.filter({ $0.endsAt != nil && $0.pool == job.pool }).sorted(by: { $0.endsAt! < $1.endsAt! }) {
            Self.release(r, in: &freed)
            if case .success(let ranks) = self.placeOne(job, candidates: candidates, nodes: freed, rejections: &ignored) {
                return Reservation(jobID: job.id, startsAt: max(now, r.endsAt!), nodes: Set(ranks.map { freed[$0.position].name }))
            }
        }
        return nil
    }

    /// SPEC §4.1 with allocations: priority, then the organisation's share used (GPU-hours ÷ guarantee, lowest
    /// first), then submit time.
    static func inFairShareOrder(_ a: PendingJob, _ b: PendingJob, _ book: QuotaBook) -> Bool {
        if a.priority != b.priority { return a.priority > b.priority }
        let (sa, sb) = (book[a.org, a.pool]?.shareUsed ?? .infinity, book[b.org, b.pool]?.shareUsed ?? .infinity)
        if sa != sb { return sa < sb }
        return self.inQueueOrder(a, b)
    }

    /// Checks whether `node` can take one rank of `job` now; on success, which GPUs (by position in `node.gpus`).
    public static func fit(_ job: PendingJob, on node: NodeSnapshot) -> NodeFit {
        if let rejection = self.reject(job, on: node) { return .rejected(rejection) }
        let request = job.perNode
        if request.gpuMilli == 0 && !request.exclusive { return .fits(gpuPositions: []) }
        var healthy: [Int] = []
        for (p, gpu) in node.gpus.enumerated() where job.accepts(model: gpu.model) && gpu.health.isSchedulable { healthy.append(p) }
        if let fraction = request.fractionMilli { return .fits(gpuPositions: [Self.pickShare(fraction, among: healthy, of: node)!]) }
        let free = healthy.filter { node.gpus[$0].isFree }
        // An exclusive rank holds every usable GPU of the node, however many it asked for.
        return .fits(gpuPositions: request.exclusive ? free : Self.pickWhole(request.gpus, among: free, of: node))
    }

    /// Why `node` cannot take one rank of `job` now, or nil when it can. Counts only, no allocation: the
    /// placer calls it for every node of the pool, and `fit` picks GPUs only on the nodes chosen.
    public static func reject(_ job: PendingJob, on node: NodeSnapshot) -> Rejection? {
        // Cheap, node-wide checks first: most nodes of a busy pool fail here.
        guard node.pool == job.pool else { return .pool }
        guard node.state.acceptsWork else { return .nodeState }
        // A job must end before the node's next maintenance window; one without a time limit might not.
        if let window = node.maintenanceInSeconds, (job.timeLimitSeconds ?? .max) > window { return .maintenance }
        let request = job.perNode
        if request.exclusive && (node.usedCPUMilli > 0 || node.usedMemoryMiB > 0 || node.gpus.contains { $0.usedMilli > 0 }) {
            return .notIdle
        }
        if request.cpuMilli > node.cpuMilli - node.usedCPUMilli { return .cpu }
        if request.memoryMiB > node.memoryMiB - node.usedMemoryMiB { return .memory }
        if request.allMemory && node.usedMemoryMiB > 0 { return .memory }
        if request.gpuMilli == 0 && !request.exclusive { return nil }
        var acceptable = 0
        var healthy = 0
        var free = 0
        var shareFits = false
        for gpu in node.gpus where job.accepts(model: gpu.model) {
            acceptable += 1
            guard gpu.health.isSchedulable else { continue }
            healthy += 1
            if gpu.isFree { free += 1 }
            if let f = request.fractionMilli, gpu.leftoverMilli >= f { shareFits = true }
        }
        if acceptable == 0 { return .gpuModel }
        if request.fractionMilli != nil { return shareFits ? nil : (healthy == 0 ? .gpuHealth : .gpuShare) }
        if request.exclusive || free >= request.gpus { return free >= request.gpus ? nil : .gpus }
        return healthy < request.gpus && acceptable >= request.gpus ? .gpuHealth : .gpus
    }

    /// Why no node of the pool could ever take the job, even empty, or nil when one could.
    /// Nodes whose agents have not reported GPUs yet are unknown and do not count against the job.
    public static func neverFitsReason(_ job: PendingJob, nodes: [NodeSnapshot]) -> WaitReason? {
        let pool = nodes.filter { $0.pool == job.pool && !($0.gpus.isEmpty && $0.cpuMilli == 0) }
        if pool.isEmpty { return nil }
        var couldFit = 0
        var rejection: Rejection?
        for var node in pool {
            node.state = .ready
            node.maintenanceInSeconds = nil
            node.usedCPUMilli = 0
            node.usedMemoryMiB = 0
            for i in node.gpus.indices {
                node.gpus[i].usedMilli = 0
                node.gpus[i].health = .healthy
            }
            switch self.fit(job, on: node) {
            case .fits: couldFit += 1
            case .rejected(let r): rejection = rejection ?? r
            }
        }
        if couldFit >= job.nodes { return nil }
        let shape = job.perNode.fractionMilli.map { "\($0) milli of a GPU per node" } ?? "\(job.perNode.gpus) GPUs per node"
        let models = job.gpuModels.isEmpty ? "" : " of model \(job.gpuModels.joined(separator: "|"))"
        let extra =
            job.perNode.cpuMilli > 0 || job.perNode.memoryMiB > 0
            ? " with \(job.perNode.cpuMilli / 1000) CPUs and \(job.perNode.memoryMiB) MiB" : ""
        if couldFit == 0 {
            let why = rejection.map { " (\($0.rawValue))" } ?? ""
            return .neverFits(pool: job.pool, detail: "\(shape)\(models)\(extra)\(why)")
        }
        return .neverFits(pool: job.pool, detail: "a gang of \(job.nodes) nodes with \(shape)\(models): only \(couldFit) nodes could")
    }

    // MARK: - One job

    private struct ChosenRank {
        var rank: Int
        var position: Int
        var gpuPositions: [Int]
    }

    private struct Waiting: Error { var reason: WaitReason }

    private struct Candidate {
        var position: Int
        var score: Int
        var block: String?
    }

    private func placeOne(
        _ job: PendingJob, candidates: [Int], nodes: [NodeSnapshot], rejections: inout [Rejection: Int]
    ) -> Result<[ChosenRank], Waiting> {
        if candidates.isEmpty { return .failure(Waiting(reason: .emptyPool(pool: job.pool))) }
        var feasible: [Candidate] = []
        var best: Candidate?
        var found = 0
        var counts: [Rejection: Int] = [:]
        for position in candidates {
            let node = nodes[position]
            if let r = Self.reject(job, on: node) {
                counts[r, default: 0] += 1
                continue
            }
            found += 1
            let freeAfter = job.perNode.exclusive ? 0 : Self.freeMilli(node) - job.perNode.gpuMilli
            let c = Candidate(position: position, score: self.strategy.score(freeAfterMilli: freeAfter, position: position), block: node.block)
            // A single rank needs only the best node; a gang needs them all to choose a block.
            if job.nodes == 1 {
                if best.map({ c.score < $0.score || (c.score == $0.score && c.position < $0.position) }) ?? true { best = c }
            } else {
                feasible.append(c)
            }
        }
        for (r, n) in counts { rejections[r, default: 0] += n }
        guard found >= job.nodes else {
            if let never = Self.neverFitsReason(job, nodes: candidates.map { nodes[$0] }) {
                return .failure(Waiting(reason: never))
            }
            let top = counts.max { a, b in a.value != b.value ? a.value < b.value : a.key.rawValue > b.key.rawValue }?.key
            return .failure(Waiting(reason: .capacity(needed: job.nodes, feasible: found, topRejection: top)))
        }
        let chosen = job.nodes == 1 ? [best!] : Self.chooseGang(job.nodes, from: feasible)
        return .success(
            chosen.sorted { $0.position < $1.position }.enumerated().map { rank, c in
                guard case .fits(let gpus) = Self.fit(job, on: nodes[c.position]) else { preconditionFailure("reject and fit disagree") }
                return ChosenRank(rank: rank, position: c.position, gpuPositions: gpus)
            })
    }

    /// Picks `count` distinct nodes: the best-scoring ones inside a single block when one block has enough,
    /// else the best-scoring ones overall. A single rank is a gang of one.
    private static func chooseGang(_ count: Int, from feasible: [Candidate]) -> [Candidate] {
        let ranked = feasible.sorted { $0.score != $1.score ? $0.score < $1.score : $0.position < $1.position }
        if count == 1 { return [ranked[0]] }
        var byBlock: [String: [Candidate]] = [:]
        for c in ranked { if let b = c.block { byBlock[b, default: []].append(c) } }
        let inOneBlock = byBlock.values
            .filter { $0.count >= count }
            .map { Array($0.prefix(count)) }
            .min { a, b in
                let (sa, sb) = (a.reduce(0) { $0 + $1.score }, b.reduce(0) { $0 + $1.score })
                return sa != sb ? sa < sb : a[0].position < b[0].position
            }
        return inOneBlock ?? Array(ranked.prefix(count))
    }

    // MARK: - GPUs within a node

    /// Chooses `count` free GPUs, inside one NVLink domain when one has enough: the smallest such domain,
    /// so larger domains stay whole for larger jobs. Otherwise spans domains, largest first.
    static func pickWhole(_ count: Int, among free: [Int], of node: NodeSnapshot) -> [Int] {
        var domains: [Int: [Int]] = [:]
        for p in free { domains[node.gpus[p].nvlinkDomain ?? -1, default: []].append(p) }
        if let best = domains.values.filter({ $0.count >= count }).min(by: { a, b in
            a.count != b.count ? a.count < b.count : a[0] < b[0]
        }) {
            return Array(best.prefix(count))
        }
        let largestFirst = domains.values.sorted { a, b in a.count != b.count ? a.count > b.count : a[0] < b[0] }
        return Array(largestFirst.joined().prefix(count))
    }

    /// Chooses the GPU whose leftover the share fits best, so shared GPUs fill up before free ones are cut.
    static func pickShare(_ milli: Int, among healthy: [Int], of node: NodeSnapshot) -> Int? {
        healthy
            .filter { node.gpus[$0].leftoverMilli >= milli }
            .min { a, b in
                let (la, lb) = (node.gpus[a].leftoverMilli, node.gpus[b].leftoverMilli)
                return la != lb ? la < lb : a < b
            }
    }

    private static func freeMilli(_ node: NodeSnapshot) -> Int {
        node.gpus.reduce(0) { $0 + ($1.health.isSchedulable ? $1.leftoverMilli : 0) }
    }

    /// The CPU and memory a rank reserves: what it asked, or the whole node's for exclusive and `allMemory` ranks.
    static func reservation(_ request: NodeRequest, on node: NodeSnapshot) -> (cpuMilli: Int, memoryMiB: Int) {
        (
            request.exclusive ? node.cpuMilli - node.usedCPUMilli : request.cpuMilli,
            request.exclusive || request.allMemory ? node.memoryMiB - node.usedMemoryMiB : request.memoryMiB
        )
    }

    private static func consume(_ rank: ChosenRank, of job: PendingJob, in node: inout NodeSnapshot) {
        let (cpu, memory) = self.reservation(job.perNode, on: node)
        node.usedCPUMilli += cpu
        node.usedMemoryMiB += memory
        let milli = job.perNode.fractionMilli ?? 1000
        for p in rank.gpuPositions { node.gpus[p].usedMilli += milli }
    }
}
