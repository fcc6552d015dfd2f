/// How the placer ranks the nodes that can take a rank. Chosen by policy; benchmarks compare them side by side.
public enum ScoringStrategy: String, CaseIterable, Sendable, Codable {
    /// Place where the expected unusable GPU capacity grows least, for the job shapes expected (learnt from
    /// the queue and recent history): fragmentation gradient descent (Weng et al., USENIX ATC'23). Ties go to
    /// best fit. The default.
    case fragmentationAware = "fragmentation-aware"
    /// Fill the node that is left with the least free capacity, keeping whole nodes free for big jobs.
    case bestFit = "best-fit"
    /// Take the first feasible node in name order.
    case firstFit = "first-fit"
    /// Take the node with the most free capacity (least allocated).
    case spread
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
    /// Job shapes expected besides those queued (recent history), for the fragmentation-aware strategy.
    public var expected: WorkloadMix

    public init(strategy: ScoringStrategy = .fragmentationAware, expected: WorkloadMix = WorkloadMix()) {
        self.strategy = strategy
        self.expected = expected
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
    ///
    /// Rejections are counted for the jobs that wait. Within one call capacity only shrinks, so a job of a
    /// shape that already failed fails again for the same reason: that answer is reused, not recomputed.
    ///
    /// `defragmenting` are the plans in progress: their nodes are set aside for their jobs, which no other job
    /// takes, and a job whose plan has not made room yet waits for it. Single-node work leaves the empty nodes
    /// of the blocks queued gangs would take alone while it fits elsewhere.
    public func place(
        _ queue: [PendingJob], on snapshot: [NodeSnapshot], quota: QuotaBook? = nil, backfill: Backfill? = nil,
        defragmenting: [DefragmentationPlan] = []
    ) -> Plan {
        let cluster = Cluster(snapshot, book: ProfileBook(strategy: self.strategy, mix: self.mix(for: queue)))
        return self.place(queue, in: consume cluster, quota: quota, backfill: backfill, defragmenting: defragmenting).plan
    }

    /// The work the fragmentation-aware strategy expects: recent history and the queue.
    func mix(for queue: [PendingJob]) -> WorkloadMix {
        self.strategy == .fragmentationAware ? self.expected.adding(queue) : WorkloadMix()
    }

    /// A cluster kept from one placement call to the next, for a replay that runs one call per event: what each
    /// call places is held in it, what ends is released, and its index of nodes by profile is kept — not built
    /// afresh from every node per event (half of a replay's time on a cluster of many node types). Every call
    /// decides exactly as `place(_:on:)` would on the same nodes.
    public struct Session {
        public let placer: Placer
        private var cluster: Cluster

        public init(placer: Placer, nodes: [NodeSnapshot]) {
            self.placer = placer
            self.cluster = Cluster(nodes, book: ProfileBook(strategy: placer.strategy, mix: placer.expected))
        }

        /// The nodes with what is held on them now, in name order.
        public var nodes: [NodeSnapshot] { self.cluster.nodes }

        /// Places what fits (as `Placer.place`), expecting `expected` besides the queue, and holds it.
        public mutating func place(_ queue: [PendingJob], expected: WorkloadMix) -> Plan {
            var placer = self.placer
            placer.expected = expected
            self.cluster.refresh(mix: placer.mix(for: queue))
            // Moved out and back, not copied: a copy would share its arrays and copy them whole at the first change.
            var owned = Cluster([], book: self.cluster.book)
            swap(&owned, &self.cluster)
            let (plan, after) = placer.place(queue, in: consume owned)
            self.cluster = after
            return plan
        }

        /// Frees what an ended rank held.
        public mutating func release(_ rank: RankAssignment) { self.cluster.hold(rank, releasing: true) }
    }

    /// Places in `cluster`, owned here (an `inout` one would be copied each time it is lent to a check below), and
    /// gives it back holding what was placed.
    private func place(
        _ queue: [PendingJob], in owned: consuming Cluster, quota: QuotaBook? = nil, backfill: Backfill? = nil,
        defragmenting: [DefragmentationPlan] = []
    ) -> (plan: Plan, cluster: Cluster) {
        var cluster = consume owned
        var book = quota
        var runningNow = backfill?.running ?? []
        var failed: [FailureKey: Waiting] = [:]
        var reserveTried: Set<FailureKey> = []
        var reservedPositions: [String: Set<Int>] = [:]
        var plans: [Int64: DefragmentationPlan] = [:]
        var setAside: [String: Set<Int>] = [:]
        for d in defragmenting {
            plans[d.jobID] = d
            for n in d.nodes { if let p = cluster.positionByName[n] { setAside[d.pool, default: []].insert(p) } }
        }
        let gangBlocks = cluster.gangBlocks(for: queue.lazy.filter { $0.nodes > 1 && plans[$0.id] == nil })
        var guardedFailed: Set<FailureKey> = []

        // Within one call capacity only shrinks: a shape that failed once fails again, for the same reason. A job
        // with a plan of its own sees nodes no other job does, so its answers are its own.
        // (The cluster is passed, not captured: a captured variable is boxed and copied at every use.)
        func attempt(_ job: PendingJob, in cluster: Cluster, excluding excluded: Set<Int>?, reserved: Bool) -> Result<[ChosenRank], Waiting> {
            if !plans.isEmpty && plans[job.id] != nil { return self.placeOne(job, in: cluster, excluding: excluded) }
            let key = FailureKey(job, restricted: reserved, in: cluster)
            if let known = failed[key] { return .failure(known) }
            let outcome = self.placeOne(job, in: cluster, excluding: excluded)
            if case .failure(let w) = outcome { failed[key] = w }
            return outcome
        }

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
            let reservation = plan.reservations[job.pool]
            // Nodes set aside for other jobs' defragmentation are never this job's.
            let base: Set<Int>? = setAside.isEmpty || plans[job.id] != nil ? nil : setAside[job.pool]
            var excluded = base
            var reserved = false
            var cutLimit: Int64?
            if let r = reservation, let b = backfill, b.now + (job.timeLimitSeconds ?? Int64.max / 2) > r.startsAt {
                // Would still run when the reservation starts: keep off its nodes.
                excluded = (reservedPositions[job.pool] ?? []).union(base ?? [])
                reserved = true
            }
            var outcome = attempt(job, in: cluster, excluding: excluded, reserved: reserved)
            // Off the empty nodes queued gangs would take, while it fits elsewhere. Only asked when the best node
            // is one of them: otherwise that node is the best of the others too. (A shape that did not fit so,
            // within this call, never will: capacity only shrinks.)
            if job.nodes == 1, !gangBlocks.isEmpty, let protected = gangBlocks[job.pool], case .success(let ranks) = outcome,
                let first = ranks.first, protected.contains(first.position)
            {
                // A job with a plan of its own sees its set-aside nodes too: its answers are not shared.
                let own = !plans.isEmpty && plans[job.id] != nil
                let key = FailureKey(job, restricted: reserved, in: cluster)
                if own || !guardedFailed.contains(key) {
                    let guarded = self.placeOne(job, in: cluster, excluding: excluded.map { protected.union($0) } ?? protected, explain: false)
                    if case .success = guarded { outcome = guarded } else if !own { guardedFailed.insert(key) }
                }
            }
            // Slurm's --time-min: where the full limit crosses the reservation but the shortest accepted one does not,
            // the job may run on the reserved nodes too, its limit cut to end as the reservation starts.
            if case .failure = outcome, reserved, let r = reservation, let b = backfill, let least = job.timeMinSeconds,
                b.now + least <= r.startsAt
            {
                var cut = job
                cut.timeLimitSeconds = min(job.timeLimitSeconds ?? Int64.max, r.startsAt - b.now)
                if case .success(let ranks) = attempt(cut, in: cluster, excluding: base, reserved: false) {
                    outcome = .success(ranks)
                    cutLimit = cut.timeLimitSeconds
                }
            }
            let limit = cutLimit ?? job.timeLimitSeconds
            switch outcome {
            case .success(let ranks):
                // An exclusive job holds every GPU of its nodes: admitted and charged for all of them. A MIG job is
                // charged its devices' shares, known once they are chosen.
                let held = ranks.reduce(0) { sum, r in
                    sum + r.gpuPositions.count * Self.milliPerGPU(job, on: cluster.nodes[r.position], at: r.gpuPositions)
                }
                if let q = book, held > job.totalGPUMilli {
                    switch q.admit(job, gpuMilli: held) {
                    case .waits(let reason):
                        plan.waiting[job.id] = reason
                        continue
                    case .admitted(let borrows): borrowing = borrows
                    }
                }
                var assignments: [RankAssignment] = []
                for r in ranks {
                    let node = cluster.nodes[r.position]
                    let (cpu, memory) = Self.reservation(job.perNode, on: node)
                    let assignment = RankAssignment(
                        rank: r.rank, node: node.name, gpuIndices: r.gpuPositions.map { node.gpus[$0].index },
                        milliPerGPU: Self.milliPerGPU(job, on: node, at: r.gpuPositions), cpuMilli: cpu, memoryMiB: memory)
                    assignments.append(assignment)
                    cluster.hold(assignment, for: job)
                }
                plan.placements.append(Placement(jobID: job.id, ranks: assignments, borrowing: borrowing, timeLimitSeconds: cutLimit))
                book?.charge(job, gpuMilli: job.migProfile != nil ? held : max(held, job.totalGPUMilli))
                if let b = backfill {
                    runningNow.append(
                        RunningAttempt(
                            jobID: job.id, attempt: 0, org: job.org, pool: job.pool, borrowing: borrowing, startedAt: b.now, ranks: assignments,
                            endsAt: limit.map { b.now + $0 }))
                }
            case .failure(let waiting):
                plan.waiting[job.id] = waiting.reason
                for (r, n) in waiting.rejections { plan.rejections[r, default: 0] += n }
                if !plans.isEmpty, let d = plans[job.id] {
                    // Its nodes are not free yet: the moved work is still stopping (unless something else holds it).
                    if case .capacity = waiting.reason { plan.waiting[job.id] = .defragmentation(d.summary) }
                    continue
                }
                guard let b = backfill else { continue }
                if let r = reservation {
                    if reserved {
                        // Say what holds it back: the reservation, or the cluster itself.
                        switch attempt(job, in: cluster, excluding: base, reserved: false) {
                        case .success: plan.waiting[job.id] = .reserved(forJob: r.jobID)
                        case .failure(let unrestricted): plan.waiting[job.id] = unrestricted.reason
                        }
                    }
                } else if case .capacity = waiting.reason,
                    reserveTried.insert(FailureKey(job, restricted: false, in: cluster)).inserted,
                    let r = self.reserve(job, in: cluster, running: runningNow, now: b.now, excluding: base)
                {
                    plan.reservations[job.pool] = r
                    reservedPositions[job.pool] = Set(r.nodes.compactMap { cluster.positionByName[$0] })
                }
            }
        }
        return (plan, cluster)
    }

