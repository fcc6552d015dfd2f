public import AllotCore
import Foundation
import PostgresNIO

/// The cluster's gauges as `/metrics` exports them, read from PostgreSQL at scrape time (one read), so every
/// allotd reports the same cluster.
public struct ClusterGauges: Sendable {
    public struct Queue: Sendable, Hashable {
        public var org: String
        public var priorityClass: String
        public var jobs: Int
    }
    public struct PoolGPUs: Sendable, Hashable {
        public var pool: String
        /// Held by live attempts, fractions by their share.
        public var allocated: Double
        /// Whole, unused, healthy GPUs of ready nodes.
        public var free: Double
        public var quarantined: Double
    }
    public var queues: [Queue] = []
    /// Age of the oldest queued job, by organisation.
    public var oldestQueuedSeconds: [String: Double] = [:]
    public var gpus: [PoolGPUs] = []
    /// Nodes by pool and state.
    public var nodes: [String: [NodeState: Int]] = [:]
    public var heldPools: Set<String> = []
    /// Seconds since each node's agent last reported.
    public var heartbeatAgeSeconds: [String: Double] = [:]
    public var quota: [QuotaRow] = []
    /// Age of the oldest reclaim still waiting (its job queued), by organisation × pool.
    public var reclaimPendingSeconds: [QuotaBook.Key: Double] = [:]
    /// Reclaims asked for in the last 30 days, by organisation × pool and outcome (kept, missed, pending).
    public var reclaims: [QuotaBook.Key: [Statement.Reclaim.Outcome: Int]] = [:]
    public var reclaimDeadlineSeconds: Double = 300
}

public struct StatusStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    public func gauges() async throws -> ClusterGauges {
        try await self.database.transaction(.repeatableRead) { tx in
            var g = ClusterGauges()
            for try await (org, klass, n) in try await tx.query(
                "SELECT org, priority_class, count(*)::bigint FROM jobs WHERE state = 'queued' GROUP BY 1, 2 ORDER BY 1, 2"
            ).decode((String, String, Int64).self) {
                g.queues.append(ClusterGauges.Queue(org: org, priorityClass: klass, jobs: Int(n)))
            }
            for try await (org, age) in try await tx.query(
                "SELECT org, extract(epoch FROM now() - min(submitted_at))::float8 FROM jobs WHERE state = 'queued' GROUP BY 1 ORDER BY 1"
            ).decode((String, Double).self) {
                g.oldestQueuedSeconds[org] = age
            }
            for try await (pool, allocated, free, quarantined) in try await tx.query(
                """
                SELECT n.pool, coalesce(sum(g.claimed_milli), 0)::float8 / 1000,
                       count(*) FILTER (WHERE g.claimed_milli = 0 AND g.health <> 'quarantined' AND n.state = 'ready')::float8,
                       count(*) FILTER (WHERE g.health = 'quarantined')::float8
                FROM gpus g JOIN nodes n ON n.name = g.node WHERE g.present GROUP BY n.pool ORDER BY n.pool
                """
            ).decode((String, Double, Double, Double).self) {
                g.gpus.append(ClusterGauges.PoolGPUs(pool: pool, allocated: allocated, free: free, quarantined: quarantined))
            }
            for try await (pool, state, n) in try await tx.query("SELECT pool, state::text, count(*)::bigint FROM nodes GROUP BY 1, 2")
                .decode((String, String, Int64).self)
            {
                g.nodes[pool, default: [:]][try decoded(state, "nodes.state")] = Int(n)
            }
            g.heldPools = Set(try await tx.query("SELECT pool FROM pool_holds").decode(String.self).array())
            for try await (node, age) in try await tx.query(
                "SELECT name, extract(epoch FROM now() - last_heartbeat)::float8 FROM nodes WHERE last_heartbeat IS NOT NULL ORDER BY name"
            ).decode((String, Double).self) {
                g.heartbeatAgeSeconds[node] = age
            }
            g.quota = try await QuotaStore.rows(in: tx)
            g.reclaimDeadlineSeconds =
                try await tx.query("SELECT reclaim_deadline_s::float8 FROM policy_defaults").decode(Double.self).first { _ in true } ?? 300
            for try await (org, pool, age) in try await tx.query(
                """
                SELECT r.org, r.pool, extract(epoch FROM now() - min(r.requested_at))::float8 FROM reclaims r JOIN jobs j ON j.id = r.job_id
                WHERE r.satisfied_at IS NULL AND j.state = 'queued' GROUP BY 1, 2 ORDER BY 1, 2
                """
            ).decode((String, String, Double).self) {
                g.reclaimPendingSeconds[QuotaBook.Key(org: org, pool: pool)] = age
            }
            for try await (org, pool, satisfied, deadline, now) in try await tx.query(
                "SELECT org, pool, satisfied_at, deadline_at, now() FROM reclaims WHERE requested_at > now() - interval '30 days'"
            ).decode((String, String, Date?, Date, Date).self) {
                g.reclaims[QuotaBook.Key(org: org, pool: pool), default: [:]][
                    StatementStore.outcome(satisfied: satisfied, deadline: deadline, asOf: now), default: 0] += 1
            }
            return g
        }
    }
}
