public import AllotCore
import Foundation
public import Logging
import Synchronization

/// One scheduling cycle (SPEC §4), the same for allotd's scheduler loop and for the store tests:
/// 1. read one snapshot; 2. place replacements, then the queue (pure); 3. commit both; 4. on the snapshot as
/// the commit left it, give organisations their guarantee back (reclaim), move work to gather capacity that
/// scattered (defragmentation) and estimate when waiting jobs start.
///
/// ```swift
/// let cycle = SchedulingCycle(store: SchedulerStore(database: db), placer: Placer(), logger: logger)
/// let outcome = try await cycle.run()
/// ```
public final class SchedulingCycle: Sendable {
    public let store: SchedulerStore
    public let placer: Placer
    let logger: Logger
    /// Estimates replay placement against the cluster: at most this often.
    let estimateEvery: Double
    private let state = Mutex(State())
    /// The cluster as the last cycle read it: a cycle reads again only the nodes changed since.
    public let cluster = ClusterCache()

    struct State {
        var lastEstimate: Date?
        var recentAt: Date?
        var forgotAt: Date?
        var recent = WorkloadMix()
    }

    /// The most placements one cycle commits (see `run`).
    let placementsPerCycle: Int

    public init(store: SchedulerStore, placer: Placer, logger: Logger, estimateEverySeconds: Double = 10, placementsPerCycle: Int = 1000) {
        self.store = store
        self.placer = placer
        self.logger = logger
        self.estimateEvery = estimateEverySeconds
        self.placementsPerCycle = max(1, placementsPerCycle)
    }

    /// What one cycle did.
    public struct Outcome: Sendable {
        public var queued: Int
        public var placed: [Int64]
        public var replaced: [Int64]
        /// Placements decided but left to the next cycle (over `placementsPerCycle`): it should run at once.
        public var deferred = 0
        /// Jobs for which attempts were asked to stop (reclaim or preemption by class).
        public var preemptedFor: [Int64]
        /// Jobs for which work was moved (defragmentation).
        public var defragmentedFor: [Int64] = []
        /// How long the placement core took to decide.
        public var decision: Duration
        /// Where the cycle's time went: reading the snapshot, committing the plan, and the whole cycle.
        public var timings: (snapshot: Duration, commit: Duration, total: Duration) = (.zero, .zero, .zero)
        public var rejections: [Rejection: Int]
        /// Whether anything changed that the dispatcher should act on.
        public var needsDispatch: Bool {
            !self.placed.isEmpty || !self.replaced.isEmpty || !self.preemptedFor.isEmpty || !self.defragmentedFor.isEmpty
        }
    }

