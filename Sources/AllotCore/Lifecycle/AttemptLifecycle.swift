public import Foundation

/// One attempt of a job with its ranks, as a state machine (SPEC §3): placed → starting (every rank accepted by
/// its agent) → running (every rank runs) → an ending. An attempt ends in two steps: a stop records how it will
/// end (cancelled, failed, lost, …) and asks its ranks to stop; once no rank is pending or running, it ends,
/// its GPUs are released, its usage is closed and its job moves on.
///
/// ```swift
/// var attempt = try await store.attempt(job, 1)
/// let actions = try attempt.apply(.reported(statuses, node: "gpu-001"), now: now)
/// // persist `attempt`, then apply `actions` in the same transaction
/// ```
/// Events that no longer apply (a stop for an attempt that has ended, a report for a rank already ended or from
/// another node) change nothing and ask for nothing; events that never could (an unknown rank) are refused.
public struct AttemptLifecycle: Hashable, Sendable {
    public struct Rank: Hashable, Sendable {
        public var rank: Int
        public var node: String
        public var state: RankState
        /// Its agent accepted the launch.
        public var isDispatched: Bool
        /// Its node is lost: a rank there cannot report its end, so a stop counts it as ended at once.
        public var nodeIsLost: Bool
        public var exitCode: Int?
        public var signal: Int?
        public var startedAt: Date?
        public var endedAt: Date?
        /// What its agent said of its end beyond the status (a limit it ran into).
        public var detail: String?
        /// An inference replica's restarts: when each was, and which launch of it runs now (0: the first).
        public var restartedAt: [Date] = []
        public var launch = 0
        /// Its node was lost: it waits for the scheduler to give it another node.
        public var needsNode = false

        public init(
            rank: Int, node: String, state: RankState = .pending, isDispatched: Bool = false, nodeIsLost: Bool = false, exitCode: Int? = nil,
            signal: Int? = nil, startedAt: Date? = nil, endedAt: Date? = nil, detail: String? = nil, restartedAt: [Date] = [], launch: Int = 0,
            needsNode: Bool = false
        ) {
            self.restartedAt = restartedAt
            self.launch = launch
            self.needsNode = needsNode
            self.detail = detail
            self.rank = rank
            self.node = node
            self.state = state
            self.isDispatched = isDispatched
            self.nodeIsLost = nodeIsLost
            self.exitCode = exitCode
            self.signal = signal
            self.startedAt = startedAt
            self.endedAt = endedAt
        }
    }

    /// How a stopped attempt will end, since when its ranks are asked to stop, and from which moment its GPU
    /// time is the infrastructure's fault (credited back; nil when the organisation pays for all of it).
    public struct Stop: Hashable, Sendable {
        public var endAs: AttemptState
        public var requestedAt: Date
        public var creditFrom: Date?
        public init(endAs: AttemptState, requestedAt: Date, creditFrom: Date? = nil) {
            self.endAs = endAs
            self.requestedAt = requestedAt
            self.creditFrom = creditFrom
        }
    }

    /// GPU time given back: from the fault's moment to the attempt's end, and why.
    public struct Credit: Hashable, Sendable {
        public var from: Date
        public var cause: String
        public init(from: Date, cause: String) {
            self.from = from
            self.cause = cause
        }
    }

    /// How an inference service's replicas heal: one that ends (or whose node is lost) is started again, after a
    /// back-off that doubles from `backoffSeconds` up to `maxBackoffSeconds`, at most `limit` times in any
    /// `windowSeconds`; past that it stays down and the service runs degraded on the others.
    public struct Healing: Hashable, Sendable {
        public var limit: Int
        public var windowSeconds: Double
        public var backoffSeconds: Double
        public var maxBackoffSeconds: Double
        public init(limit: Int = 5, windowSeconds: Double = 600, backoffSeconds: Double = 1, maxBackoffSeconds: Double = 300) {
            self.limit = limit
            self.windowSeconds = windowSeconds
            self.backoffSeconds = backoffSeconds
            self.maxBackoffSeconds = maxBackoffSeconds
        }

        /// The wait before the `n`th restart in the window (1 s, 2 s, 4 s, … up to the most).
        public func backoff(restartsInWindow n: Int) -> Double {
            min(self.maxBackoffSeconds, self.backoffSeconds * pow(2, Double(max(0, n - 1))))
        }
    }

