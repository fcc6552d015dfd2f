/// A live attempt as preemption sees it.
public struct RunningAttempt: Hashable, Sendable {
    public var jobID: Int64
    public var attempt: Int
    public var org: String
    public var pool: String
    /// Placed beyond its organisation's guarantee.
    public var borrowing: Bool
    /// Seconds since the epoch.
    public var startedAt: Int64
    public var ranks: [RankAssignment]
    /// When its time limit runs out (seconds since the epoch); nil without a time limit.
    public var endsAt: Int64?
    /// Its priority class is preemptible.
    public var preemptible: Bool = false
    /// Its priority class preempts others: work guaranteed its place, never moved.
    public var preempts: Bool = false
    /// Its job said it may be moved (it checkpoints): defragmentation may requeue it elsewhere.
    public var movable: Bool = false
    public var priority: Int = 0
    /// 1 for a job that is never requeued (`--no-requeue`), nil otherwise: an attempt that is its job's last is never moved.
    public var maxAttempts: Int?
    /// What its job asks per node and the models it accepts, to place it again when it is moved.
    public var perNode: NodeRequest?
    public var gpuModels: [String] = []
    /// Its job's MIG profile and least GPU memory, its pool's isolation of shares and its ranks' account, to place
    /// it again as it asked.
    public var migProfile: String?
    public var gpuMemoryMiB: Int?
    public var isolatedShares = false
    public var account: String?

    public init(
        jobID: Int64, attempt: Int, org: String, pool: String, borrowing: Bool, startedAt: Int64, ranks: [RankAssignment], endsAt: Int64? = nil
    ) {
        self.endsAt = endsAt
        self.jobID = jobID
        self.attempt = attempt
        self.org = org
        self.pool = pool
        self.borrowing = borrowing
        self.startedAt = startedAt
        self.ranks = ranks
    }

    public var totalGPUMilli: Int { self.ranks.reduce(0) { $0 + $1.gpuIndices.count * $1.milliPerGPU } }
}

extension Placer {
    /// Reclaim (SPEC §4.5): when `job` waits for capacity although its organisation is within its guarantee,
    /// the fewest borrowing attempts of other organisations in the pool — youngest first, none younger than
    /// `minimumRuntime` seconds — whose GPUs let the job fit. An organisation gives back at most what it
    /// borrows, so it keeps its own guarantee. Nil when no such set exists.
    public func reclaim(
        for job: PendingJob, on nodes: [NodeSnapshot], running: [RunningAttempt], book: QuotaBook, now: Int64, minimumRuntime: Int64 = 0
    ) -> [RunningAttempt]? {
        guard let owner = book[job.org, job.pool], owner.inUseMilli + job.totalGPUMilli <= owner.guaranteedMilli else { return nil }
        var lendable: [String: Int] = [:]
        for (key, e) in book.entries where key.pool == job.pool && key.org != job.org {
            lendable[key.org] = max(0, e.inUseMilli - e.guaranteedMilli)
        }
        let candidates =
            running
            .filter { $0.pool == job.pool && $0.org != job.org && $0.borrowing && now - $0.startedAt >= minimumRuntime }
            .sorted { $0.startedAt != $1.startedAt ? $0.startedAt > $1.startedAt : $0.jobID > $1.jobID }
            .filter { c in
                // An organisation gives back at most what it borrows.
                guard let room = lendable[c.org], c.totalGPUMilli <= room else { return false }
                lendable[c.org] = room - c.totalGPUMilli
                return true
            }
        return self.fewestVictims(for: job, on: nodes, from: candidates)
    }

    /// Preemption by class (SPEC §4.5): a job whose class `preempts` may stop preemptible or borrowing work of
    /// lower priority in its pool — borrowers first, then the youngest, none younger than `minimumRuntime`
    /// seconds, as few as make it fit. Nil when no such set exists.
    public func preemption(
        for job: PendingJob, on nodes: [NodeSnapshot], running: [RunningAttempt], now: Int64, minimumRuntime: Int64
    ) -> [RunningAttempt]? {
        guard job.preempts else { return nil }
        let candidates = running.filter {
            $0.pool == job.pool && ($0.preemptible || $0.borrowing) && $0.priority < job.priority && now - $0.startedAt >= minimumRuntime
        }
        .sorted { a, b in
            if a.borrowing != b.borrowing { return a.borrowing }
            return a.startedAt != b.startedAt ? a.startedAt > b.startedAt : a.jobID > b.jobID
        }
        return self.fewestVictims(for: job, on: nodes, from: candidates)
    }

    /// Releases candidates in order until the job fits, then gives back any whose release was not needed.
    func fewestVictims(for job: PendingJob, on nodes: [NodeSnapshot], from candidates: [RunningAttempt]) -> [RunningAttempt]? {
        var freed = nodes
        var victims: [RunningAttempt] = []
        var fits = self.fitsWhole(job, on: freed)
        for c in candidates where !fits {
            Self.release(c, in: &freed)
            victims.append(c)
            fits = self.fitsWhole(job, on: freed)
        }
        guard fits else { return nil }
        // Fewest victims: give back any whose release turns out not to be needed, oldest first.
        for v in victims.sorted(by: { $0.startedAt < $1.startedAt }) {
            var without = nodes
            for other in victims where other != v { Self.release(other, in: &without) }
            if self.fitsWhole(job, on: without) { victims.removeAll { $0 == v } }
        }
        return victims
    }

    /// When `job` could start if every running attempt ends at its time limit: now when it fits now, else the
    /// end of the running attempt after which it first fits (the reservation EASY backfill computes). Nil when
    /// it would not fit even then, or depends on jobs without time limits.
    public func estimatedStart(for job: PendingJob, on nodes: [NodeSnapshot], running: [RunningAttempt], now: Int64) -> Int64? {
        self.estimatedStarts(for: [job], on: nodes, running: running, now: now)[job.id] ?? nil
    }

    /// The same for several jobs, each on its own against the same cluster, which is indexed once for all.
    public func estimatedStarts(for jobs: [PendingJob], on nodes: [NodeSnapshot], running: [RunningAttempt], now: Int64) -> [Int64: Int64?] {
        let cluster = Cluster(nodes, book: ProfileBook(strategy: self.strategy, mix: WorkloadMix()))
        var out: [Int64: Int64?] = [:]
        for job in jobs {
            if Self.choose(job, shape: cluster.shape(of: job), in: cluster, excluding: nil) != nil {
                out[job.id] = now
            } else {
                out[job.id] = self.reserve(job, in: cluster, running: running, now: now)?.startsAt
            }
        }
        return out
    }

    private func fitsWhole(_ job: PendingJob, on nodes: [NodeSnapshot]) -> Bool {
        !self.place([job], on: nodes).placements.isEmpty
    }

    public static func release(_ attempt: RunningAttempt, in nodes: inout [NodeSnapshot]) {
        for r in attempt.ranks { nodes.hold(r, releasing: true) }
    }
}