    /// What decides whether a job fits, so jobs alike share one failure within a placement call: the time
    /// limit only where maintenance windows make it matter.
    private struct FailureKey: Hashable {
        var pool: String
        var gpuModels: [String]
        var nodes: Int
        var perNode: NodeRequest
        var timeLimitSeconds: Int64?
        var restricted: Bool
        var migProfile: String?
        var gpuMemoryMiB: Int?
        /// A share's organisation and account decide where it fits (pools that keep organisations apart, MPS).
        var shareOrg: String?
        var shareAccount: String?

        /// The time limit matters only in pools with maintenance windows; a share's organisation only where the pool
        /// keeps organisations apart, its account only where the pool has MPS nodes: elsewhere alike jobs share answers.
        init(_ job: PendingJob, restricted: Bool, in cluster: Cluster) {
            let timeMatters = cluster.poolsWithMaintenance.contains(job.pool)
            self.pool = job.pool
            self.gpuModels = job.gpuModels
            self.migProfile = job.migProfile
            self.gpuMemoryMiB = job.gpuMemoryMiB
            let share = job.perNode.fractionMilli != nil
            self.shareOrg = share && job.isolatedShares ? job.org : nil
            self.shareAccount = share && cluster.poolsWithMPS.contains(job.pool) ? job.account : nil
            self.nodes = job.nodes
            self.perNode = job.perNode
            self.timeLimitSeconds = timeMatters ? job.timeLimitSeconds : nil
            self.restricted = restricted
        }
    }

