public import AllotCore
import Foundation
import Logging
import PostgresNIO

/// The cluster as one scheduling cycle sees it: everything read in one REPEATABLE READ transaction, so
/// placement, reclaim and estimates reason over the same instant.
public struct SchedulingSnapshot: Sendable {
    /// Queued jobs, in queue order.
    public var queue: [PendingJob]
    /// Inference jobs to start elsewhere before their draining node stops them.
    public var replacements: [PendingJob]
    /// Replicas of running services whose node was lost: each needs a node of its own again.
    public var relocations: [Relocation] = []
    public var nodes: [NodeSnapshot]
    public var quota: QuotaBook
    /// Live attempts not being stopped.
    public var running: [RunningAttempt]
    /// Pools where preempted attempts are still stopping.
    public var poolsReclaiming: Set<String>
    /// The database's clock at the snapshot, in seconds since the epoch.
    public var now: Int64
    /// Defragmentation plans in progress: their nodes are set aside for their jobs.
    public var defragmenting: [DefragmentationPlan] = []
    /// Per pool, the attempts defragmentation may still move this hour; and how long one must have run first.
    public var defragmentMovesLeft: [String: Int] = [:]
    public var defragmentMinimumRuntimeSeconds: Int64 = 600
}

/// A replica of a running service that lost its node: its job's shape for one node, and the nodes its service's
/// other replicas hold (each replica runs on a node of its own).
public struct Relocation: Sendable, Hashable {
    public var job: PendingJob
    public var attempt: Int
    public var rank: Int
    public var avoid: Set<String>
}

/// What a committed plan placed.
public struct CommittedPlan: Sendable, Hashable {
    /// Jobs placed from the queue.
    public var placed: [Int64]
    /// Jobs given a replacement attempt.
    public var replaced: [Int64]
}

