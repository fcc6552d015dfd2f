import AllotCore
import AllotHTTP
import AllotStore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// A level-triggered nudge between services: `signal()` from anywhere, `wait(upTo:)` in a loop.
/// NOTIFY-style hints are only an optimisation: every loop also runs on a fixed interval.
public final class Wakeup: Sendable {
    private let pending = Mutex(false)
    public init() {}
    public func signal() { self.pending.withLock { $0 = true } }

    /// Returns when signalled, or after `interval`, whichever comes first.
    public func wait(upTo interval: Duration) async {
        let deadline = ContinuousClock.now + interval
        while ContinuousClock.now < deadline {
            if self.pending.withLock({ p in
                defer { p = false }; return p
            }) {
                return
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Whether this allotd holds the scheduling lease; shared by the loops that only the leader runs.
public final class Leadership: Sendable {
    private let leading = Mutex(false)
    public init() {}
    public var isLeader: Bool { self.leading.withLock { $0 } }
    func set(_ value: Bool) { self.leading.withLock { $0 = value } }
}

/// Takes and renews the leader lease every couple of seconds; releases it on shutdown.
public struct LeaderElector: Service {
    public let lease: LeaderLease
    public let leadership: Leadership
    public let logger: Logger

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let leading = try await self.lease.acquireOrRenew()
                if leading != self.leadership.isLeader {
                    self.logger.info(leading ? "this allotd now schedules" : "another allotd schedules", metadata: ["holder": "\(self.lease.holder)"])
                }
                self.leadership.set(leading)
            } catch {
                self.leadership.set(false)
                self.logger.warning("leader lease check failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(2))
        }
        self.leadership.set(false)
        try? await self.lease.release()
    }
}

/// Each cycle (on a change, and at least every `interval`): snapshot → placement core → commit the plan in
/// one transaction → wake the dispatcher.
public struct SchedulerLoop: Service {
    public let database: Database
    public let placer: Placer
    public let leadership: Leadership
    public let wake: Wakeup
    public let dispatch: Wakeup
    public let interval: Duration
    public let metrics: Metrics
    public let logger: Logger
    let estimates = Every(seconds: 10)
    let recent = RecentShapes()

    public init(
        database: Database, placer: Placer, leadership: Leadership, wake: Wakeup, dispatch: Wakeup, interval: Duration, metrics: Metrics,
        logger: Logger
    ) {
        self.database = database
        self.placer = placer
        self.leadership = leadership
        self.wake = wake
        self.dispatch = dispatch
        self.interval = interval
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if self.leadership.isLeader {
                do {
                    try await self.cycle()
                } catch {
                    self.logger.warning("scheduling cycle failed", metadata: ["error": "\(error)"])
                }
            }
            await self.wake.wait(upTo: self.interval)
        }
    }

    /// Gives organisations their guarantee back (SPEC §4.5): for the first job per pool that waits on capacity
    /// while its organisation is within its guarantee, preempt the fewest borrowers that make room. One reclaim
    /// per pool at a time: the next waits until the victims have stopped.
    func reclaim(blocked: [PendingJob], book: QuotaBook, store: SchedulerStore) async throws {
        guard !blocked.isEmpty else { return }
        var busy = try await store.poolsReclaiming()
        // Placement changed the cluster: reason over a fresh snapshot.
        let nodes = try await store.nodeSnapshots()
        let running = try await store.running()
        let now = Int64(Date().timeIntervalSince1970)
        for job in blocked where !busy.contains(job.pool) {
            var byClass = false
            var victims = self.placer.reclaim(for: job, on: nodes, running: running, book: book, now: now) ?? []
            if victims.isEmpty, job.preempts {
                // A class that preempts stops preemptible or borrowing work of lower priority, none younger than a minute.
                victims = self.placer.preemption(for: job, on: nodes, running: running, now: now, minimumRuntime: 60) ?? []
                byClass = true
            }
            guard !victims.isEmpty else { continue }
            try await store.preempt(victims, for: job, byClass: byClass)
            busy.insert(job.pool)
            self.logger.info(
                byClass ? "preempting for a higher class" : "reclaiming guaranteed GPUs",
                metadata: ["job": "\(job.id)", "org": "\(job.org)", "victims": "\(victims.map(\.jobID))"])
            self.dispatch.signal()
        }
    }

    /// Estimated start times for jobs waiting on capacity, from the running jobs' time limits: the first 100 in
    /// queue order, at most every 10 seconds (each estimate replays placement against a changing cluster).
    func estimate(blocked: [PendingJob], store: SchedulerStore) async throws {
        let now = Date()
        let waiting = Array(blocked.prefix(100))
        guard !waiting.isEmpty, self.estimates.due(now) else { return }
        let nodes = try await store.nodeSnapshots()
        let running = try await store.running()
        try await store.recordEstimates(
            self.placer.estimatedStarts(for: waiting, on: nodes, running: running, now: Int64(now.timeIntervalSince1970)))
    }

    /// One cycle; returns the jobs placed.
    @discardableResult
    public func cycle() async throws -> [Int64] {
        let store = SchedulerStore(database: self.database)
        // 0. Inference replicas on draining nodes are started elsewhere first (before the queue: they run already).
        let replacements = try await store.replacementsNeeded()
        if !replacements.isEmpty {
            let placed = try await store.commitReplacements(self.placer.place(replacements, on: try await store.nodeSnapshots()).placements)
            if !placed.isEmpty { self.dispatch.signal() }
        }
        // 1. Snapshot. 2. Decide (pure). 3. Commit. 4. Hand over to the dispatcher.
        let queue = try await store.queue()
        guard !queue.isEmpty else { return [] }
        let nodes = try await store.nodeSnapshots()
        let book = try await store.quotaBook()
        let backfill = Backfill(running: try await store.running(), now: Int64(Date().timeIntervalSince1970))
        var placer = self.placer
        if placer.strategy == .fragmentationAware { placer.expected = try await self.recent.current(store) }
        let started = ContinuousClock.now
        let plan = placer.place(queue, on: nodes, quota: book, backfill: backfill)
        let decided = ContinuousClock.now - started
        let placed = try await store.commit(plan)
        // Jobs waiting for capacity, in queue order: candidates for reclaim and for an estimated start.
        let blocked = queue.filter { job in
            if case .capacity = plan.waiting[job.id] { return true }
            return false
        }.sorted(by: Placer.inQueueOrder)
        try await self.reclaim(blocked: blocked, book: book, store: store)
        try await self.estimate(blocked: blocked, store: store)
        self.metrics.observeCycle(
            decisionSeconds: Double(decided.components.attoseconds) / 1e18 + Double(decided.components.seconds), placed: placed.count)
        if !placed.isEmpty { self.dispatch.signal() }
        self.logger.debug(
            "cycle", metadata: ["queued": "\(queue.count)", "placed": "\(placed.count)", "decide": "\(decided)", "rejections": "\(plan.rejections)"])
        return placed
    }
}

/// Starts placed attempts on their agents (retried with backoff, idempotent by rank key) and delivers stops.
public struct Dispatcher: Service {
    public let database: Database
    public let leadership: Leadership
    public let wake: Wakeup
    public let interval: Duration
    /// Tries per attempt before it ends `dispatch_failed` and the job is requeued.
    public let maxTries: Int
    public let metrics: Metrics
    public let logger: Logger

    public func run() async throws {
        let inFlight = InFlight()
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                if self.leadership.isLeader {
                    do {
                        for work in try await AttemptStore(database: self.database).dueLaunches() {
                            let key = "launch \(work.jobID).\(work.attempt)"
                            guard inFlight.begin(key) else { continue }
                            group.addTask {
                                await self.launch(work)
                                inFlight.end(key)
                            }
                        }
                        for stop in try await AttemptStore(database: self.database).dueStops() {
                            group.addTask { await self.stop(stop) }
                        }
                    } catch {
                        self.logger.warning("dispatch round failed", metadata: ["error": "\(error)"])
                    }
                }
                await self.wake.wait(upTo: self.interval)
            }
        }
    }

