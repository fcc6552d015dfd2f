public import AllotCore
import Foundation
import PostgresNIO

/// Operators' plans for nodes: cordons, drains (with deadlines), maintenance windows and GPUs returned to
/// service; and the monitor's rounds that move drains and windows on. Node states change only through the
/// node lifecycle, attempts' only through theirs.
public struct NodeLifecycleStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    // MARK: - Cordon

    /// No new work on the node; what runs keeps running.
    public func cordon(_ node: String, by actor: Principal) async throws {
        try await self.database.transaction { tx in try await tx.transitions.node(node, .cordon(by: actor)) }
    }

    public func uncordon(_ node: String, by actor: Principal) async throws {
        try await self.database.transaction { tx in try await tx.transitions.node(node, .uncordon(by: actor)) }
    }

    // MARK: - Drain

    /// Starts a drain of `nodes`: no new work at once; work still running at the deadline is stopped with its grace
    /// period and requeued. Returns the drain's id.
    public func drain(_ nodes: [String], reason: String, deadlineSeconds: Int64?, by actor: Principal) async throws -> Int64 {
        guard !nodes.isEmpty else { throw StoreError.invalid(field: "nodes", message: "name at least one node") }
        guard !reason.trimmingCharacters(in: .whitespaces).isEmpty else { throw StoreError.invalid(field: "reason", message: "is required") }
        if let d = deadlineSeconds, d < 0 { throw StoreError.invalid(field: "deadlineSeconds", message: "must not be negative") }
        return try await self.database.transaction { tx in
            try await Self.drain(nodes, reason: reason, deadlineSeconds: deadlineSeconds, actor: actor, maintenance: nil, in: tx)
        }
    }

    static func drain(
        _ nodes: [String], reason: String, deadlineSeconds: Int64?, actor: Principal, maintenance: Int64?, in tx: Transaction
    ) async throws -> Int64 {
        // A node the drain cannot take (a lost one) refuses, and the whole drain rolls back with it.
        let id = try await tx.plans.insertDrain(
            nodes, reason: reason, deadlineSeconds: deadlineSeconds, createdBy: actor.name, maintenance: maintenance)
        for node in nodes { try await tx.transitions.node(node, .drain(id: id, reason: reason)) }
        try await tx.audit.append(
            AuditEntry(
                actor: actor, action: "node.drain", target: nodes.map { "node/\($0)" }.joined(separator: ","), outcome: "drain \(id)",
                detail: ["reason": reason, "deadline": deadlineSeconds.map { "\($0)s" } ?? "none"]))
        return id
    }

    /// Returns a draining or drained node to service.
    public func undrain(_ node: String, by actor: Principal) async throws {
        try await self.database.transaction { tx in try await tx.transitions.node(node, .undrain(by: actor)) }
    }

    public func drainView(_ id: Int64) async throws -> DrainView {
        try await self.database.read { tx in
            guard
                let (id, reason, deadline, created, finished) = try await tx.query(
                    "SELECT id, reason, deadline, created_at, finished_at FROM drains WHERE id = \(id)"
                ).decode((Int64, String, Date?, Date, Date?).self).first()
            else { throw StoreError.notFound("drain \(id)") }
            var nodes: [DrainView.NodeProgress] = []
            let progress = try await tx.query(
                """
                SELECT n.name, n.state::text,
                       coalesce(array_agg(DISTINCT r.job_id) FILTER (WHERE r.job_id IS NOT NULL), '{}')
                FROM nodes n
                LEFT JOIN attempt_ranks r ON r.node = n.name AND rank_is_active(r.state)
                WHERE n.name = ANY((SELECT nodes FROM drains WHERE id = \(id))::text[])
                GROUP BY n.name, n.state ORDER BY n.name
                """)
            for try await (node, state, jobs) in progress.decode((String, String, [Int64]).self) {
                nodes.append(DrainView.NodeProgress(node: node, state: try decoded(state, "nodes.state"), jobs: jobs))
            }
            return DrainView(id: id, reason: reason, deadline: deadline, createdAt: created, finishedAt: finished, nodes: nodes)
        }
    }

    /// Moves drains on: past the deadline, running work is stopped (training gets its grace period, then requeues
    /// keeping its priority and submit time); an empty draining node becomes drained (planned downtime starts);
    /// a drain whose nodes are all drained is finished. A gang on a drained node is stopped whole, never in part.
    public func advanceDrains() async throws {
        try await self.database.transaction { tx in
            for overdue in try await tx.attempts.pastDrainDeadline() {
                try await tx.transitions.attempt(
                    overdue.job, overdue.number,
                    .stop(endAs: .drained, reason: "node \(overdue.node) drained at its deadline: \(overdue.reason)", faultAt: overdue.deadline))
            }
            for node in try await tx.nodes.emptyDraining() { try await tx.transitions.node(node, .emptied) }
            try await tx.plans.finishDrains()
        }
    }

    // MARK: - Maintenance windows

    public func addMaintenance(_ request: MaintenanceRequest, by actor: Principal) async throws -> MaintenanceWindow {
        guard !request.nodes.isEmpty else { throw StoreError.invalid(field: "nodes", message: "name at least one node") }
        guard request.startsAt < request.endsAt else { throw StoreError.invalid(field: "endsAt", message: "must be after startsAt") }
        guard request.endsAt > Date() else { throw StoreError.invalid(field: "endsAt", message: "is in the past") }
        guard !request.reason.trimmingCharacters(in: .whitespaces).isEmpty else { throw StoreError.invalid(field: "reason", message: "is required") }
        return try await self.database.transaction { tx in
            let known = Set(try await tx.nodes.existing(request.nodes))
            if let unknown = request.nodes.first(where: { !known.contains($0) }) { throw StoreError.notFound("node \(unknown)") }
            let id = try await tx.plans.insertWindow(request, createdBy: actor.name)
            try await tx.audit.append(
                AuditEntry(
                    actor: actor, action: "maintenance.add", target: "maintenance/\(id)", outcome: "ok",
                    detail: ["nodes": request.nodes.joined(separator: ","), "reason": request.reason]))
            return MaintenanceWindow(
                id: id, nodes: request.nodes, startsAt: request.startsAt, endsAt: request.endsAt, reason: request.reason, createdBy: actor.name,
                startedAt: nil, endedAt: nil)
        }
    }

    public func listMaintenance(includeEnded: Bool = false) async throws -> [MaintenanceWindow] {
        try await self.database.read { tx in
            let rows = try await tx.query(
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
    }

    /// Removes a window; one under way ends at once and returns its nodes.
    public func removeMaintenance(_ id: Int64, by actor: Principal) async throws {
        try await self.database.transaction { tx in
            guard let window = try await tx.plans.deleteWindow(id) else { throw StoreError.notFound("maintenance window \(id)") }
            if window.underWay {
                for node in try await tx.nodes.existing(window.nodes) { try await tx.transitions.node(node, .windowEnded(by: actor)) }
            }
            try await tx.audit.append(AuditEntry(actor: actor, action: "maintenance.remove", target: "maintenance/\(id)", outcome: "ok"))
        }
    }

    /// Starts windows whose time has come (their nodes drain, work still there stopped at once with its grace
    /// period) and ends those past their end (nodes drained for them return to service).
    public func advanceMaintenance() async throws {
        try await self.database.transaction { tx in
            for window in try await tx.plans.startDueWindows() {
                let present = try await tx.nodes.existing(window.nodes, excludingLost: true)
                if !present.isEmpty {
                    _ = try await Self.drain(
                        present, reason: "maintenance: \(window.reason)", deadlineSeconds: 0, actor: .scheduler, maintenance: window.id, in: tx)
                }
            }
            for window in try await tx.plans.endDueWindows() {
                for node in window.nodes { try await tx.transitions.node(node, .windowEnded(by: .scheduler)) }
            }
        }
    }

    // MARK: - GPU health

    /// An operator (or a passing check) returns a GPU to service.
    public func restoreGPU(node: String, index: Int, reason: String, by actor: Principal) async throws {
        try await self.database.transaction { tx in
            guard try await tx.nodes.restoreGPU(node: node, index: index, reason: reason, actor: actor) else { return }
            try await tx.audit.append(
                AuditEntry(actor: actor, action: "gpu.restore", target: "node/\(node)/gpu/\(index)", outcome: "healthy", detail: ["reason": reason]))
        }
    }
}
