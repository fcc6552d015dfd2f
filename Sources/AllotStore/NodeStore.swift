import AllotCore
import Foundation
import Logging
import PostgresNIO

/// Nodes and their GPUs: registration by operators, reports from agents, listings.
public struct NodeStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }
    private var logger: Logger { self.database.logger }

    /// Registers a node in a pool and makes its agent token (returned once).
    public func add(name: String, pool: String, block: String?, by actor: Principal) async throws -> String {
        guard actor.role == .operator else { throw StoreError.forbidden("only operators add nodes") }
        return try await self.database.transaction { connection in
            let poolExists =
                try await connection.query("SELECT 1 FROM pools WHERE name = \(pool)", logger: self.logger)
                .decode(Int.self).first { _ in true } != nil
            guard poolExists else { throw StoreError.invalid(field: "pool", message: "unknown pool '\(pool)' (apply Policies/ first)") }
            do {
                try await connection.query("INSERT INTO nodes (name, pool, block) VALUES (\(name), \(pool), \(block))", logger: self.logger)
            } catch let error as PSQLError where error.sqlState == "23505" {
                throw StoreError.conflict("node \(name) exists already")
            } catch let error as PSQLError where error.sqlState == "23514" {
                throw StoreError.invalid(field: "name", message: "must be 1–63 letters, digits, '.', '_' or '-', starting with a letter or digit")
            }
            let secret = try await TokenStore(database: self.database).create(
                name: "agent:\(name)", role: .agent, org: nil, node: name, on: connection)
            try await AuditStore.append(
                connection, logger: self.logger, actor: actor, action: "node.add", target: "node/\(name)", outcome: "ok",
                detail: ["pool": pool, "block": block ?? ""])
            return secret
        }
    }

    public func list() async throws -> [NodeView] {
        var nodes: [NodeView] = []
        let rows = try await self.database.query(
            "SELECT name, pool, block, state::text, agent_url, cpu_milli, memory_mib, last_heartbeat FROM nodes ORDER BY name")
        for try await (name, pool, block, state, url, cpu, memory, heartbeat) in rows.decode(
            (String, String, String?, String, String?, Int, Int, Date?).self)
        {
            nodes.append(
                NodeView(
                    name: name, pool: pool, block: block, state: NodeState(rawValue: state) ?? .lost, agentURL: url, cpuMilli: cpu,
                    memoryMiB: memory, lastHeartbeat: heartbeat, gpus: [], usedGPUMilli: [:]))
        }
        var index: [String: Int] = [:]
        for (i, n) in nodes.enumerated() { index[n.name] = i }
        let gpus = try await self.database.query(
            """
            SELECT node, idx, uuid, model, memory_mib, nvlink_domain, mig_mode, health::text, health_detail, claimed_milli
            FROM gpus WHERE present ORDER BY node, idx
            """)
        for try await (node, idx, uuid, model, memory, domain, mig, health, detail, claimed) in gpus.decode(
            (String, Int, String, String, Int, Int?, String?, String, String?, Int).self)
        {
            guard let i = index[node] else { continue }
            nodes[i].gpus.append(
                GPUInfo(
                    index: idx, uuid: uuid, model: model, memoryMiB: memory, nvlinkDomain: domain, migMode: mig,
                    health: GPUHealth(rawValue: health) ?? .quarantined, healthDetail: detail))
            if claimed > 0 { nodes[i].usedGPUMilli["\(idx)"] = claimed }
        }
        return nodes
    }

    /// Applies an agent's register or heartbeat: refreshes the node's inventory and liveness (a lost node
    /// that reports again is ready again), records its ranks' states, and answers with the ranks still live.
    public func report(_ report: AgentReport, from principal: Principal) async throws -> HeartbeatReply {
        guard principal.role == .agent, principal.node == report.node else {
            throw StoreError.forbidden("this token acts only for node \(principal.node ?? "-"), not \(report.node)")
        }
        return try await self.database.transaction { connection in
            let previous = try await connection.query(
                """
                UPDATE nodes n SET last_heartbeat = now(), agent_url = \(report.agentURL), callback_token = \(report.callbackToken),
                       cpu_milli = \(report.cpuMilli), memory_mib = \(report.memoryMiB)
                FROM nodes old WHERE n.name = \(report.node) AND old.name = n.name
                RETURNING old.state::text
                """, logger: self.logger
            ).decode(String.self).first { _ in true }
            guard let previous else { throw StoreError.notFound("node \(report.node)") }
            try await self.upsertGPUs(report.gpus, node: report.node, on: connection)
            let acknowledged = try await AttemptStore(database: self.database).apply(report.ranks, node: report.node, on: connection)
            if previous == NodeState.lost.rawValue {
                // A lost node's GPUs go back to work only once its agent shows that nothing the scheduler no
                // longer knows still runs there (the reply below asks it to stop such processes).
                let liveHere = try await connection.query(
                    """
                    SELECT r.job_id, r.attempt, r.rank FROM attempt_ranks r JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
                    WHERE r.node = \(report.node) AND a.state IN ('placed', 'starting', 'running')
                    """, logger: self.logger
                ).decode((Int64, Int, Int).self).reduce(into: Set<RankKey>()) { $0.insert(RankKey(jobID: $1.0, attempt: $1.1, rank: $1.2)) }
                let orphans = report.ranks.filter { $0.state == .running && !liveHere.contains($0.key) }
                if orphans.isEmpty {
                    try await connection.query(
                        "UPDATE nodes SET state = 'ready', state_reason = NULL WHERE name = \(report.node)", logger: self.logger)
                    try await connection.query(
                        "UPDATE node_downtime SET ended_at = now() WHERE node = \(report.node) AND kind = 'lost' AND ended_at IS NULL",
                        logger: self.logger)
                    try await AuditStore.append(
                        connection, logger: self.logger, actor: principal, action: "node.return", target: "node/\(report.node)",
                        outcome: "ready", detail: [:])
                } else {
                    try await connection.query(
                        """
                        UPDATE nodes SET state_reason = 'returning: waiting for ' || \(orphans.count) || ' orphaned processes to stop'
                        WHERE name = \(report.node)
                        """, logger: self.logger)
                }
            }
            let live = try await connection.query(
                """
                SELECT r.job_id, r.attempt, r.rank FROM attempt_ranks r
                JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
                WHERE r.node = \(report.node) AND a.state IN ('placed', 'starting', 'running') AND r.state IN ('pending', 'running')
                """, logger: self.logger
            ).decode((Int64, Int, Int).self).reduce(into: [RankKey]()) { $0.append(RankKey(jobID: $1.0, attempt: $1.1, rank: $1.2)) }
            return HeartbeatReply(live: live, acknowledged: acknowledged)
        }
    }

    private func upsertGPUs(_ gpus: [GPUInfo], node: String, on connection: PostgresConnection) async throws {
        let idx = gpus.map(\.index)
        var before: [Int: GPUHealth] = [:]
        for try await (i, h) in try await connection.query("SELECT idx, health::text FROM gpus WHERE node = \(node)", logger: self.logger)
            .decode((Int, String).self)
        { before[i] = GPUHealth(rawValue: h) }
        var gpus = gpus
        var events: [(index: Int, from: GPUHealth, to: GPUHealth, cause: String, xid: Int?)] = []
        for (k, gpu) in gpus.enumerated() {
            var current = before[gpu.index] ?? .healthy
            // XIDs grade the GPU: the application's faults make it suspect, the hardware's quarantine it.
            for event in gpu.xids {
                let fresh =
                    try await connection.query(
                        "INSERT INTO gpu_xid_seen (node, gpu_index, xid, at) VALUES (\(node), \(gpu.index), \(event.xid), \(event.at)) ON CONFLICT DO NOTHING RETURNING 1",
                        logger: self.logger
                    ).decode(Int.self).first { _ in true } != nil
                guard fresh else { continue }
                let target: GPUHealth? =
                    switch XidEvent.grade(event.xid) {
                    case .hardware: .quarantined
                    case .application: current == .healthy ? .suspect : nil
                    case .informational: nil
                    }
                if let target, target != current {
                    events.append((gpu.index, current, target, "XID \(event.xid): \(event.message)", event.xid))
                    current = target
                }
            }
            if gpu.health == .quarantined && current != .quarantined {
                events.append((gpu.index, current, .quarantined, gpu.healthDetail ?? "reported unhealthy by the agent", nil))
                current = .quarantined
            }
            if current != .healthy && gpu.health != .quarantined { gpus[k].health = current }
            if current == .quarantined && gpus[k].healthDetail == nil { gpus[k].healthDetail = events.last { $0.index == gpu.index }?.cause }
        }
        try await connection.query(
            """
            INSERT INTO gpus (node, idx, uuid, model, memory_mib, nvlink_domain, mig_mode, health, health_detail, present)
            SELECT \(node), g.idx, g.uuid, g.model, g.memory, nullif(g.domain, -1), nullif(g.mig, ''), g.health::gpu_health, nullif(g.detail, ''), true
            FROM unnest(\(idx)::integer[], \(gpus.map(\.uuid))::text[], \(gpus.map(\.model))::text[], \(gpus.map(\.memoryMiB))::integer[],
                        \(gpus.map { $0.nvlinkDomain ?? -1 })::integer[], \(gpus.map { $0.migMode ?? "" })::text[],
                        \(gpus.map(\.health.rawValue))::text[], \(gpus.map { $0.healthDetail ?? "" })::text[])
                 AS g(idx, uuid, model, memory, domain, mig, health, detail)
            ON CONFLICT (node, idx) DO UPDATE SET
                uuid = EXCLUDED.uuid, model = EXCLUDED.model, memory_mib = EXCLUDED.memory_mib, nvlink_domain = EXCLUDED.nvlink_domain,
                mig_mode = EXCLUDED.mig_mode, present = true,
                -- Health only worsens here: back to healthy is an operator's call (allot nodes restore-gpu).
                health = CASE WHEN gpus.health = 'quarantined' OR (gpus.health = 'suspect' AND EXCLUDED.health = 'healthy')
                              THEN gpus.health ELSE EXCLUDED.health END,
                health_detail = CASE WHEN gpus.health = 'quarantined' OR (gpus.health = 'suspect' AND EXCLUDED.health = 'healthy')
                              THEN gpus.health_detail ELSE EXCLUDED.health_detail END
            """, logger: self.logger)
        for e in events {
            try await connection.query(
                """
                INSERT INTO gpu_health_events (node, gpu_index, from_health, to_health, cause, xid, job_id, actor)
                VALUES (\(node), \(e.index), \(e.from.rawValue)::gpu_health, \(e.to.rawValue)::gpu_health, \(e.cause), \(e.xid),
                        (SELECT job_id FROM gpu_claims WHERE node = \(node) AND gpu_index = \(e.index) AND released_at IS NULL LIMIT 1),
                        'agent:' || \(node))
                """, logger: self.logger)
            try await AuditStore.append(
                connection, logger: self.logger, actor: Principal(name: "agent:\(node)", role: .agent, node: node), action: "gpu.health",
                target: "node/\(node)/gpu/\(e.index)", outcome: "\(e.from.rawValue) → \(e.to.rawValue)", detail: ["cause": e.cause])
        }
        try await connection.query(
            "UPDATE gpus SET present = false WHERE node = \(node) AND present AND NOT (idx = ANY(\(idx)::integer[]))", logger: self.logger)
    }

    /// The heartbeat timeout in force (from Policies/ defaults).
    public func heartbeatTimeoutSeconds() async throws -> Int {
        try await self.database.query("SELECT heartbeat_timeout_s FROM policy_defaults").decode(Int.self).first { _ in true } ?? 30
    }
}
