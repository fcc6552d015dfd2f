public import Foundation

/// A job as a state machine (SPEC §3): queued → placed → starting → running → succeeded | failed | cancelled.
/// An attempt the infrastructure ended (lost, preempted, drained, never dispatched) sends the job back to the
/// queue, keeping its submit time, and spends none of its `maxAttempts`: the job did nothing wrong (Kubernetes'
/// pod failure policy ignores disruptions the same way). `maxAttempts` 1 (`--no-requeue`) means never requeued;
/// a job ended that way `interruptionLimit` times (its ranks keep taking their nodes down) fails, as Slurm's
/// `max_batch_requeue` bounds a batch job's requeues. An inference job moved off a draining node has two live
/// attempts for a while: the one it runs and a replacement; when either ends the other carries on.
public struct JobLifecycle: Hashable, Sendable {
    public enum Event: Hashable, Sendable {
        /// A placement for a queued job: its next attempt (number `attempts` afterwards) is placed.
        case placed
        /// A replacement attempt for a running job (started elsewhere before its node drains).
        case replacementPlaced
        /// Every rank of the attempt was accepted by its agent.
        case attemptStarting(Int)
        /// Every rank of the attempt runs.
        case attemptRunning(Int)
        /// The attempt ended as `ending` (it may already be missing from `liveAttempts`).
        case attemptEnded(Int, AttemptState, reason: String, exitCode: Int?)
        /// Someone cancels the job: a queued one ends at once, a live one once its attempts have stopped.
        case cancel(by: Principal)
        /// A queued job that can never start (a dependency that can never be met): it ends cancelled, saying why.
        case neverRuns(reason: String)
    }

    public enum Action: Hashable, Sendable {
        /// Stop a live attempt of this job.
        case stopAttempt(Int, endAs: AttemptState, reason: String)
        /// The other live attempt carries on as the job's own (it no longer replaces the one that ended).
        case promote(Int, replacing: Int)
        case audit(AuditEntry)
    }

    public let id: Int64
    public private(set) var state: JobState
    /// Why it waits, or how it ended.
    public private(set) var reason: String?
    public private(set) var exitCode: Int?
    /// Attempts made so far.
    public private(set) var attempts: Int
    public let maxAttempts: Int
    /// The attempts the infrastructure ended (lost, preempted, drained, never dispatched): they spend no attempt.
    public private(set) var interrupted: [Int]
    /// Infrastructure endings after which a job fails instead of being requeued once more.
    public static let interruptionLimit = 20
    public private(set) var cancelRequested: Bool
    public private(set) var endedAt: Date?
    /// The numbers of its live attempts.
    public private(set) var liveAttempts: [Int]

    public init(
        id: Int64, state: JobState = .queued, reason: String? = nil, exitCode: Int? = nil, attempts: Int = 0, maxAttempts: Int,
        interrupted: [Int] = [], cancelRequested: Bool = false, endedAt: Date? = nil, liveAttempts: [Int] = []
    ) {
        self.id = id
        self.state = state
        self.reason = reason
        self.exitCode = exitCode
        self.attempts = attempts
        self.maxAttempts = maxAttempts
        self.interrupted = interrupted.sorted()
        self.cancelRequested = cancelRequested
        self.endedAt = endedAt
        self.liveAttempts = liveAttempts.sorted()
    }

    var target: String { "job/\(self.id)" }