    public enum Event: Hashable, Sendable {
        /// The agent of `rank` accepted its launch.
        case dispatched(rank: Int)
        /// What the agent of `node` reports of this attempt's ranks.
        case reported([RankStatus], node: String)
        /// Stop the attempt: it will end as `endAs`. The first reason (and exit code) given wins. An ending the
        /// infrastructure caused is credited from `faultAt` (default: now) unless `credited` is false (a
        /// replaced inference attempt: its service went on elsewhere).
        case stop(endAs: AttemptState, reason: String, exitCode: Int? = nil, faultAt: Date? = nil, credited: Bool = true)
        /// `node` is lost. A healing service's replicas there are started again elsewhere; any other attempt stops
        /// as lost, credited from `faultAt`.
        case nodeLost(String, reason: String, faultAt: Date?)
    }

    public enum Action: Hashable, Sendable {
        /// Every rank was accepted: the job is starting.
        case starting
        /// Every rank runs: the job runs and the attempt's usage starts.
        case running
        /// Stop another attempt of the same job (the one a running replacement takes over from).
        case stopAttempt(Int, endAs: AttemptState, reason: String, credited: Bool)
        /// The attempt has ended: release its GPUs.
        case releaseClaims
        /// Close its usage; with a credit, the time from the fault's moment on is given back.
        case closeUsage(credit: Credit?)
        /// Move the job on (finished, requeued, or carried on by another live attempt).
        case ended(AttemptState, reason: String, exitCode: Int?)
        /// An agent reported on a rank that does not run on its node: ignored, and worth an audit record.
        case foreignReport(rank: Int, from: String)
        /// A replica is started again after `afterSeconds`: on its node, or (`moved`) on another once the scheduler
        /// finds one — its GPUs there are released and its time from `faultAt` credited.
        case restartRank(Int, afterSeconds: Double, moved: Bool, reason: String, faultAt: Date?)
        /// A replica given up on: it restarted as often as its window allows; the service runs on the others. Its
        /// GPUs are released and its charge closed now (from `faultAt`, credited, where its node was lost).
        case rankGivenUp(Int, reason: String, faultAt: Date?)
        /// A restarted replica runs again: its GPU time is charged again (where it was stopped, on a new node).
        case rankRunning(Int)
    }

    public let jobID: Int64
    public let number: Int
    public private(set) var state: AttemptState
    public private(set) var stop: Stop?
    /// Why it is stopping or how it ended.
    public private(set) var reason: String?
    public private(set) var exitCode: Int?
    public private(set) var startedAt: Date?
    public private(set) var endedAt: Date?
    /// The attempt this one replaces (an inference replica moved off a draining node), until it runs.
    public let replaces: Int?
    /// Slurm's batch step: rank 0 runs the script and the other ranks only host its steps, so rank 0's end is
    /// the attempt's, and the others are stopped then.
    public let batchStep: Bool
    /// Set for an inference service: its replicas heal one at a time (nil: the ranks are a gang, all or nothing).
    public let healing: Healing?
    public private(set) var ranks: [Rank]

    public init(
        jobID: Int64, number: Int, state: AttemptState = .placed, stop: Stop? = nil, reason: String? = nil, exitCode: Int? = nil,
        startedAt: Date? = nil, endedAt: Date? = nil, replaces: Int? = nil, batchStep: Bool = false, healing: Healing? = nil, ranks: [Rank]
    ) {
        self.healing = healing
        self.batchStep = batchStep
        self.jobID = jobID
        self.number = number
        self.state = state
        self.stop = stop
        self.reason = reason
        self.exitCode = exitCode
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.replaces = replaces
        self.ranks = ranks.sorted { $0.rank < $1.rank }
    }

    public var key: String { "\(self.jobID).\(self.number)" }