    /// The earliest time `job` fits if running attempts end at their time limits, and the nodes it takes then.
    func reserve(_ job: PendingJob, in cluster: Cluster, running: [RunningAttempt], now: Int64, excluding excluded: Set<Int>? = nil) -> Reservation? {
        var freed = cluster
        let shape = freed.shape(of: job)
        let ending = running.filter { $0.endsAt != nil && $0.pool == job.pool }.sorted { $0.endsAt! < $1.endsAt! }
        var i = 0
        while i < ending.count {
            // Everything that ends at one moment is freed together before looking again.
            let end = ending[i].endsAt!
            while i < ending.count && ending[i].endsAt! == end {
                for rank in ending[i].ranks { freed.hold(rank, releasing: true) }
                i += 1
            }
            if let chosen = Self.choose(job, shape: shape, in: freed, excluding: excluded) {
                return Reservation(jobID: job.id, startsAt: max(now, end), nodes: Set(chosen.map { freed.nodes[$0.position].name }))
            }
        }
        return nil
    }

    /// SPEC §4.1 with allocations: priority class, then the organisation's fair-share factor (decayed usage
    /// against its share, highest first), then its project's within it, then submit time.
    static func inFairShareOrder(_ a: PendingJob, _ b: PendingJob, _ book: QuotaBook) -> Bool {
        if a.priority != b.priority { return a.priority > b.priority }
        let (ea, eb) = (book[a.org, a.pool], book[b.org, b.pool])
        let (fa, fb) = (ea?.fairShare ?? -1, eb?.fairShare ?? -1)
        if fa != fb { return fa > fb }
        // Then the project's factor within its organisation (1 without one): one lexicographic key, so the
        // order stays a strict weak order across organisations whose factors tie.
        let (pa, pb) = (a.project.flatMap { ea?.projects[$0]?.fairShare } ?? 1, b.project.flatMap { eb?.projects[$0]?.fairShare } ?? 1)
        if pa != pb { return pa > pb }
        return self.inQueueOrder(a, b)
    }