    /// One cycle. With a fence (the scheduler loop's), every write is refused once another allotd leads.
    public func run(fence: Fence? = nil) async throws -> Outcome {
        let store = fence.map { SchedulerStore(database: self.store.database.fenced(by: $0)) } ?? self.store
        let began = ContinuousClock.now
        try await store.resolveWaits()
        let snapshot = try await store.snapshot(cache: self.cluster)
        if self.due(.forgetChanges) {
            // Best effort: the log is only a cache's, and what is left is deleted next time.
            do {
                try await store.forgetChanges(readBy: self.cluster)
            } catch {
                self.logger.debug("cluster change log kept", metadata: ["error": "\(error)"])
            }
        }
        let snapshotTook = ContinuousClock.now - began
        // Replicas that lost their node go first, each to a node its service's other replicas do not hold; then
        // inference replicas on draining nodes are started elsewhere: they run already.
        var nodes = snapshot.nodes
        var relocated: [Int64] = []
        // Nodes given to a service's replicas in this cycle are its too: two moved replicas never share one.
        var taken: [String: Set<String>] = [:]
        for r in snapshot.relocations {
            let service = "\(r.job.id).\(r.attempt)"
            let avoid = r.avoid.union(taken[service] ?? [])
            let open = nodes.filter { !avoid.contains($0.name) }
            guard var rank = self.placer.place([r.job], on: open).placements.first?.ranks.first else { continue }
            rank.rank = r.rank
            if try await store.relocate(r, to: rank) {
                nodes.hold(rank, for: r.job)
                taken[service, default: []].insert(rank.node)
                relocated.append(r.job.id)
            }
        }
        let replacements = self.placer.place(snapshot.replacements, on: nodes, defragmenting: snapshot.defragmenting).placements
        let replacing = Dictionary(snapshot.replacements.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for p in replacements { for r in p.ranks { nodes.hold(r, for: replacing[p.jobID]) } }

        var placer = self.placer
        if placer.strategy == .fragmentationAware { placer.expected = try await self.recentShapes() }
        let started = ContinuousClock.now
        var plan = placer.place(
            snapshot.queue, on: nodes, quota: snapshot.quota, backfill: Backfill(running: snapshot.running, now: snapshot.now),
            defragmenting: snapshot.defragmenting)
        // A cycle commits at most `placementsPerCycle`, in the plan's (queue) order; the rest go to the next cycle,
        // which runs at once. Without the bound, 100,000 queued jobs on 10,000 idle nodes made a plan that no cycle
        // could commit within its time bound: each was abandoned and rolled back, and nothing was ever placed.
        let deferred = max(0, plan.placements.count - self.placementsPerCycle)
        if deferred > 0 { plan.placements.removeLast(deferred) }
        let decision = ContinuousClock.now - started
        let committed = try await store.commit(plan, replacing: replacements)
        let commitTook = ContinuousClock.now - started - decision

        // The cluster as the commit left it: what was placed now holds its GPUs and runs.
        var running = snapshot.running
        let placedNow = Set(committed.placed)
        let byID = Dictionary(snapshot.queue.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for p in plan.placements where placedNow.contains(p.jobID) {
            for r in p.ranks { nodes.hold(r, for: byID[p.jobID]) }
            if let job = byID[p.jobID] {
                var attempt = RunningAttempt(
                    jobID: job.id, attempt: 0, org: job.org, pool: job.pool, borrowing: p.borrowing, startedAt: snapshot.now, ranks: p.ranks,
                    endsAt: job.timeLimitSeconds.map { snapshot.now + $0 })
                attempt.priority = job.priority
                running.append(attempt)
            }
        }
        // Jobs waiting for capacity, in queue order: candidates for reclaim and for an estimated start.
        let blocked = snapshot.queue.filter { job in
            if case .capacity = plan.waiting[job.id] { return true }
            return false
        }.sorted(by: Placer.inQueueOrder)
        let preempted = try await self.reclaim(store, blocked: blocked, snapshot: snapshot, nodes: nodes, running: running)
        let busy = Set(preempted.compactMap { id in byID[id]?.pool })
        let defragmented = try await self.defragment(store, blocked: blocked, snapshot: snapshot, nodes: nodes, running: running, busy: busy)
        try await self.estimate(store, blocked: blocked, nodes: nodes, running: running, now: snapshot.now)
        var outcome = Outcome(
            queued: snapshot.queue.count, placed: committed.placed, replaced: committed.replaced + relocated, preemptedFor: preempted,
            decision: decision, rejections: plan.rejections)
        outcome.defragmentedFor = defragmented
        outcome.deferred = deferred
        outcome.timings = (snapshotTook, commitTook, ContinuousClock.now - began)
        return outcome
    }

    /// Gathers scattered capacity: per pool with no reclaim or plan in progress, for the first of its jobs waiting
    /// on capacity (up to five, in queue order) that free GPUs scattered over nodes keep waiting, the fewest moves
    /// of movable work within the policy's limit that make room — only when the moved work fits elsewhere too.
    /// One plan per pool at a time; the next waits until this one's job is placed or its deadline passes.
    private func defragment(
        _ store: SchedulerStore, blocked: [PendingJob], snapshot: SchedulingSnapshot, nodes: [NodeSnapshot], running: [RunningAttempt],
        busy: Set<String>
    ) async throws -> [Int64] {
        var skip = snapshot.poolsReclaiming.union(busy).union(snapshot.defragmenting.map(\.pool))
        var tried: [String: Int] = [:]
        var made: [Int64] = []
        for job in blocked where !skip.contains(job.pool) && tried[job.pool, default: 0] < 5 {
            tried[job.pool, default: 0] += 1
            let limits = DefragmentationLimits(
                moves: snapshot.defragmentMovesLeft[job.pool] ?? 0, minimumRuntimeSeconds: snapshot.defragmentMinimumRuntimeSeconds)
            guard let plan = self.placer.defragmentation(for: job, on: nodes, running: running, now: snapshot.now, limits: limits) else { continue }
            skip.insert(job.pool)
            guard try await store.defragment(plan, for: job) else { continue }
            made.append(job.id)
            self.logger.info("defragmenting", metadata: ["job": "\(job.id)", "pool": "\(job.pool)", "plan": "\(plan.summary)"])
        }
        return made
    }

    /// Gives organisations their guarantee back (SPEC §4.5): for the first job per pool that waits on capacity
    /// while its organisation is within its guarantee, preempt the fewest borrowers that make room; failing
    /// that, a class that preempts stops preemptible or borrowing work of lower priority. One reclaim per pool
    /// at a time: the next waits until the victims have stopped.
    private func reclaim(
        _ store: SchedulerStore, blocked: [PendingJob], snapshot: SchedulingSnapshot, nodes: [NodeSnapshot], running: [RunningAttempt]
    ) async throws
        -> [Int64]
    {
        var busy = snapshot.poolsReclaiming
        var preempted: [Int64] = []
        for job in blocked where !busy.contains(job.pool) {
            var byClass = false
            var victims = self.placer.reclaim(for: job, on: nodes, running: running, book: snapshot.quota, now: snapshot.now) ?? []
            if victims.isEmpty, job.preempts {
                // None younger than a minute.
                victims = self.placer.preemption(for: job, on: nodes, running: running, now: snapshot.now, minimumRuntime: 60) ?? []
                byClass = true
            }
            guard !victims.isEmpty else { continue }
            try await store.preempt(victims, for: job, byClass: byClass)
            busy.insert(job.pool)
            preempted.append(job.id)
            self.logger.info(
                byClass ? "preempting for a higher class" : "reclaiming guaranteed GPUs",
                metadata: ["job": "\(job.id)", "org": "\(job.org)", "victims": "\(victims.map(\.jobID))"])
        }
        return preempted
    }

    /// Estimated start times for the first 100 jobs waiting on capacity, from the running jobs' time limits.
    private func estimate(_ store: SchedulerStore, blocked: [PendingJob], nodes: [NodeSnapshot], running: [RunningAttempt], now: Int64) async throws {
        let waiting = Array(blocked.prefix(100))
        guard !waiting.isEmpty, self.due(.estimate) else { return }
        try await store.recordEstimates(self.placer.estimatedStarts(for: waiting, on: nodes, running: running, now: now))
    }

    /// What started recently: the job shapes the fragmentation-aware strategy expects, re-read once a minute.
    private func recentShapes() async throws -> WorkloadMix {
        if self.due(.recentShapes) {
            let fresh = try await self.store.recentShapes()
            self.state.withLock { $0.recent = fresh }
        }
        return self.state.withLock { $0.recent }
    }

    /// Periodic work inside the faster cycle: estimates every `estimateEvery` seconds, the recent shapes every
    /// minute, the change log the cluster cache has read every ten seconds.
    private enum Periodic { case estimate, recentShapes, forgetChanges }

    private func due(_ work: Periodic) -> Bool {
        let now = Date()
        return self.state.withLock { s in
            let every: Double
            let last: Date?
            switch work {
            case .estimate: (last, every) = (s.lastEstimate, self.estimateEvery)
            case .recentShapes: (last, every) = (s.recentAt, 60)
            case .forgetChanges: (last, every) = (s.forgotAt, 10)
            }
            if let last, now.timeIntervalSince(last) < every { return false }
            switch work {
            case .estimate: s.lastEstimate = now
            case .recentShapes: s.recentAt = now
            case .forgetChanges: s.forgotAt = now
            }
            return true
        }
    }
}