/// What the scheduling cycle reads (a snapshot) and writes (a plan, preemptions, estimates, time limits).
public struct SchedulerStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// What keeps queued jobs from starting whatever the capacity, looked at before each cycle's snapshot:
    /// dependencies (met ones are cleared, ones that can never be met end their job, Slurm's
    /// DependencyNeverSatisfied) and arrays at their `%` limit, whose waiting tasks say so. Returns the jobs it ended.
    @discardableResult
    public func resolveWaits() async throws -> [Int64] {
        try await self.database.transaction { tx in
            // Defragmentation plans that can no longer do their work give their nodes back.
            for stale in try await tx.defragmentations.endStale() {
                try await tx.audit.append(
                    AuditEntry(
                        actor: .scheduler, action: "job.defragment.\(stale.outcome)", target: "job/\(stale.job)",
                        outcome: "plan \(stale.id) \(stale.outcome)",
                        detail: [:]))
            }
            var ended: [Int64] = []
            let rows = try await tx.query(
                """
                SELECT id, dependency, name, owner, org FROM jobs
                WHERE state = 'queued' AND dependency IS NOT NULL AND NOT cancel_requested AND held_by IS NULL
                ORDER BY id LIMIT 5000 FOR UPDATE SKIP LOCKED
                """)
            var waiting: [(id: Int64, dependency: JobDependency, name: String, owner: String, org: String)] = []
            for try await (id, text, name, owner, org) in rows.decode((Int64, String, String, String, String).self) {
                guard case .success(let d) = JobDependency.parse(text) else { continue }
                waiting.append((id, d, name, owner, org))
            }
            guard !waiting.isEmpty else {
                try await tx.jobs.recordArrayLimitReasons()
                try await tx.jobs.recordBeginTimeReasons()
                return []
            }
            let named = Set(waiting.flatMap(\.dependency.jobs))
            // Each named job, and under an array's id every task of the array.
            var states: [Int64: [JobDependency.Depended]] = [:]
            let depended = try await tx.query(
                """
                SELECT j.id, j.array_job_id, j.state::text, (SELECT min(a.started_at) FROM attempts a WHERE a.job_id = j.id), j.ended_at
                FROM jobs j WHERE j.id = ANY(\(Array(named))) OR j.array_job_id = ANY(\(Array(named)))
                """)
            for try await (id, array, state, started, endedAt) in depended.decode((Int64, Int64?, String, Date?, Date?).self) {
                let d = JobDependency.Depended(state: try decoded(state, "jobs.state"), startedAt: started, endedAt: endedAt)
                if let array, named.contains(array) { states[array, default: []].append(d) }
                if named.contains(id) && array != id { states[id, default: []].append(d) }
            }
            let now = try await tx.now()
            var reasons: [Int64: WaitReason] = [:]
            for job in waiting {
                var singletonBlocked = false
                if job.dependency.conditions.contains(where: { $0.kind == .singleton }) {
                    singletonBlocked =
                        try await tx.query(
                            """
                            SELECT 1 FROM jobs WHERE name = \(job.name) AND owner = \(job.owner) AND org = \(job.org) AND id < \(job.id)
                              AND state NOT IN ('succeeded', 'failed', 'cancelled') LIMIT 1
                            """
                        ).decode(Int.self).first { _ in true } != nil
                }
                switch job.dependency.evaluate(states, singletonBlocked: singletonBlocked, now: now) {
                case .satisfied:
                    try await tx.jobs.dependencyMet(job.id)
                case .waiting(let what):
                    reasons[job.id] = .dependency(what)
                case .never(let why):
                    _ = try await tx.transitions.job(job.id, .neverRuns(reason: "DependencyNeverSatisfied: \(why) (--dependency=\(job.dependency))"))
                    ended.append(job.id)
                }
            }
            try await tx.jobs.recordWaitReasons(reasons)
            try await tx.jobs.recordArrayLimitReasons()
            try await tx.jobs.recordBeginTimeReasons()
            return ended
        }
    }

    /// One consistent snapshot of everything a cycle decides on. With nothing queued and nothing to replace
    /// there is nothing to decide: the cluster itself is not read.
    /// With a `cache`, only the nodes changed since it was last read are read again.
    public func snapshot(cache: ClusterCache? = nil) async throws -> SchedulingSnapshot {
        try await self.database.transaction(.repeatableRead) { tx in
            let cluster = ClusterReader(tx: tx)
            let clock = try await tx.now()
            let now = Int64(clock.timeIntervalSince1970)
            let queue = try await cluster.queue()
            let replacements = try await cluster.replacementsNeeded()
            let relocations = try await cluster.relocationsNeeded()
            if queue.isEmpty && replacements.isEmpty && relocations.isEmpty {
                return SchedulingSnapshot(queue: [], replacements: [], nodes: [], quota: QuotaBook(), running: [], poolsReclaiming: [], now: now)
            }
            let nodes =
                if let cache { try await cluster.nodeSnapshots(cache: cache, epoch: self.database.fence?.epoch) } else {
                    try await cluster.nodeSnapshots()
                }
            var snapshot = SchedulingSnapshot(
                queue: queue, replacements: replacements, nodes: nodes,
                quota: QuotaBook(rows: try await QuotaStore.rows(in: tx, at: clock), now: clock),
                running: try await cluster.running(), poolsReclaiming: try await cluster.poolsReclaiming(), now: now)
            snapshot.relocations = relocations
            snapshot.defragmenting = try await tx.defragmentations.open()
            (snapshot.defragmentMovesLeft, snapshot.defragmentMinimumRuntimeSeconds) = try await tx.defragmentations.limits(
                pools: Set(queue.map(\.pool)))
            return snapshot
        }
    }

    /// Deletes the changes `cache` has read (those visible in the snapshot it was last read in); when it holds
    /// nothing it may use (the next read is whole), those older than ten minutes. Only the leader deletes (the
    /// fence refuses others), and a cache kept under another term is read whole again.
    public func forgetChanges(readBy cache: ClusterCache) async throws {
        let horizon = cache.horizon
        try await self.database.transaction { tx in
            try await tx.query(
                """
                DELETE FROM cluster_changes
                WHERE CASE WHEN \(horizon)::pg_snapshot IS NULL THEN at < now() - interval '10 minutes'
                           ELSE pg_visible_in_snapshot(xid, \(horizon)::pg_snapshot) END
                """)
        }
    }

    /// Gives a moved replica its new node and GPUs; false when the database refuses them (a GPU claimed meanwhile).
    public func relocate(_ r: Relocation, to rank: RankAssignment) async throws -> Bool {
        do {
            return try await self.database.transaction { tx in
                guard try await tx.jobs.lock(r.job.id), try await tx.attempts.relocate(r.job.id, r.attempt, to: rank) else { return false }
                try await tx.audit.append(
                    AuditEntry(
                        actor: .scheduler, action: "replica.move", target: "job/\(r.job.id)/attempt/\(r.attempt)/rank/\(r.rank)",
                        outcome: "to \(rank.node)", detail: ["gpus": rank.gpuIndices.map(String.init).joined(separator: ",")]))
                return true
            }
        } catch let error as PSQLError where error.sqlState?.hasPrefix("23") == true {
            return false
        }
    }

    /// Nodes whose agents have reported, with what live attempts hold on them.
    public func nodeSnapshots(pool: String? = nil) async throws -> [NodeSnapshot] {
        try await self.database.read { tx in try await ClusterReader(tx: tx).nodeSnapshots(pool: pool) }
    }

    /// The same through `cache`: only the nodes changed since it was last read are read again.
    public func nodeSnapshots(cache: ClusterCache) async throws -> [NodeSnapshot] {
        try await self.database.transaction(.repeatableRead) { tx in
            try await ClusterReader(tx: tx).nodeSnapshots(cache: cache, epoch: self.database.fence?.epoch)
        }
    }

    /// Queued jobs in queue order.
    public func queue() async throws -> [PendingJob] {
        try await self.database.read { tx in try await ClusterReader(tx: tx).queue() }
    }

    /// Live attempts not being stopped, with where they run.
    public func running() async throws -> [RunningAttempt] {
        try await self.database.read { tx in try await ClusterReader(tx: tx).running() }
    }

    /// The job shapes placed in the last `hours`: the history the fragmentation-aware strategy learns from.
    public func recentShapes(hours: Int = 24, limit: Int = 5000) async throws -> WorkloadMix {
        try await self.database.read { tx in try await ClusterReader(tx: tx).recentShapes(hours: hours, limit: limit) }
    }

    /// Commits a plan in one transaction: replacement attempts, then placements, each in a savepoint of its own
    /// so that one the database refuses (the job was cancelled, a node left, a GPU was claimed meanwhile) is
    /// skipped and the rest stand; then the wait reasons of the jobs left queued.
    @discardableResult
    public func commit(_ plan: Plan, replacing replacements: [Placement] = []) async throws -> CommittedPlan {
        if plan.placements.isEmpty && plan.waiting.isEmpty && replacements.isEmpty { return CommittedPlan(placed: [], replaced: []) }
        return try await self.database.transaction { tx in
            let replaced = try await self.insertEach(replacements, replacing: true, in: tx)
            var placed = try await self.insertTogether(plan.placements, in: tx)
            if placed == nil { placed = try await self.insertEach(plan.placements, replacing: false, in: tx) }
            try await tx.jobs.recordWaitReasons(plan.waiting)
            return CommittedPlan(placed: placed ?? [], replaced: replaced)
        }
    }

    private func insertEach(_ placements: [Placement], replacing: Bool, in tx: Transaction) async throws -> [Int64] {
        var placed: [Int64] = []
        for placement in placements {
            try await tx.savepoint("placement")
            do {
                if try await self.insert(placement, replacing: replacing, in: tx) {
                    placed.append(placement.jobID)
                    try await tx.release("placement")
                } else {
                    try await tx.rollback(to: "placement")
                }
            } catch let error as PSQLError {
                try await tx.rollback(to: "placement")
                self.database.logger.debug(
                    "placement refused by the database",
                    metadata: [
                        "job": "\(placement.jobID)", "constraint": "\(error.constraint ?? "-")", "message": "\(error.serverMessage ?? "\(error)")",
                    ])
            } catch StoreError.conflict(let why) {
                try await tx.rollback(to: "placement")
                self.database.logger.debug("placement skipped", metadata: ["job": "\(placement.jobID)", "why": "\(why)"])
            }
        }
        return placed
    }

    private func insert(_ placement: Placement, replacing: Bool, in tx: Transaction) async throws -> Bool {
        let id = placement.jobID
        var replaces: Int?
        if replacing {
            guard let current = try await tx.attempts.replaceable(id) else { return false }
            replaces = current
        }
        let job = try await tx.transitions.job(id, replacing ? .replacementPlaced : .placed)
        guard try await tx.nodes.readyCount(Array(Set(placement.ranks.map(\.node)))) == Set(placement.ranks.map(\.node)).count else { return false }
        try await tx.attempts.insert(placement, number: job.attempts, replaces: replaces)
        if let cut = placement.timeLimitSeconds { try await tx.jobs.cutTimeLimit(id, to: cut) }
        try await tx.reclaims.satisfy(jobs: [id])
        let plan = try await tx.defragmentations.satisfy(jobs: [id])[id]
        try await tx.audit.append(Self.placed(placement, attempt: job.attempts, plan: plan))
        return true
    }

    /// The audit records of a placement: the defragmentation plan it ended, if any, and where its ranks went.
    private static func placed(_ placement: Placement, attempt: Int, plan: Int64?) -> [AuditEntry] {
        let id = placement.jobID
        let detail = placement.ranks.map { "\($0.node):\($0.gpuIndices.map(String.init).joined(separator: ","))" }.joined(separator: " ")
        var entries: [AuditEntry] = []
        if let plan {
            entries.append(
                AuditEntry(actor: .scheduler, action: "job.defragment.placed", target: "job/\(id)", outcome: "plan \(plan) placed", detail: [:]))
        }
        entries.append(
            AuditEntry(actor: .scheduler, action: "job.place", target: "job/\(id)", outcome: "attempt \(attempt)", detail: ["ranks": detail]))
        return entries
    }

    /// Placements stored together — the same rows and audit records as `insertEach` would store, with one statement
    /// per table for them all (only each attempt's own row goes alone: its rendezvous port looks at those before
    /// it): a cycle's commit was about ten round trips per placement. Under one savepoint: a job no longer queued, a
    /// node no longer ready, anything the database refuses (a GPU claimed meanwhile) undoes them all, and nil sends
    /// them through `insertEach`, where only the refused one is skipped.
    private func insertTogether(_ placements: [Placement], in tx: Transaction) async throws -> [Int64]? {
        let ids = placements.map(\.jobID)
        guard placements.count > 1, Set(ids).count == ids.count else { return nil }
        try await tx.savepoint("together")
        func apart() async throws -> [Int64]? {
            try await tx.rollback(to: "together")
            try await tx.release("together")
            return nil
        }
        do {
            // Nodes first, then jobs, as a report locks them.
            let nodes = Array(Set(placements.flatMap { $0.ranks.map(\.node) }))
            guard try await tx.nodes.readyCount(nodes) == nodes.count else { return try await apart() }
            var jobs = try await tx.jobs.lifecycles(ids)
            let now = try await tx.now()
            var audits: [Int64: [AuditEntry]] = [:]
            for id in ids {
                guard var job = jobs[id], let actions = try? job.apply(.placed, now: now) else { return try await apart() }
                var entries: [AuditEntry] = []
                for action in actions {
                    guard case .audit(let entry) = action else { return try await apart() }
                    entries.append(entry)
                }
                (jobs[id], audits[id]) = (job, entries)
            }
            let placed = ids.compactMap { jobs[$0] }
            try await tx.jobs.save(placed)
            let numbered = placements.compactMap { p in jobs[p.jobID].map { (placement: p, number: $0.attempts) } }
            for (p, number) in numbered { try await tx.attempts.insertAttempt(p, number: number, replaces: nil) }
            try await tx.attempts.insertRanks(numbered)
            for p in placements { if let cut = p.timeLimitSeconds { try await tx.jobs.cutTimeLimit(p.jobID, to: cut) } }
            try await tx.reclaims.satisfy(jobs: ids)
            let plans = try await tx.defragmentations.satisfy(jobs: ids)
            for (p, number) in numbered { try await tx.audit.append((audits[p.jobID] ?? []) + Self.placed(p, attempt: number, plan: plans[p.jobID])) }
            try await tx.release("together")
            return ids
        } catch is PSQLError {
            return try await apart()
        } catch StoreError.conflict {
            return try await apart()
        }
    }

    /// Preempts `victims` so that `job` gets its organisation's guarantee back (or, `byClass`, because its class
    /// preempts theirs): each gets SIGTERM and its grace period, then is requeued. A reclaim is recorded, and
    /// timed once the job is placed.
    public func preempt(_ victims: [RunningAttempt], for job: PendingJob, byClass: Bool = false) async throws {
        try await self.database.transaction { tx in
            // A reclaim is due by the policy's deadline: its victims' grace fits inside it.
            let grace =
                byClass
                ? nil
                : try await tx.reclaims.insert(
                    job: job.id, org: job.org, pool: job.pool, gpus: Double(job.totalGPUMilli) / 1000, victims: victims.map(\.jobID))
            for v in victims {
                try await tx.transitions.attempt(
                    v.jobID, v.attempt,
                    .stop(
                        endAs: .preempted,
                        reason: byClass
                            ? "preempted by job \(job.id), whose priority class preempts this one's"
                            : "preempted: \(job.org) reclaims its guaranteed GPUs in pool \(job.pool) (for job \(job.id))"))
                if let grace { try await tx.attempts.boundStopGrace(v.jobID, v.attempt, seconds: grace) }
            }
            try await tx.audit.append(
                AuditEntry(
                    actor: .scheduler, action: "job.preempt", target: "job/\(job.id)", outcome: "reclaim for \(job.org)",
                    detail: ["victims": victims.map { "\($0.jobID).\($0.attempt)" }.joined(separator: ",")]))
        }
    }

    /// Carries out a defragmentation plan for `job`: records it (unless the pool has one open already, then
    /// nothing happens and false comes back), asks each moved attempt to stop — SIGTERM and its grace, then it is
    /// requeued keeping its submit time — says so on the job, and audits the plan.
    @discardableResult
    public func defragment(_ plan: DefragmentationPlan, for job: PendingJob) async throws -> Bool {
        try await self.database.transaction { tx in
            guard let id = try await tx.defragmentations.insert(plan) else { return false }
            for m in plan.moves {
                try await tx.transitions.attempt(
                    m.jobID, m.attempt,
                    .stop(
                        endAs: .preempted,
                        reason:
                            "moved by defragmentation: making room for job \(job.id) on \(plan.nodes.joined(separator: ", ")) in pool \(plan.pool); requeued keeping its submit time"
                    ))
            }
            try await tx.jobs.recordWaitReasons([job.id: .defragmentation(plan.summary)])
            try await tx.audit.append(
                AuditEntry(
                    actor: .scheduler, action: "job.defragment", target: "job/\(job.id)", outcome: "plan \(id): \(plan.summary)",
                    detail: [
                        "pool": plan.pool, "nodes": plan.nodes.joined(separator: ","),
                        "moves": plan.moves.map { "\($0.jobID).\($0.attempt)" }.joined(separator: ","),
                    ]))
            return true
        }
    }

    /// Records when waiting jobs are expected to start (nil where it cannot be told).
    public func recordEstimates(_ estimates: [Int64: Int64?]) async throws {
        guard !estimates.isEmpty else { return }
        try await self.database.transaction { tx in try await tx.jobs.recordEstimates(estimates) }
    }

    /// Stops attempts that ran past their job's time limit (SIGTERM, grace, SIGKILL); they end `failed`, with
    /// the reason saying so, as Slurm's TIMEOUT does. Backfill relies on jobs ending by their limits.
    public func stopOverdue() async throws {
        try await self.database.transaction { tx in
            for overdue in try await tx.attempts.overdue() {
                try await tx.transitions.attempt(
                    overdue.job, overdue.number, .stop(endAs: .failed, reason: "timeout: the time limit of \(overdue.limit)s was reached"))
            }
        }
    }
}