    /// Checks whether `node` can take one rank of `job` now; on success, which GPUs (by position in `node.gpus`).
    /// `shareOn`, when given, names the GPU a share goes on (the first usable GPU it accepts), instead of the
    /// one whose leftover the share fits best.
    public static func fit(_ job: PendingJob, on node: NodeSnapshot, shareOn: ((GPUSlot) -> Bool)? = nil) -> NodeFit {
        if let rejection = self.reject(job, on: node) { return .rejected(rejection) }
        let request = job.perNode
        if request.gpuMilli == 0 && !request.exclusive { return .fits(gpuPositions: []) }
        var healthy: [Int] = []
        for (p, gpu) in node.gpus.enumerated() where job.accepts(gpu) && gpu.health.isSchedulable { healthy.append(p) }
        if let fraction = request.fractionMilli {
            healthy.removeAll { !job.mayShare(node.gpus[$0], on: node) }
            let chosen = shareOn.flatMap { on in healthy.first { on(node.gpus[$0]) } } ?? Self.pickShare(fraction, among: healthy, of: node)
            return .fits(gpuPositions: [chosen!])
        }
        var free = healthy.filter { node.gpus[$0].isFree }
        if job.migProfile != nil {
            // The devices of one rank charge alike (one claim size per rank): those of the charge most of them have
            // (`reject` counted the same).
            let charges = Dictionary(grouping: free) { node.gpus[$0].chargeMilli }
            if let most = charges.max(by: { a, b in a.value.count != b.value.count ? a.value.count < b.value.count : a.key > b.key }) {
                free = most.value
            }
        }
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
        // A MIG rank's devices charge alike (one claim size per rank): counted per charge.
        var freeByCharge: [Int: Int] = [:]
        // Most jobs ask any GPU that is not a MIG device: then a slot's fields are read where they lie, never copied
        // (the per-node check of every candidate node).
        let anyGPU = job.migProfile == nil && job.gpuMemoryMiB == nil && job.gpuModels.isEmpty
        for i in node.gpus.indices {
            if anyGPU ? node.gpus[i].isMIGDevice : !job.accepts(node.gpus[i]) { continue }
            acceptable += 1
            guard node.gpus[i].health.isSchedulable else { continue }
            healthy += 1
            if node.gpus[i].isFree {
                free += 1
                if job.migProfile != nil { freeByCharge[node.gpus[i].chargeMilli, default: 0] += 1 }
            }
            if let f = request.fractionMilli, node.gpus[i].leftoverMilli >= f, job.mayShare(node.gpus[i], on: node) { shareFits = true }
        }
        if job.migProfile != nil { free = freeByCharge.values.max() ?? 0 }
        if acceptable == 0 { return .gpuModel }
        if request.fractionMilli != nil { return shareFits ? nil : (healthy == 0 ? .gpuHealth : .gpuShare) }
        if request.exclusive || free >= request.gpus { return free >= request.gpus ? nil : .gpus }
        return healthy < request.gpus && acceptable >= request.gpus ? .gpuHealth : .gpus
    }

    /// Why no node of the pool could ever take the job, even empty, or nil when one could.
    /// Nodes whose agents have not reported GPUs yet are unknown and do not count against the job.
    public static func neverFitsReason(_ job: PendingJob, nodes: some Sequence<NodeSnapshot>) -> WaitReason? {
        self.neverFitsReason(job, shapes: nodes.lazy.map { NodeShape(node: $0, count: 1) })
    }

