import AllotCore
import Foundation
import PostgresNIO

/// The one writer of `drains` and `maintenance_windows`: the operators' plans for nodes.
struct NodePlansTable {
    let tx: Transaction

    /// A new drain of `nodes`; returns its id.
    func insertDrain(_ nodes: [String], reason: String, deadlineSeconds: Int64?, createdBy: String, maintenance: Int64?) async throws -> Int64 {
        guard
            let id = try await self.tx.query(
                """
                INSERT INTO drains (nodes, reason, deadline, created_by, maintenance_id)
                VALUES (\(nodes), \(reason), now() + make_interval(secs => \(deadlineSeconds.map(Double.init))), \(createdBy), \(maintenance))
                RETURNING id
                """
            ).decode(Int64.self).first()
        else { throw StoreError.conflict("the drain was not stored") }
        return id
    }

    /// Drains none of whose nodes is still draining are finished.
    func finishDrains() async throws {
        try await self.tx.query(
            """
            UPDATE drains d SET finished_at = now()
            WHERE finished_at IS NULL AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.drain_id = d.id AND n.state = 'draining')
            """)
    }

    func insertWindow(_ request: MaintenanceRequest, createdBy: String) async throws -> Int64 {
        guard
            let id = try await self.tx.query(
                """
                INSERT INTO maintenance_windows (nodes, starts_at, ends_at, reason, created_by)
                VALUES (\(request.nodes), \(request.startsAt), \(request.endsAt), \(request.reason), \(createdBy)) RETURNING id
                """
            ).decode(Int64.self).first()
        else { throw StoreError.conflict("the window was not stored") }
        return id
    }

    /// Deletes a window; returns its nodes and whether it was under way, or nil when there is no such window.
    func deleteWindow(_ id: Int64) async throws -> (nodes: [String], underWay: Bool)? {
        try await self.tx.query(
            "DELETE FROM maintenance_windows WHERE id = \(id) RETURNING nodes, started_at IS NOT NULL AND ended_at IS NULL"
        ).decode(([String], Bool).self).first().map { (nodes: $0.0, underWay: $0.1) }
    }

    /// Windows whose start has come, marked started.
    func startDueWindows() async throws -> [(id: Int64, nodes: [String], reason: String)] {
        try await self.tx.query(
            """
            UPDATE maintenance_windows SET started_at = now()
            WHERE started_at IS NULL AND starts_at <= now() AND ends_at > now() RETURNING id, nodes, reason
            """
        ).decode((Int64, [String], String).self).array().map { (id: $0.0, nodes: $0.1, reason: $0.2) }
    }

    /// Windows past their end, marked ended, each with the nodes drained for it.
    func endDueWindows() async throws -> [(id: Int64, nodes: [String])] {
        let ended = try await self.tx.query(
            "UPDATE maintenance_windows SET ended_at = now() WHERE ended_at IS NULL AND ends_at <= now() RETURNING id"
        ).decode(Int64.self).array()
        var out: [(id: Int64, nodes: [String])] = []
        for id in ended {
            let nodes = try await self.tx.query(
                "SELECT n.name FROM nodes n JOIN drains d ON d.id = n.drain_id WHERE d.maintenance_id = \(id) ORDER BY n.name"
            ).decode(String.self).array()
            out.append((id, nodes))
        }
        return out
    }
}

/// The one writer of `reclaims`: when an organisation asked for its guarantee back, and when it got it.
struct ReclaimsTable {
    let tx: Transaction

    /// Records a reclaim for `job` (asking `gpus`), due by the policy's reclaim deadline from now; returns the
    /// grace period its victims get: the policy's, or less so that they are gone (killed if need be) with 30 s of
    /// the deadline to spare for the cycle that places the job.
    func insert(job: Int64, org: String, pool: String, gpus: Double, victims: [Int64]) async throws -> Int {
        try await self.tx.query(
            """
            INSERT INTO reclaims (job_id, org, pool, victims, requested_gpus, deadline_at)
            SELECT \(job), \(org), \(pool), \(victims), \(gpus), now() + make_interval(secs => reclaim_deadline_s) FROM policy_defaults
            RETURNING (SELECT least(grace_period_s, greatest(1, reclaim_deadline_s - 30)) FROM policy_defaults)
            """
        ).decode(Int.self).first { _ in true } ?? 1
    }

    /// The jobs were placed: their reclaims, if any, are satisfied now.
    func satisfy(jobs: [Int64]) async throws {
        try await self.tx.query("UPDATE reclaims SET satisfied_at = now() WHERE job_id = ANY(\(jobs)) AND satisfied_at IS NULL")
    }
}

extension Transaction {
    var plans: NodePlansTable { NodePlansTable(tx: self) }
    var reclaims: ReclaimsTable { ReclaimsTable(tx: self) }
}
