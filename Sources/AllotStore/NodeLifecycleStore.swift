import AllotCore
import Foundation
import Logging
import PostgresNIO

/// Cordons, drains (plans with deadlines), maintenance windows, GPU health changes, and silent-pool holds.
public struct NodeLifecycleStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }
    private var logger: Logger { self.database.logger }

    private func requireOperator(_ actor: Principal) throws {
        guard actor.role == .operator else { throw StoreError.forbidden("only operators change nodes' states") }
    }

    /// The node's state, or notFound.
    private func state(of node: String, on c: PostgresConnection) async throws -> NodeState {
        guard
            let s = try await c.query("SELECT state::text FROM nodes WHERE name = \(node) FOR UPDATE", logger: self.logger)
                .decode(String.self).first(where: { _ in true }), let state = NodeState(rawValue: s)
        else { throw StoreError.notFound("node \(node)") }
        return state
    }

    // MARK: - Cordon

    /// No new work on the node; what runs keeps running.
    public func cordon(_ node: String, by actor: Principal) async throws {
        try self.requireOperator(actor)
        try await self.database.transaction { c in
            let state = try await self.state(of: node, on: c)
            guard state == .ready || state == .cordoned else {
                throw StoreError.conflict("node \(node) is \(state.rawValue): only a ready node can be cordoned")
            }
            try await c.query(
                "UPDATE nodes SET state = 'cordoned', state_reason = 'cordoned by ' || \(actor.name) WHERE name = \(node)", logger: self.logger)
            try await AuditStore.append(
                c, logger: self.logger, actor: actor, action: "node.cordon", target: "node/\(node)", outcome: "cordoned", detail: [:])
        }
    }

    public func uncordon(_ node: String, by actor: Principal) async throws {
        try self.requireOperator(actor)
        try await self.database.transaction { c in
            let state = try await self.state(of: node, on: c)
            guard state == .cordoned || state == .ready else {
                throw StoreError.conflict("node \(node) is \(state.rawValue), not cordoned (use undrain for a drained node)")
            }
            try await c.query("UPDATE nodes SET state = 'ready', state_reason = NULL WHERE name = \(node)", logger: self.logger)
            try await AuditStore.append(
                c, logger: self.logger, actor: actor, action: "node.uncordon", target: "node/\(node)", outcome: "ready", detail: [:])
        }
    }

    // MARK: - Drain

    /// Starts a drain of `nodes`: no new work at once; work still running at the deadline is stopped with its grace
    /// period and requeued. Returns the drain's id.
    public func drain(
        _ nodes: [String], reason: String, deadlineSeconds: Int64?, by actor: Principal, maintenance: Int64? = nil
    ) async throws -> Int64 {
        try self.requireOperator(actor)
        guard !nodes.isEmpty else { throw StoreError.invalid(field: "nodes", message: "name at least one node") }
        guard !reason.trimmingCharacters(in: .whitespaces).isEmpty else { throw StoreError.invalid(field: "reason", message: "is required") }
        if let d = deadlineSeconds, d < 0 { throw StoreError.invalid(field: "deadline", message: "must not be negative") }
        return try await self.database.transaction { c in
            try await self.drain(nodes, reason: reason, deadlineSeconds: deadlineSeconds, actor: actor, maintenance: maintenance, on: c)
        }
    }

    func drain(
        _ nodes: [String], reason: String, deadlineSeconds: Int64?, actor: Principal, maintenance: Int64?, on c: PostgresConnection
    ) async throws -> Int64 {
        for node in nodes {
            let state = try await self.state(of: node, on: c)
            if state == .lost { throw StoreError.conflict("node \(node) is lost: declare it lost or wait for its agent, then drain") }
        }
        let id = try await c.query(
            """
            INSERT INTO drains (nodes, reason, deadline, created_by, maintenance_id)
            VALUES (\(nodes), \(reason), now() + make_interval(secs => \(deadlineSeconds.map(Double.init))), \(actor.name), \(maintenance))
            RETURNING id
            """, logger: self.logger
        ).decode(Int64.self).first { _ in true }!
        try await c.query(
            """
            UPDATE nodes SET state = CASE WHEN state = 'drained' THEN 'drained'::node_state ELSE 'draining'::node_state END,
                   drain_id = \(id), state_reason = \(reason)
            WHERE name = ANY(\(nodes))
            """, logger: self.logger)
        try await AuditStore.append(
            c, logger: self.logger, actor: actor, action: "node.drain", target: nodes.map { "node/\($0)" }.joined(separator: ","),
            outcome: "drain \(id)", detail: ["reason": reason, "deadline": deadlineSeconds.map { "\($0)s" } ?? "none"])
        return id
    }

    /// Returns a draining or drained node to service.
    public func undrain(_ node: String, by actor: Principal) async throws {
        try self.requireOperator(actor)
        try await self.database.transaction { c in
            let state = try await self.state(of: node, on: c)
            guard [.draining, .drained, .maintenance, .cordoned, .ready].contains(state) else {
                throw StoreError.conflict("node \(node) is \(state.rawValue): it cannot be undrained")
            }
            try await self.returnToService(node, actor: actor, on: c)
        }
    }

    private func returnToService(_ node: String, actor: Principal, on c: PostgresConnection) async throws {
        try await c.query(
            "UPDATE nodes SET state = 'ready', state_reason = NULL, drain_id = NULL WHERE name = \(node) AND state <> 'lost'", logger: self.logger)
        try await c.query(
            "UPDATE node_downtime SET ended_at = now() WHERE node = \(node) AND ended_at IS NULL AND kind = 'planned'", logger: self.logger)
        try await AuditStore.append(
            c, logger: self.logger, actor: actor, action: "node.undrain", target: "node/\(node)", outcome: "ready", detail: [:])
    }

    public func drainView(_ id: Int64) async throws -> DrainView {
        let rows = try await self.database.query("SELECT id, reason, deadline, created_at, finished_at FROM drains WHERE id = \(id)")
        guard
            let (id, reason, deadline, created, finished) = try await rows.decode((Int64, String, Date?, Date, Date?).self).first(where: { _ in true }
            )
        else { throw StoreError.notFound("drain \(id)") }
        var nodes: [DrainView.NodeProgress] = []
        let progress = try await self.database.query(
            """
            SELECT n.name, n.state::text,
                   coalesce(array_agg(DISTINCT r.job_id) FILTER (WHERE r.job_id IS NOT NULL), '{}')
            FROM nodes n
            LEFT JOIN attempt_ranks r ON r.node = n.name AND r.state IN ('pending', 'running')
            WHERE n.name = ANY((SELECT nodes FROM drains WHERE id = \(id))::text[])
            GROUP BY n.name, n.state ORDER BY n.name
            """)
        for try await (node, state, jobs) in progress.decode((String, String, [Int64]).self) {
            nodes.append(DrainView.NodeProgress(node: node, state: NodeState(rawValue: state) ?? .lost, jobs: jobs))
        }
        return DrainView(id: id, reason: reason, deadline: deadline, createdAt: created, finishedAt: finished, nodes: nodes)
    }

    /// Moves drains on: past the deadline, running work is stopped (training gets its grace period, then requeues
    /// keeping its priority and submit time); an empty draining node becomes drained (planned downtime starts);
    /// a drain whose nodes are all drained is finished. A gang on a drained node is stopped whole, never in part.
    public func advanceDrains() async throws {
        try await self.database.transaction { c in
            let overdue = try await c.query(
                """
                SELECT DISTINCT a.job_id, a.number, n.name, d.reason FROM nodes n
                JOIN drains d ON d.id = n.drain_id
                JOIN attempt_ranks r ON r.node = n.name AND r.state IN ('pending', 'running')
                JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
                WHERE n.state = 'draining' AND d.deadline <= now() AND a.state IN ('placed', 'starting', 'running') AND a.stop_requested_at IS NULL
                """, logger: self.logger
            ).decode((Int64, Int, String, String).self).reduce(into: [(Int64, Int, String, String)]()) { $0.append($1) }
            for (job, attempt, node, reason) in overdue {
                try await AttemptStore(database: self.database).requestStop(
                    jobID: job, attempt: attempt, endAs: .drained, reason: "node \(node) drained at its deadline: \(reason)", exitCode: nil, on: c)
            }
            let drained = try await c.query(
                """
                UPDATE nodes n SET state = 'drained'
                WHERE n.state = 'draining'
                  AND NOT EXISTS (SELECT 1 FROM attempt_ranks r JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
                                  WHERE r.node = n.name AND a.state IN ('placed', 'starting', 'running'))
                RETURNING n.name, n.state_reason
                """, logger: self.logger
            ).decode((String, String?).self).reduce(into: [(String, String?)]()) { $0.append($1) }
            for (node, reason) in drained {
                try await c.query(
                    "INSERT INTO node_downtime (node, kind, reason) VALUES (\(node), 'planned', \(reason)) ON CONFLICT DO NOTHING",
                    logger: self.logger)
                try await AuditStore.append(
                    c, logger: self.logger, actor: .scheduler, action: "node.drained", target: "node/\(node)", outcome: "drained", detail: [:])
            }
            try await c.query(
                """
                UPDATE drains d SET finished_at = now()
                WHERE finished_at IS NULL AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.drain_id = d.id AND n.state = 'draining')
                """, logger: self.logger)
        }
    }

    // MARK: - Maintenance windows

    public func addMaintenance(_ request: MaintenanceRequest, by actor: Principal) async throws -> MaintenanceWindow {
        try self.requireOperator(actor)
        guard !request.nodes.isEmpty else { throw StoreError.invalid(field: "nodes", message: "name at least one node") }
        guard request.startsAt < request.endsAt else { throw StoreError.invalid(field: "end", message: "must be after the start") }
        guard request.endsAt > Date() else { throw StoreError.invalid(field: "end", message: "is in the past") }
        guard !request.reason.trimmingCharacters(in: .whitespaces).isEmpty else { throw StoreError.invalid(field: "reason", message: "is required") }
        return try await self.database.transaction { c in
            let known = try await c.query("SELECT name FROM nodes WHERE name = ANY(\(request.nodes))", logger: self.logger)
                .decode(String.self).reduce(into: Set<String>()) { $0.insert($1) }
            if let unknown = request.nodes.first(where: { !known.contains($0) }) { throw StoreError.notFound("node \(unknown)") }
            let id = try await c.query(
                """
                INSERT INTO maintenance_windows (nodes, starts_at, ends_at, reason, created_by)
                VALUES (\(request.nodes), \(request.startsAt), \(request.endsAt), \(request.reason), \(actor.name)) RETURNING id
                """, logger: self.logger
            ).decode(Int64.self).first { _ in true }!
            try await AuditStore.append(
                c, logger: self.logger, actor: actor, action: "maintenance.add", target: "maintenance/\(id)", outcome: "ok",
                detail: ["nodes": request.nodes.joined(separator: ","), "reason": request.reason])
            return MaintenanceWindow(
                id: id, nodes: request.nodes, startsAt: request.startsAt, endsAt: request.endsAt, reason: request.reason, createdBy: actor.name,
                startedAt: nil, endedAt: nil)
        }
    }

    public func listMaintenance(includeEnded: Bool = false) async throws -> [MaintenanceWindow] {
        let rows = try await self.database.query(
            """
            SELECT id, nodes, starts_at, ends_at, reason, created_by, started_at, ended_at FROM maintenance_windows
            WHERE \(includeEnded) OR ended_at IS NULL ORDER BY starts_at, id
            """)
        var out: [MaintenanceWindow] = []
        for try await (id, nodes, start, end, reason, by, started, ended) in rows.decode(
            (Int64, [String], Date, Date, String, String, Date?, Date?).self)
        {
            out.append(
                MaintenanceWindow(
                    id: id, nodes: nodes, startsAt: start, endsAt: end, reason: reason, createdBy: by, startedAt: started, endedAt: ended))
        }
        return out
    }

    /// Removes a window; one under way ends at once and returns its nodes.
    public func removeMaintenance(_ id: Int64, by actor: Principal) async throws {
        try self.requireOperator(actor)
        try await self.database.transaction { c in
            let nodes = try await c.query(
                "DELETE FROM maintenance_windows WHERE id = \(id) RETURNING nodes, started_at IS NOT NULL AND ended_at IS NULL", logger: self.logger
            ).decode(([String], Bool).self).first { _ in true }
            guard let (names, underWay) = nodes else { throw StoreError.notFound("maintenance window \(id)") }
            if underWay {
                for n in names { try await self.returnToService(n, actor: actor, on: c) }
            }
            try await AuditStore.append(
                c, logger: self.logger, actor: actor, action: "maintenance.remove", target: "maintenance/\(id)", outcome: "ok", detail: [:])
        }
    }

    /// Starts windows whose time has come (their nodes drain, work still there stopped at once with its grace
    /// period) and ends those past their end (nodes drained for them return to service).
    public func advanceMaintenance() async throws {
        try await self.database.transaction { c in
            let starting = try await c.query(
                """
                UPDATE maintenance_windows SET started_at = now()
                WHERE started_at IS NULL AND starts_at <= now() AND ends_at > now() RETURNING id, nodes, reason
                """, logger: self.logger
            ).decode((Int64, [String], String).self).reduce(into: [(Int64, [String], String)]()) { $0.append($1) }
            for (id, nodes, reason) in starting {
                let present = try await c.query("SELECT name FROM nodes WHERE name = ANY(\(nodes)) AND state <> 'lost'", logger: self.logger)
                    .decode(String.self).reduce(into: [String]()) { $0.append($1) }
                if !present.isEmpty {
                    _ = try await self.drain(present, reason: "maintenance: \(reason)", deadlineSeconds: 0, actor: .scheduler, maintenance: id, on: c)
                }
            }
            let ending = try await c.query(
                """
                UPDATE maintenance_windows SET ended_at = now()
                WHERE ended_at IS NULL AND ends_at <= now() RETURNING id
                """, logger: self.logger
            ).decode(Int64.self).reduce(into: [Int64]()) { $0.append($1) }
            for id in ending {
                let nodes = try await c.query(
                    "SELECT n.name FROM nodes n JOIN drains d ON d.id = n.drain_id WHERE d.maintenance_id = \(id)", logger: self.logger
                ).decode(String.self).reduce(into: [String]()) { $0.append($1) }
                for n in nodes { try await self.returnToService(n, actor: .scheduler, on: c) }
            }
        }
    }

    /// Seconds until each node's next maintenance window, for placement.
    public func upcomingMaintenance() async throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        let rows = try await self.database.query(
            """
            SELECT n, min(greatest(0, extract(epoch FROM starts_at - now())))::bigint
            FROM maintenance_windows, unnest(nodes) AS n WHERE ended_at IS NULL GROUP BY n
            """)
        for try await (node, seconds) in rows.decode((String, Int64).self) { out[node] = seconds }
        return out
    }

    // MARK: - GPU health

    /// An operator (or a passing check) returns a GPU to service.
    public func restoreGPU(node: String, index: Int, reason: String, by actor: Principal) async throws {
        try self.requireOperator(actor)
        try await self.database.transaction { c in
            guard
                let from = try await c.query(
                    "SELECT health::text FROM gpus WHERE node = \(node) AND idx = \(index) FOR UPDATE", logger: self.logger
                ).decode(String.self).first(where: { _ in true })
            else { throw StoreError.notFound("GPU \(index) of node \(node)") }
            guard from != "healthy" else { return }
            try await c.query("UPDATE gpus SET health = 'healthy', health_detail = NULL WHERE node = \(node) AND idx = \(index)", logger: self.logger)
            try await c.query(
                """
                INSERT INTO gpu_health_events (node, gpu_index, from_health, to_health, cause, actor)
                VALUES (\(node), \(index), \(from)::gpu_health, 'healthy', \(reason), \(actor.name))
                """, logger: self.logger)
            try await AuditStore.append(
                c, logger: self.logger, actor: actor, action: "gpu.restore", target: "node/\(node)/gpu/\(index)", outcome: "healthy",
                detail: ["reason": reason])
        }
    }

    public func detail(_ node: String) async throws -> NodeDetail {
        guard let view = try await NodeStore(database: self.database).list().first(where: { $0.name == node }) else {
            throw StoreError.notFound("node \(node)")
        }
        let reason =
            try await self.database.query("SELECT state_reason FROM nodes WHERE name = \(node)").decode(String?.self).first { _ in true } ?? nil
        var events: [GPUHealthEvent] = []
        let rows = try await self.database.query(
            """
            SELECT gpu_index, at, from_health::text, to_health::text, cause, xid, job_id, actor
            FROM gpu_health_events WHERE node = \(node) ORDER BY at, id
            """)
        for try await (idx, at, from, to, cause, xid, job, actor) in rows.decode((Int, Date, String, String, String, Int?, Int64?, String).self) {
            events.append(
                GPUHealthEvent(
                    gpuIndex: idx, at: at, from: GPUHealth(rawValue: from) ?? .healthy, to: GPUHealth(rawValue: to) ?? .healthy, cause: cause,
                    xid: xid, jobID: job, actor: actor))
        }
        let jobs = try await self.database.query(
            """
            SELECT DISTINCT r.job_id FROM attempt_ranks r JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
            WHERE r.node = \(node) AND a.state IN ('placed', 'starting', 'running') ORDER BY 1
            """
        ).decode(Int64.self).reduce(into: [Int64]()) { $0.append($1) }
        return NodeDetail(node: view, stateReason: reason, healthEvents: events, runningJobs: jobs)
    }

    // MARK: - Loss

    /// An operator declares a node lost (dead, or silent in a held pool): its attempts end `lost` and requeue,
    /// and its GPUs are released.
    public func declareLost(_ node: String, by actor: Principal) async throws {
        try self.requireOperator(actor)
        try await self.database.transaction { c in
            _ = try await self.state(of: node, on: c)
            try await AttemptStore(database: self.database).markLost([node], reason: "declared lost by \(actor.name)", actor: actor, on: c)
            try await c.query("DELETE FROM pool_holds WHERE \(node) = ANY(silent_nodes)", logger: self.logger)
        }
    }
}