    /// Applies `event` at `now`; returns what the store must do besides saving the attempt.
    public mutating func apply(_ event: Event, now: Date) throws(Refusal) -> [Action] {
        switch event {
        case .dispatched(let rank):
            guard let i = self.ranks.firstIndex(where: { $0.rank == rank }) else { throw Refusal("attempt \(self.key) has no rank \(rank)") }
            self.ranks[i].isDispatched = true
            guard self.state == .placed, self.stop == nil, self.ranks.allSatisfy(\.isDispatched) else { return [] }
            self.state = .starting
            return [.starting]
        case .reported(let statuses, let node):
            var foreign: [Action] = []
            var touched = false
            var healed: [Action] = []
            for status in statuses where status.key.jobID == self.jobID && status.key.attempt == self.number {
                guard let i = self.ranks.firstIndex(where: { $0.rank == status.key.rank }), self.ranks[i].node == node else {
                    foreign.append(.foreignReport(rank: status.key.rank, from: node))
                    continue
                }
                guard self.state.isLive else { continue }
                // A report of an earlier launch of a restarted replica, or of one not launched again yet, is history.
                if (status.launch ?? 0) != self.ranks[i].launch || (self.ranks[i].launch > 0 && !self.ranks[i].isDispatched) { continue }
                if let heal = self.heal(status, at: i, now: now) {
                    healed += heal
                    touched = true
                    continue
                }
                let wasPending = self.ranks[i].state == .pending
                self.record(status, at: i, now: now)
                // A restarted replica runs again inside a running service: its time is charged again.
                if wasPending && self.ranks[i].state == .running && self.ranks[i].launch > 0 && self.state == .running {
                    healed.append(.rankRunning(self.ranks[i].rank))
                }
                touched = true
            }
            return foreign + healed + (touched ? self.advance(now: now) : [])
        case .stop(let endAs, let reason, let exitCode, let faultAt, let credited):
            return self.requestStop(
                endAs: endAs, reason: reason, exitCode: exitCode, creditFrom: endAs.isCreditedToOrganization && credited ? (faultAt ?? now) : nil,
                now: now)
        case .nodeLost(let node, let reason, let faultAt):
            guard self.healing != nil, self.state == .running, self.stop == nil,
                self.ranks.contains(where: { $0.node != node && $0.state.isActive })
            else {
                return self.requestStop(endAs: .lost, reason: reason, exitCode: nil, creditFrom: faultAt ?? now, now: now)
            }
            var actions: [Action] = []
            for i in self.ranks.indices where self.ranks[i].node == node && self.ranks[i].state.isActive {
                let lost = RankStatus(key: RankKey(jobID: self.jobID, attempt: self.number, rank: self.ranks[i].rank), state: .vanished)
                actions += self.heal(lost, at: i, now: now, moved: (reason, faultAt ?? now)) ?? []
            }
            return actions + self.advance(now: now)
        }
    }

    /// A healing service's replica that ended (or lost its node, `moved`) starts again — after its back-off, on
    /// its node or on another — unless it restarted `limit` times within the window: then it stays ended. Nil
    /// where the attempt does not heal (a gang, a stopping attempt, one not yet running, a replica still running).
    private mutating func heal(_ status: RankStatus, at i: Int, now: Date, moved: (reason: String, faultAt: Date)? = nil) -> [Action]? {
        guard let healing = self.healing, self.state == .running, self.stop == nil, status.state != .running, self.ranks[i].state.isActive
        else { return nil }
        let rank = self.ranks[i].rank
        let how: String
        if let moved {
            how = moved.reason
        } else {
            let code = status.exitCode ?? -1
            let signal = status.signal ?? 0
            how =
                (signal > 0 ? "was killed by signal \(signal)" : status.state == .vanished || code < 0 ? "vanished" : "exited with code \(code)")
                + (status.detail.map { ": \($0)" } ?? "")
        }
        let recent = self.ranks[i].restartedAt.filter { now.timeIntervalSince($0) < healing.windowSeconds }
        guard recent.count < healing.limit else {
            self.record(status, at: i, now: now)
            if moved != nil { self.ranks[i].state = .vanished }
            let why =
                "replica \(rank) on \(self.ranks[i].node): \(how); it restarted \(recent.count) times in \(Int(healing.windowSeconds))s, "
                + "the limit: left down"
            return [.rankGivenUp(rank, reason: why, faultAt: moved?.faultAt)]
        }
        let wait = healing.backoff(restartsInWindow: recent.count + 1)
        self.ranks[i].restartedAt = recent + [now]
        self.ranks[i].launch += 1
        self.ranks[i].state = .pending
        self.ranks[i].isDispatched = false
        self.ranks[i].exitCode = status.exitCode
        self.ranks[i].signal = status.signal
        self.ranks[i].detail = status.detail
        self.ranks[i].endedAt = now
        self.ranks[i].needsNode = moved != nil
        return [
            .restartRank(
                rank, afterSeconds: wait, moved: moved != nil,
                reason: "replica \(rank) on \(self.ranks[i].node): \(how); \(moved != nil ? "moved to another node" : "restarted")",
                faultAt: moved?.faultAt)
        ]
    }

    /// The scheduler found a new node for a replica whose node was lost.
    public mutating func moveRank(_ rank: Int, to node: String) {
        guard let i = self.ranks.firstIndex(where: { $0.rank == rank }) else { return }
        self.ranks[i].node = node
        self.ranks[i].needsNode = false
        self.ranks[i].nodeIsLost = false
    }

    /// Records one rank's report; a rank already ended, or reported running again, stays as it is.
    private mutating func record(_ status: RankStatus, at i: Int, now: Date) {
        switch status.state {
        case .running:
            guard self.ranks[i].state == .pending else { return }
            self.ranks[i].state = .running
            self.ranks[i].startedAt = self.ranks[i].startedAt ?? now
        case .exited, .vanished:
            guard self.ranks[i].state.isActive else { return }
            self.ranks[i].state = status.state == .exited ? .exited : .vanished
            self.ranks[i].exitCode = status.exitCode
            self.ranks[i].signal = status.signal
            self.ranks[i].detail = status.detail
            self.ranks[i].endedAt = now
            self.ranks[i].startedAt = self.ranks[i].startedAt ?? now
        }
    }

