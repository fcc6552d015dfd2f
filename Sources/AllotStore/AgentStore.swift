public import AllotCore
import Foundation
import PostgresNIO

/// What agents tell allotd: a register or heartbeat carries the node's inventory and the state of every rank
/// its agent knows; the answer names the ranks still live there and acknowledges the endings recorded.
public struct AgentStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// Applies an agent's register or heartbeat, all in one transaction: the node's liveness and inventory,
    /// its ranks' reports (which move their attempts), and a lost node's return.
    public func report(_ report: AgentReport, from principal: Principal) async throws -> HeartbeatReply {
        do {
            return try await self.apply(report, from: principal)
        } catch StoreError.forbidden(let why) {
            // Refused, and on the record: an agent's address is changed only by enrolling the node again.
            try await self.database.transaction { tx in
                try await tx.audit.append(
                    AuditEntry(actor: principal, action: "agent.report", target: "node/\(report.node)", outcome: "refused: \(why)"))
            }
            throw StoreError.forbidden(why)
        }
    }

    /// Records that these nodes reported and nothing changed (`HeartbeatShortcut`), in one statement; returns the
    /// nodes it applied to: not a lost one (its full report brings it back), nor one the database holds live work on
    /// (its full report is checked against that work).
    public func touch(_ nodes: [String]) async throws -> Set<String> {
        try await self.database.transaction { tx in try await tx.nodes.touch(nodes) }
    }

    private func apply(_ report: AgentReport, from principal: Principal) async throws -> HeartbeatReply {
        try await self.database.transaction { tx in
            let (before, enrolled) = try await tx.nodes.reportLock(report.node)
            if let enrolled, enrolled != report.agentURL {
                throw StoreError.forbidden(
                    "node \(report.node)'s agent is enrolled at \(enrolled), not \(report.agentURL): enrol the node again (allot nodes enrol) to move it"
                )
            }
            try await tx.nodes.heartbeat(report)
            // A report that may quarantine a GPU (an XID, a GPU not healthy, or fewer GPUs than the node has) locks
            // the node FOR UPDATE before any GPU row: a placement in flight holds the node (FOR KEY SHARE) and then
            // needs the GPU rows, so taking the node only after them would deadlock with it.
            var mayQuarantine = report.gpus.contains { !$0.xids.isEmpty || $0.health != .healthy }
            if !mayQuarantine { mayQuarantine = try await tx.nodes.presentGPUs(report.node) != NodesTable.withMIGDevices(report.gpus).count }
            if mayQuarantine { _ = try await tx.nodes.lifecycle(report.node) }
            let gpus = try await tx.nodes.upsertGPUs(report.gpus, node: report.node)
            try await tx.audit.append(gpus.audit)
            // A GPU quarantined now is the infrastructure's fault: the work on it stops and is requeued, credited
            // from this report (before this report's rank statuses, so a rank the fault killed does not fail its job).
            var faulted: [[Int64]: String] = [:]
            // The node locked FOR UPDATE (above, or here if no sign foretold it): a placement on it being committed
            // now commits before the work on the quarantined GPU is looked up, so it is stopped too.
            if !gpus.quarantined.isEmpty && !mayQuarantine { _ = try await tx.nodes.lifecycle(report.node) }
            for q in gpus.quarantined {
                for live in try await tx.attempts.live(onGPU: q.index, node: report.node) {
                    faulted[[live.job, Int64(live.number)]] =
                        faulted[[live.job, Int64(live.number)]]
                        ?? "GPU \(q.index) of \(report.node) was quarantined (\(q.cause.prefix(200))): requeued, its time credited"
                }
            }
            // In job order, as every change to attempts is, so concurrent heartbeats queue instead of deadlocking.
            for (pair, reason) in faulted.sorted(by: { ($0.key[0], $0.key[1]) < ($1.key[0], $1.key[1]) }) {
                try await tx.transitions.attempt(pair[0], Int(pair[1]), .stop(endAs: .lost, reason: reason, faultAt: try await tx.now()))
            }

            // Each attempt reported on, in one order for every heartbeat (so concurrent ones queue, not deadlock).
            let attempts = Set(report.ranks.map { [$0.key.jobID, Int64($0.key.attempt)] }).sorted { ($0[0], $0[1]) < ($1[0], $1[1]) }
            // Most of a busy node's report repeats what is stored (its ranks still run): an attempt the report would
            // not change, read without a lock, is left alone instead of locking its job. A rank's state only moves
            // forward (pending, running, ended), so a report that changes nothing in what was read changes nothing
            // in what a later writer left either.
            let stored = try await tx.attempts.lifecycles(attempts.map { ($0[0], Int($0[1])) }, locked: false)
            let now = attempts.isEmpty ? Date() : try await tx.now()
            for pair in attempts {
                let statuses = report.ranks.filter { $0.key.jobID == pair[0] && $0.key.attempt == Int(pair[1]) }
                if let before = stored[.init(job: pair[0], number: Int(pair[1]))] {
                    var after = before
                    if (try? after.apply(.reported(statuses, node: report.node), now: now))?.isEmpty == true && after == before { continue }
                }
                do {
                    try await tx.transitions.attempt(pair[0], Int(pair[1]), .reported(statuses, node: report.node))
                } catch StoreError.notFound {
                    // Nothing the scheduler knows: acknowledged below, and stopped by the agent once not live.
                }
            }
            if let steps = report.steps, !steps.isEmpty { try await tx.attempts.recordSteps(steps, from: report.node) }
            // Acknowledge every ended rank the database holds as ended, or does not know at all.
            let ended = report.ranks.filter { $0.state != .running }.map(\.key)
            let stillActive = try await tx.attempts.active(ended)
            let acknowledged = ended.filter { !stillActive.contains($0) }

            if before.state == .lost {
                let liveHere = Set(try await tx.attempts.liveRanks(on: report.node, activeOnly: false))
                let orphans = report.ranks.filter { $0.state == .running && !liveHere.contains($0.key) }.count
                try await tx.transitions.node(report.node, .agentReturned(orphans: orphans, by: principal))
            }
            return HeartbeatReply(live: try await tx.attempts.liveRanks(on: report.node, activeOnly: true), acknowledged: acknowledged)
        }
    }
}