extension QuotaBook {
    /// Admission's view of the quota rows: guarantee, limit, GPUs held, entitlement neither used nor reserved
    /// by live attempts, time left in the period, fair-share factor.
    init(rows: [QuotaRow], now: Date) {
        self.init()
        for r in rows {
            self[r.org, r.pool] = QuotaEntry(
                guaranteedMilli: r.guaranteedGPUs * 1000, limitMilli: r.limitGPUs * 1000, inUseMilli: Int((r.inUseGPUs * 1000).rounded()),
                remainingGPUSeconds: (r.gpuHours - r.gpuHoursUsed - r.reservedGPUHours) * 3600,
                periodSecondsLeft: r.periodEnd.timeIntervalSince(now), fairShare: r.fairShareFactor)
            for p in r.projects {
                self[r.org, r.pool]?.projects[p.name] = QuotaEntry(
                    limitGPUs: p.limitGPUs, gpuHours: p.gpuHours, inUseGPUs: p.inUseGPUs, takenGPUHours: p.gpuHoursUsed + p.reservedGPUHours,
                    fairShare: p.fairShareFactor)
                for u in p.users {
                    self[r.org, r.pool]?.users["\(p.name)/\(u.name)"] = QuotaEntry(
                        limitGPUs: u.limitGPUs, gpuHours: u.gpuHours, inUseGPUs: u.inUseGPUs, takenGPUHours: u.gpuHoursUsed + u.reservedGPUHours)
                }
            }
        }
    }
}

extension QuotaEntry {
    /// A project's or user's entry: no guarantee, and no limit or hours of its own where Policies/ sets none;
    /// `takenGPUHours` is what usage and live reservations took of its hours.
    init(limitGPUs: Int?, gpuHours: Int64?, inUseGPUs: Double, takenGPUHours: Double, fairShare: Double = 1) {
        self.init(
            guaranteedMilli: 0, limitMilli: limitGPUs.map { $0 * 1000 } ?? Int.max / 2, inUseMilli: Int((inUseGPUs * 1000).rounded()),
            remainingGPUSeconds: gpuHours.map { (Double($0) - takenGPUHours) * 3600 } ?? .infinity, fairShare: fairShare)
    }
}
