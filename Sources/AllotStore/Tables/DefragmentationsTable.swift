import AllotCore
import Foundation
import PostgresNIO

/// The one writer of `defragmentations`: the plans made to gather scattered capacity for a waiting job, the
/// nodes each sets aside for it, and how each ended.
struct DefragmentationsTable {
    let tx: Transaction

    /// Records `plan`, due once its moved attempts have had their grace and five minutes more; nil when the pool
    /// has a plan open already (another replica's, or this one's from a cycle ago).
    func insert(_ plan: DefragmentationPlan) async throws -> Int64? {
        let moves = String(decoding: try JSONEncoder().encode(plan.moves), as: UTF8.self)
        return try await self.tx.query(
            """
            INSERT INTO defragmentations (job_id, pool, nodes, moves, moved, summary, deadline_at)
            SELECT \(plan.jobID), \(plan.pool), \(plan.nodes), \(moves)::jsonb, \(plan.moves.count), \(plan.summary),
                   now() + make_interval(secs => grace_period_s + 300) FROM policy_defaults
            ON CONFLICT (pool) WHERE ended_at IS NULL DO NOTHING
            RETURNING id
            """
        ).decode(Int64.self).first { _ in true }
    }

    /// The jobs were placed: their plans, if any, did their work (by job, each plan's id, so the end is audited).
    func satisfy(jobs: [Int64]) async throws -> [Int64: Int64] {
        var plans: [Int64: Int64] = [:]
        let rows = try await self.tx.query(
            "UPDATE defragmentations SET ended_at = now(), outcome = 'placed' WHERE job_id = ANY(\(jobs)) AND ended_at IS NULL RETURNING job_id, id")
        for try await (job, id) in rows.decode((Int64, Int64).self) { plans[job] = id }
        return plans
    }

    /// Ends the plans that can no longer do their work: past their deadline (expired), or whose job is no
    /// longer queued without having been placed by them (withdrawn: cancelled, held, or ended). Returns them.
    func endStale() async throws -> [(id: Int64, job: Int64, outcome: String)] {
        try await self.tx.query(
            """
            UPDATE defragmentations d SET ended_at = now(),
                   outcome = CASE WHEN j.state = 'queued' AND j.held_by IS NULL AND NOT j.cancel_requested THEN 'expired' ELSE 'withdrawn' END
            FROM jobs j
            WHERE j.id = d.job_id AND d.ended_at IS NULL
              AND (d.deadline_at <= now() OR j.state <> 'queued' OR j.held_by IS NOT NULL OR j.cancel_requested)
            RETURNING d.id, d.job_id, d.outcome
            """
        ).decode((Int64, Int64, String).self).array().map { (id: $0.0, job: $0.1, outcome: $0.2) }
    }

    /// The plans in progress.
    func open() async throws -> [DefragmentationPlan] {
        var plans: [DefragmentationPlan] = []
        let rows = try await self.tx.query("SELECT job_id, pool, nodes, moves::text FROM defragmentations WHERE ended_at IS NULL ORDER BY id")
        for try await (job, pool, nodes, moves) in rows.decode((Int64, String, [String], String).self) {
            let decoded = try JSONDecoder().decode([DefragmentationPlan.Move].self, from: Data(moves.utf8))
            plans.append(DefragmentationPlan(jobID: job, pool: pool, moves: decoded, nodes: nodes))
        }
        return plans
    }

    /// Per pool, the attempts defragmentation may still move this hour (the policy's limit, less those moved in
    /// the last hour), and how long an attempt must have run before it may be moved.
    func limits(pools: Set<String>) async throws -> (movesLeft: [String: Int], minimumRuntimeSeconds: Int64) {
        let policy = try await self.tx.query("SELECT defragment_moves_per_hour, defragment_min_runtime_s::bigint FROM policy_defaults").decode(
            (Int, Int64).self
        ).first { _ in true }
        let (perHour, minimum) = policy ?? (4, Int64(600))
        var moved: [String: Int] = [:]
        let rows = try await self.tx.query(
            "SELECT pool, sum(moved)::int FROM defragmentations WHERE planned_at > now() - interval '1 hour' GROUP BY pool")
        for try await (pool, n) in rows.decode((String, Int).self) { moved[pool] = n }
        var left: [String: Int] = [:]
        for pool in pools { left[pool] = max(0, perHour - (moved[pool] ?? 0)) }
        return (left, minimum)
    }
}

extension Transaction {
    var defragmentations: DefragmentationsTable { DefragmentationsTable(tx: self) }
}