    /// Ranks never started, or on a lost node, count as ended at once; the others are asked to stop.
    private mutating func requestStop(endAs: AttemptState, reason: String, exitCode: Int?, creditFrom: Date? = nil, now: Date) -> [Action] {
        guard self.state.isLive else { return [] }
        self.stop = self.stop ?? Stop(endAs: endAs, requestedAt: now, creditFrom: creditFrom.map { min($0, now) })
        self.reason = self.reason ?? reason
        self.exitCode = self.exitCode ?? exitCode
        for i in self.ranks.indices where self.ranks[i].state.isActive && (!self.ranks[i].isDispatched || self.ranks[i].nodeIsLost) {
            self.ranks[i].state = .vanished
            self.ranks[i].endedAt = now
        }
        return self.finishIfDone(now: now)
    }

    /// After ranks changed: a failed or vanished rank stops the gang; every rank running makes the attempt run;
    /// no rank left active ends it.
    private mutating func advance(now: Date) -> [Action] {
        guard self.state.isLive else { return [] }
        // A healing service runs while any replica does; once none is left, it ends failed.
        if self.healing != nil, self.state == .running, self.stop == nil {
            if self.ranks.contains(where: { $0.state.isActive }) { return [] }
            return self.requestStop(endAs: .failed, reason: "every replica ended and none may restart again", exitCode: nil, now: now)
        }
        if self.stop == nil {
            // The first rank to fail (by when it ended) names the gang's ending.
            if let failed = self.ranks.filter({ $0.state == .exited && $0.exitCode != 0 }).min(by: { ($0.endedAt ?? now) < ($1.endedAt ?? now) }) {
                let code = failed.exitCode ?? -1
                let signal = failed.signal ?? 0
                let how = signal > 0 ? "was killed by signal \(signal)" : code < 0 ? "ended with an unknown status" : "exited with code \(code)"
                let why = failed.detail.map { ": \($0)" } ?? ""
                return self.requestStop(
                    endAs: .failed, reason: "rank \(failed.rank) on \(failed.node) \(how)\(why)", exitCode: signal > 0 ? 128 + signal : code, now: now
                )
            }
            // The batch script ended well: its job is done, and the ranks that hosted its steps are stopped.
            if self.batchStep, self.ranks.count > 1, let script = self.ranks.first, script.state == .exited, script.exitCode == 0 {
                return self.requestStop(endAs: .succeeded, reason: "the batch script on \(script.node) exited 0", exitCode: 0, now: now)
            }
            if let vanished = self.ranks.first(where: { $0.state == .vanished }) {
                return self.requestStop(
                    endAs: .lost,
                    reason: "rank \(vanished.rank) on \(vanished.node) vanished: its agent restarted and the process is gone (exit status unknown)",
                    exitCode: nil, creditFrom: now, now: now)
            }
            let running = self.ranks.filter { $0.state == .running }.count
            let succeeded = self.ranks.filter { $0.state == .exited && $0.exitCode == 0 }.count
            if self.state != .running && running > 0 && running + succeeded == self.ranks.count {
                var actions: [Action] = []
                // A replacement that runs takes over: the attempt it replaces (on a draining node) is stopped now.
                if let replaced = self.replaces {
                    actions.append(
                        .stopAttempt(
                            replaced, endAs: .drained, reason: "replaced by attempt \(self.number), started elsewhere before its node was drained",
                            credited: false))
                }
                self.state = .running
                self.startedAt = now
                return actions + [.running] + self.finishIfDone(now: now)
            }
        }
        return self.finishIfDone(now: now)
    }

    /// Ends the attempt once no rank is pending or running.
    private mutating func finishIfDone(now: Date) -> [Action] {
        guard self.state.isLive, !self.ranks.contains(where: { $0.state.isActive }) else { return [] }
        let succeeded = !self.ranks.isEmpty && self.ranks.allSatisfy { $0.state == .exited && $0.exitCode == 0 }
        let ending = self.stop?.endAs ?? (succeeded ? .succeeded : .failed)
        let why = self.reason ?? (ending == .succeeded ? "exited 0" : "failed")
        self.state = ending
        self.endedAt = now
        self.reason = why
        if ending == .succeeded { self.exitCode = 0 }
        let credit = ending.isCreditedToOrganization ? self.stop?.creditFrom.map { Credit(from: $0, cause: why) } : nil
        return [.releaseClaims, .closeUsage(credit: credit), .ended(ending, reason: why, exitCode: self.exitCode)]
    }
}