    /// The same, asked of the pool's nodes grouped by shape (`ClusterReader.nodeShapes`): a pool of 10,000 alike
    /// nodes is one fit, not 10,000, for every submission. It stops at the first nodes that could hold the job.
    public static func neverFitsReason(_ job: PendingJob, shapes: some Sequence<NodeShape>) -> WaitReason? {
        var inPool = false
        var couldFit = 0
        var rejection: Rejection?
        for shape in shapes where shape.node.pool == job.pool && !(shape.node.gpus.isEmpty && shape.node.cpuMilli == 0) {
            inPool = true
            var node = shape.node
            node.state = .ready
            node.maintenanceInSeconds = nil
            node.usedCPUMilli = 0
            node.usedMemoryMiB = 0
            for i in node.gpus.indices {
                node.gpus[i].usedMilli = 0
                node.gpus[i].health = .healthy
            }
            switch self.fit(job, on: node) {
            case .fits: couldFit += shape.count
            case .rejected(let r): rejection = rejection ?? r
            }
            if couldFit >= job.nodes { return nil }
        }
        if !inPool { return nil }
        let shape =
            job.perNode.fractionMilli.map { "\($0) milli of a GPU per node" }
            ?? job.migProfile.map { "\(job.perNode.gpus) MIG \($0) devices per node" } ?? "\(job.perNode.gpus) GPUs per node"
        let models =
            (job.gpuModels.isEmpty ? "" : " of model \(job.gpuModels.joined(separator: "|"))")
            + (job.gpuMemoryMiB.map { " with at least \($0 / 1024) GiB each" } ?? "")
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

    private struct Waiting: Error {
        var reason: WaitReason
        var rejections: [Rejection: Int] = [:]
    }

    /// One job's ranks, or why it waits (with `explain`: else the reason is left unworked out).
    private func placeOne(
        _ job: PendingJob, in cluster: Cluster, excluding excluded: Set<Int>?, explain: Bool = true
    ) -> Result<[ChosenRank], Waiting> {
        let candidates = cluster.poolMembers[job.pool] ?? []
        if candidates.isEmpty { return .failure(Waiting(reason: .emptyPool(pool: job.pool))) }
        if let chosen = Self.choose(job, shape: cluster.shape(of: job), in: cluster, excluding: excluded) {
            return .success(
                chosen.sorted { $0.position < $1.position }.enumerated().map { rank, c in
                    ChosenRank(rank: rank, position: c.position, gpuPositions: cluster.gpus(for: job, on: c))
                })
        }
        guard explain else { return .failure(Waiting(reason: .capacity(needed: job.nodes, feasible: 0, topRejection: nil))) }
        // It waits: look at every node of the pool once to say why.
        var found = 0
        var counts: [Rejection: Int] = [:]
        for position in candidates where excluded?.contains(position) != true {
            if let r = Self.reject(job, on: cluster.nodes[position]) { counts[r, default: 0] += 1 } else { found += 1 }
        }
        if let never = Self.neverFitsReason(job, nodes: candidates.lazy.map { cluster.nodes[$0] }) {
            return .failure(Waiting(reason: never, rejections: counts))
        }
        let top = counts.max { a, b in a.value != b.value ? a.value < b.value : a.key.rawValue > b.key.rawValue }?.key
        return .failure(Waiting(reason: .capacity(needed: job.nodes, feasible: found, topRejection: top), rejections: counts))
    }

    /// The nodes for every rank of `job`, or nil when not enough can take one now.
    static func choose(_ job: PendingJob, shape: Int, in cluster: Cluster, excluding excluded: Set<Int>?) -> [Cluster.Candidate]? {
        if job.nodes == 1 { return cluster.best(for: job, shape: shape, excluding: excluded).map { [$0] } }
        return cluster.gang(for: job, count: job.nodes, shape: shape, excluding: excluded)
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

    /// What a rank holds of each of its GPUs: a share, a MIG device's charge, or the whole GPU.
    static func milliPerGPU(_ job: PendingJob, on node: NodeSnapshot, at positions: [Int]) -> Int {
        if let f = job.perNode.fractionMilli { return f }
        if job.migProfile != nil, let p = positions.first { return node.gpus[p].chargeMilli }
        return 1000
    }

    /// The CPU and memory a rank reserves: what it asked, or the whole node's for exclusive and `allMemory` ranks.
    static func reservation(_ request: NodeRequest, on node: NodeSnapshot) -> (cpuMilli: Int, memoryMiB: Int) {
        (
            request.exclusive ? node.cpuMilli - node.usedCPUMilli : request.cpuMilli,
            request.exclusive || request.allMemory ? node.memoryMiB - node.usedMemoryMiB : request.memoryMiB
        )
    }
}