    /// The rendezvous port of an attempt: fixed per job and attempt, so every rank agrees without talking.
    static func masterPort(job: Int64, attempt: Int) -> Int { 29500 + Int(job % 2000) * 10 + attempt % 10 }

    func launch(_ work: LaunchWork) async {
        let store = AttemptStore(database: self.database)
        let master = work.ranks.first { $0.rank == 0 }?.agentURL.flatMap { URLComponents(string: $0)?.host } ?? "127.0.0.1"
        var failure: (node: String, error: String)?
        await withTaskGroup(of: (LaunchWork.Rank, (any Error)?).self) { group in
            for rank in work.ranks where !rank.dispatched {
                group.addTask {
                    guard let url = rank.agentURL else {
                        return (rank, APIClient.Failure.unreachable(url: "-", underlying: "no agent has registered"))
                    }
                    let request = LaunchRequest(
                        key: RankKey(jobID: work.jobID, attempt: work.attempt, rank: rank.rank), command: work.command, env: work.env,
                        workingDir: work.workingDir, gpuIndices: rank.gpuIndices,
                        gang: GangInfo(
                            masterAddr: master, masterPort: Self.masterPort(job: work.jobID, attempt: work.attempt), nnodes: work.ranks.count,
                            nodeRank: rank.rank, nprocPerNode: max(1, work.gpusPerNode)),
                        gracePeriodSeconds: work.gracePeriodSeconds)
                    do {
                        let _: RankStatus = try await APIClient(baseURL: url, token: rank.callbackToken, timeout: .seconds(3))
                            .post("/v1/attempts", json: request)
                        return (rank, nil)
                    } catch {
                        return (rank, error)
                    }
                }
            }
            for await (rank, error) in group {
                if let error {
                    failure = (rank.node, "\(error)")
                } else {
                    do {
                        try await store.markDispatched(RankKey(jobID: work.jobID, attempt: work.attempt, rank: rank.rank))
                    } catch {
                        self.logger.warning("recording a dispatch failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
        if let failure {
            self.metrics.dispatchFailed()
            self.logger.info("dispatch failed", metadata: ["job": "\(work.jobID)", "node": "\(failure.node)", "error": "\(failure.error)"])
            do {
                try await store.dispatchFailed(
                    jobID: work.jobID, attempt: work.attempt, node: failure.node, error: failure.error, maxTries: self.maxTries)
            } catch {
                self.logger.warning("recording a dispatch failure failed", metadata: ["error": "\(error)"])
            }
        }
    }

    func stop(_ work: StopWork) async {
        do {
            let _: RankStatus = try await APIClient(baseURL: work.agentURL, token: work.callbackToken, timeout: .seconds(3))
                .post(
                    "/v1/attempts/\(work.key.jobID)/\(work.key.attempt)/\(work.key.rank)/stop",
                    json: StopRequest(gracePeriodSeconds: work.gracePeriodSeconds))
        } catch {
            self.logger.info("stop not delivered; will retry", metadata: ["rank": "\(work.key)", "node": "\(work.node)", "error": "\(error)"])
        }
    }
}

/// What started recently: the job shapes the fragmentation-aware strategy expects, re-read once a minute.
final class RecentShapes: Sendable {
    private let mix = Mutex(WorkloadMix())
    private let every = Every(seconds: 60)

    func current(_ store: SchedulerStore) async throws -> WorkloadMix {
        if self.every.due(Date()) {
            let fresh = try await store.recentShapes()
            self.mix.withLock { $0 = fresh }
        }
        return self.mix.withLock { $0 }
    }
}

/// A rate limit for periodic work inside a faster loop.
final class Every: Sendable {
    private let last = Mutex<Date?>(nil)
    private let seconds: Double
    init(seconds: Double) { self.seconds = seconds }
    func due(_ now: Date) -> Bool {
        self.last.withLock { last in
            if let l = last, now.timeIntervalSince(l) < self.seconds { return false }
            last = now
            return true
        }
    }
}

/// Keys of the work under way, so a slow agent never gets the same launch twice at once.
final class InFlight: Sendable {
    private let keys = Mutex(Set<String>())
    func begin(_ key: String) -> Bool { self.keys.withLock { $0.insert(key).inserted } }
    func end(_ key: String) { self.keys.withLock { _ = $0.remove(key) } }
}

/// Marks nodes `lost` after the heartbeat timeout and stops their attempts so the jobs requeue.
public struct NodeMonitor: Service {
    public let database: Database
    public let leadership: Leadership
    public let wake: Wakeup
    /// Overrides the policy's heartbeat timeout (for tests and `allotd serve --heartbeat-timeout`).
    public let heartbeatTimeoutOverride: Int?
    public let metrics: Metrics
    public let logger: Logger

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if self.leadership.isLeader {
                do {
                    let timeout: Int
                    if let heartbeatTimeoutOverride {
                        timeout = heartbeatTimeoutOverride
                    } else {
                        timeout = try await NodeStore(database: self.database).heartbeatTimeoutSeconds()
                    }
                    let (lost, held) = try await AttemptStore(database: self.database).markLostNodes(timeoutSeconds: timeout)
                    if !lost.isEmpty {
                        self.metrics.nodesLost(lost.count)
                        self.logger.warning("nodes lost", metadata: ["nodes": "\(lost)", "timeout": "\(timeout)s"])
                        self.wake.signal()
                    }
                    if !held.isEmpty {
                        self.logger.error(
                            "most of a pool went silent at once: holding instead of requeueing; `allot nodes declare-lost` decides",
                            metadata: ["pools": "\(held)"])
                    }
                    try await AttemptStore(database: self.database).stopOverdue()
                    let lifecycle = NodeLifecycleStore(database: self.database)
                    try await lifecycle.advanceMaintenance()
                    try await lifecycle.advanceDrains()
                } catch {
                    self.logger.warning("node monitor round failed", metadata: ["error": "\(error)"])
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