    public mutating func apply(_ event: Event, now: Date) throws(Refusal) -> [Action] {
        switch event {
        case .placed:
            guard self.state == .queued, !self.cancelRequested else { throw Refusal("job \(self.id) is \(self.describedState), not queued") }
            self.state = .placed
            self.attempts += 1
            self.reason = nil
            self.liveAttempts.append(self.attempts)
            return []
        case .replacementPlaced:
            guard self.state == .running, !self.cancelRequested else { throw Refusal("job \(self.id) is \(self.describedState), not running") }
            self.attempts += 1
            self.liveAttempts.append(self.attempts)
            return []
        case .attemptStarting(let n):
            try self.requireLive(n)
            if self.state == .placed { self.state = .starting }
            return []
        case .attemptRunning(let n):
            try self.requireLive(n)
            if self.state == .placed || self.state == .starting { self.state = .running }
            return []
        case .attemptEnded(let n, let ending, let why, let exitCode):
            // The attempt's own lifecycle ends it once; the job may have learnt already that it is no longer live.
            self.liveAttempts.removeAll { $0 == n }
            if let other = self.liveAttempts.first {
                return [
                    .promote(other, replacing: n),
                    .audit(
                        AuditEntry(
                            actor: .scheduler, action: "attempt.end", target: self.target,
                            outcome: "attempt \(n) \(ending.rawValue); attempt \(other) carries on", detail: ["reason": why])),
                ]
            }
            switch ending {
            case .succeeded: self.end(.succeeded, "exited 0", exitCode: 0, now: now)
            case .cancelled: self.end(.cancelled, why, exitCode: nil, now: now)
            case .failed: self.end(.failed, why, exitCode: exitCode, now: now)
            case _ where self.cancelRequested: self.end(.cancelled, "cancelled", exitCode: nil, now: now)
            case _ where ending.requeuesJob:
                if !self.interrupted.contains(n) { self.interrupted.append(n) }
                if self.maxAttempts <= 1 {
                    self.end(
                        .failed, "attempt \(n) \(ending.rawValue): \(why); not requeued (maxAttempts 1, --no-requeue)", exitCode: exitCode, now: now)
                } else if self.interrupted.count > Self.interruptionLimit {
                    self.end(
                        .failed,
                        "attempt \(n) \(ending.rawValue): \(why); ended by the infrastructure \(self.interrupted.count) times, over the limit of \(Self.interruptionLimit)",
                        exitCode: exitCode, now: now)
                } else {
                    self.state = .queued
                    self.reason = "requeued after attempt \(n): \(why)"
                    self.exitCode = nil
                }
            default:
                self.end(.failed, "attempt \(n) \(ending.rawValue): \(why)", exitCode: exitCode, now: now)
            }
            return [
                .audit(
                    AuditEntry(
                        actor: .scheduler, action: "attempt.end", target: self.target,
                        outcome: "attempt \(n) \(ending.rawValue); job \(self.state.rawValue)",
                        detail: ["reason": why]))
            ]
        case .cancel(let principal):
            let before = self.state
            if self.state == .queued {
                self.end(.cancelled, "cancelled by \(principal.name)", exitCode: nil, now: now)
            } else if !self.state.isTerminal {
                self.cancelRequested = true
            }
            // Every live attempt: a job being moved off a draining node has two for a while.
            return self.liveAttempts.map { .stopAttempt($0, endAs: .cancelled, reason: "cancelled by \(principal.name)") } + [
                .audit(
                    AuditEntry(
                        actor: principal, action: "job.cancel", target: self.target, outcome: before.isTerminal ? "already \(before.rawValue)" : "ok")
                )
            ]
        case .neverRuns(let why):
            return try self.neverRuns(why, now: now)
        }
    }

    private mutating func neverRuns(_ why: String, now: Date) throws(Refusal) -> [Action] {
        guard self.state == .queued else { throw Refusal("job \(self.id) is \(self.describedState), not queued") }
        self.end(.cancelled, why, exitCode: nil, now: now)
        return [.audit(AuditEntry(actor: .scheduler, action: "job.never_runs", target: self.target, outcome: "cancelled", detail: ["reason": why]))]
    }

    private mutating func end(_ state: JobState, _ reason: String, exitCode: Int?, now: Date) {
        self.state = state
        self.reason = reason
        self.exitCode = exitCode
        self.endedAt = now
    }

    private func requireLive(_ attempt: Int) throws(Refusal) {
        guard self.liveAttempts.contains(attempt) else { throw Refusal("attempt \(attempt) of job \(self.id) is not live") }
    }

    private var describedState: String { self.cancelRequested ? "being cancelled" : self.state.rawValue }
}
