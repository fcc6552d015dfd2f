import AllotCore
import Foundation

/// Runs the lifecycles of the core inside one transaction: loads a machine (locked), applies the event at the
/// transaction's time, saves it through its table's writer and carries out the actions it returns — which may
/// move other machines (an attempt's end moves its job; a lost node stops its attempts).
///
/// Locks are taken nodes first, then jobs, then attempts, whichever change starts it, so concurrent changes
/// queue behind each other instead of deadlocking.
struct Transitions {
    let tx: Transaction

    // MARK: - Jobs

    /// Applies `event` to job `id`; returns the job afterwards.
    @discardableResult
    func job(_ id: Int64, _ event: JobLifecycle.Event) async throws -> JobLifecycle {
        guard var job = try await self.tx.jobs.lifecycle(id) else { throw StoreError.notFound("job \(id)") }
        let now = try await self.tx.now()
        let actions: [JobLifecycle.Action]
        do {
            actions = try job.apply(event, now: now)
        } catch {
            // A refused transition is a conflict with the state found: the request cannot apply now.
            throw StoreError.conflict(error.description)
        }
        try await self.tx.jobs.save(job)
        for action in actions {
            switch action {
            case .stopAttempt(let number, let endAs, let reason):
                try await self.attempt(id, number, .stop(endAs: endAs, reason: reason))
            case .promote(let number, let ended):
                try await self.tx.attempts.promote(id, number, replacing: ended)
            case .audit(let entry):
                try await self.tx.audit.append(entry)
            }
        }
        return job
    }

    // MARK: - Attempts

    /// Applies `event` to attempt `number` of job `job`; saves it, then carries out its actions (so that the job,
    /// moved by them, finds the attempt as it now is).
    func attempt(_ job: Int64, _ number: Int, _ event: AttemptLifecycle.Event) async throws {
        // The job's row first: every change to a job's attempts queues behind it.
        guard try await self.tx.jobs.lock(job) else { throw StoreError.notFound("job \(job)") }
        guard let before = try await self.tx.attempts.lifecycle(job, number) else { throw StoreError.notFound("attempt \(number) of job \(job)") }
        var attempt = before
        let now = try await self.tx.now()
        let actions: [AttemptLifecycle.Action]
        do {
            actions = try attempt.apply(event, now: now)
        } catch {
            // A refused transition is a conflict with the state found: the request cannot apply now.
            throw StoreError.conflict(error.description)
        }
        try await self.tx.attempts.save(attempt, from: before)
        for action in actions {
            switch action {
            case .starting:
                try await self.job(job, .attemptStarting(number))
            case .running:
                try await self.job(job, .attemptRunning(number))
                try await self.tx.usage.open(job, number)
            case .stopAttempt(let other, let endAs, let reason, let credited):
                try await self.attempt(job, other, .stop(endAs: endAs, reason: reason, credited: credited))
            case .releaseClaims:
                try await self.tx.attempts.releaseClaims(job, number)
            case .closeUsage(let credit):
                try await self.tx.usage.close(job, number, credit: credit)
            case .ended(let ending, let reason, let exitCode):
                try await self.job(job, .attemptEnded(number, ending, reason: reason, exitCode: exitCode))
            case .restartRank(let rank, let after, let moved, let reason, let faultAt):
                try await self.tx.attempts.scheduleRestart(job, number, rank: rank, afterSeconds: after, moved: moved)
                // Moved: its time on the lost node is closed, credited from the fault; it is charged anew where it runs next.
                if moved { try await self.tx.usage.closeRank(job, number, rank: rank, credit: faultAt.map { .init(from: $0, cause: reason) }) }
                try await self.tx.audit.append(
                    AuditEntry(
                        actor: .scheduler, action: "replica.restart", target: "job/\(job)/attempt/\(number)/rank/\(rank)",
                        outcome: "\(moved ? "moving to another node" : "restarting") in \(Int(after.rounded(.up)))s", detail: ["reason": reason]))
            case .rankGivenUp(let rank, let reason, let faultAt):
                try await self.tx.attempts.releaseClaims(job, number, rank: rank)
                try await self.tx.usage.closeRank(job, number, rank: rank, credit: faultAt.map { .init(from: $0, cause: reason) })
                try await self.tx.audit.append(
                    AuditEntry(
                        actor: .scheduler, action: "replica.given-up", target: "job/\(job)/attempt/\(number)/rank/\(rank)", outcome: "left down",
                        detail: ["reason": reason]))
            case .rankRunning(let rank):
                try await self.tx.usage.openRank(job, number, rank: rank)
            case .foreignReport(let rank, let node):
                try await self.tx.audit.append(
                    AuditEntry(
                        actor: Principal(name: "agent:\(node)", role: .agent, node: node), action: "rank.report.ignored",
                        target: "job/\(job)/attempt/\(number)/rank/\(rank)", outcome: "ignored: the rank does not run on \(node)"))
            }
        }
    }

    // MARK: - Nodes

    /// Applies `event` to node `name`; returns the node afterwards.
    @discardableResult
    func node(_ name: String, _ event: NodeLifecycle.Event) async throws -> NodeLifecycle {
        var node = try await self.tx.nodes.lifecycle(name)
        let actions: [NodeLifecycle.Action]
        do {
            actions = try node.apply(event)
        } catch {
            // A refused transition is a conflict with the state found: the request cannot apply now.
            throw StoreError.conflict(error.description)
        }
        try await self.tx.nodes.save(node)
        for action in actions {
            switch action {
            case .startDowntime(let kind, let reason):
                try await self.tx.nodes.startDowntime(name, kind, reason: reason)
            case .endDowntime(let kind):
                try await self.tx.nodes.endDowntime(name, kind)
            case .stopAttempts(let endAs, let reason):
                // A lost node's fault began when it last answered: its attempts are credited from then.
                let faultAt = try await self.tx.nodes.lastHeartbeat(name)
                for live in try await self.tx.attempts.live(onNodes: [name]) {
                    // A lost node's inference replicas move; every other attempt there stops.
                    let event: AttemptLifecycle.Event =
                        endAs == .lost ? .nodeLost(name, reason: reason, faultAt: faultAt) : .stop(endAs: endAs, reason: reason, faultAt: faultAt)
                    try await self.attempt(live.job, live.number, event)
                }
            case .audit(let entry):
                try await self.tx.audit.append(entry)
            }
        }
        return node
    }
}

extension Transaction {
    var transitions: Transitions { Transitions(tx: self) }
}
