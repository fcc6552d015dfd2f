public import AllotCore
import Foundation
import Logging
import PostgresNIO

/// Jobs as users see them: submission, listing, cancellation. Each call is one transaction; what it changes
/// goes through the job's lifecycle.
public struct JobStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// Stores a validated spec as a queued job, checking it against the pools, organisations and priority
    /// classes in the database. The organisation is the scope's (a member's own) or, for a scope of every
    /// organisation, the spec's. `neverFits` is asked with the pool's nodes to refuse jobs that could never run.
    /// Returns the new job's id.
    public func submit(
        _ spec: JobSpec, by principal: Principal, scope: Scope? = nil,
        neverFits: @Sendable (JobSpec, [NodeSnapshot]) -> WaitReason?
    ) async throws -> Int64 {
        let org: String
        switch scope ?? principal.scope {
        case .organization(let own):
            if let asked = spec.org, asked != own { throw StoreError.forbidden("a member of \(own) cannot submit for \(asked)") }
            org = own
        case .all:
            guard let asked = spec.org else { throw StoreError.invalid(field: "org", message: "is required when an operator submits") }
            org = asked
        case .node:
            throw StoreError.forbidden("an agent token cannot submit jobs")
        }
        return try await self.database.transaction { tx in
            var spec = spec
            let pool = try await Self.pool(spec.pool, org: org, in: tx)
            spec.pool = pool
            let nodes = try await ClusterReader(tx: tx).nodeSnapshots(pool: pool)
            let models = Set(nodes.flatMap { $0.gpus.map(\.model) })
            spec.gpuModel = spec.gpuModel.map { PendingJob.model(named: $0, among: models) ?? $0 }
            if let reason = neverFits(spec, nodes) {
                throw StoreError.invalid(field: spec.gpuMilli != nil ? "gpuMilli" : "gpusPerNode", message: reason.text)
            }
            guard let restricted = try await tx.query("SELECT restricted_to FROM pools WHERE name = \(pool)").decode([String].self).first()
            else { throw StoreError.invalid(field: "pool", message: "unknown pool '\(pool.prefix(64))'") }
            if !restricted.isEmpty && !restricted.contains(org) {
                throw StoreError.forbidden("pool \(pool) is restricted to \(restricted.joined(separator: ", "))")
            }
            guard try await tx.query("SELECT 1 FROM organizations WHERE name = \(org)").decode(Int.self).first() != nil else {
                throw StoreError.invalid(field: "org", message: "unknown organization '\(org)'")
            }
            let grant = try await tx.query(
                """
                SELECT projects::text FROM allocations WHERE org = \(org) AND pool = \(pool) AND superseded_at IS NULL
                  AND (valid_from IS NULL OR current_date BETWEEN valid_from AND valid_until)
                ORDER BY valid_from NULLS LAST LIMIT 1
                """
            ).decode(String.self).first { _ in true }
            guard let grant else {
                throw StoreError.invalid(field: "pool", message: "\(org) has no allocation in force in pool \(pool)")
            }
            // Where the grant is split into projects, a job names one of them (Slurm refuses an unknown account too).
            let limits = (try? JSONDecoder().decode([ProjectLimit].self, from: Data(grant.utf8))) ?? []
            let projects = limits.map(\.name)
            // No project named (Slurm's `-A org` alone): the user's default, the first project that lists them.
            if spec.project == nil { spec.project = limits.first { $0.users[principal.name] != nil }?.name }
            if let project = spec.project, !projects.isEmpty, !projects.contains(project) {
                throw StoreError.invalid(
                    field: "project",
                    message: "'\(project.prefix(64))' is not one of \(org)'s projects in pool \(pool) (\(projects.joined(separator: ", ")))")
            }
            let (className, priority, maxTime, classOrgs, classRoles) = try await Self.priorityClass(spec.priorityClass, in: tx)
            // Policy says who may use which class (a class that preempts is not everyone's).
            if !classOrgs.isEmpty && !classOrgs.contains(org) {
                throw StoreError.forbidden("priority class \(className) is not for \(org)'s jobs (Policies/: \(classOrgs.joined(separator: ", ")))")
            }
            if !classRoles.isEmpty && !classRoles.contains(principal.role.rawValue) {
                throw StoreError.forbidden(
                    "priority class \(className) is not for \(principal.role.rawValue) tokens (Policies/: \(classRoles.joined(separator: ", ")))")
            }
            if let maxTime, let limit = spec.timeLimitSeconds, limit > maxTime {
                throw StoreError.invalid(
                    field: "timeLimit", message: "\(limit)s is more than priority class \(className) allows (\(maxTime)s)")
            }
            let id = try await tx.jobs.insert(
                spec, org: org, owner: principal.name, priorityClass: className, priority: priority,
                timeLimitSeconds: spec.timeLimitSeconds ?? maxTime)
            try await tx.audit.append(
                AuditEntry(
                    actor: principal, action: "job.submit", target: "job/\(id)", outcome: "queued",
                    detail: ["org": org, "pool": pool, "nodes": "\(spec.nodes)", "gpusPerNode": "\(spec.gpusPerNode)"]))
            return id
        }
    }

    /// The pool named, else the policy's default pool, else the one pool the organisation has an allocation in
    /// force in (Slurm's default partition); where none of those decides, an error naming the choices.
    private static func pool(_ named: String?, org: String, in tx: Transaction) async throws -> String {
        if let named { return named }
        if let fallback = try await tx.query("SELECT default_pool FROM policy_defaults").decode(String?.self).first() ?? nil { return fallback }
        let pools = try await tx.query(
            """
            SELECT DISTINCT pool FROM allocations WHERE org = \(org) AND superseded_at IS NULL
              AND (valid_from IS NULL OR current_date BETWEEN valid_from AND valid_until)
            ORDER BY pool
            """
        ).decode(String.self).reduce(into: [String]()) { $0.append($1) }
        if pools.count == 1 { return pools[0] }
        if pools.isEmpty { throw StoreError.invalid(field: "pool", message: "is not given, and \(org) has no allocation in force in any pool") }
        throw StoreError.invalid(
            field: "pool",
            message: "is not given and there is no default pool: choose one of \(org)'s pools (\(pools.joined(separator: ", "))) with -p or pool:")
    }

    /// The named class, the policy's default class, or (when no classes are declared) `default` at 0.
    private static func priorityClass(_ name: String?, in tx: Transaction) async throws -> (String, Int, Int64?, [String], [String]) {
        var wanted = name
        if wanted == nil { wanted = try await tx.query("SELECT priority_class FROM policy_defaults").decode(String?.self).first() ?? nil }
        guard let wanted else { return ("default", 0, nil, [], []) }
        guard
            let found = try await tx.query("SELECT name, value, max_time_s, organizations, roles FROM priority_classes WHERE name = \(wanted)")
                .decode((String, Int, Int64?, [String], [String]).self).first()
        else { throw StoreError.invalid(field: "priorityClass", message: "unknown priority class '\(wanted)'") }
        return found
    }

    /// Jobs, newest first, optionally by state and organisation, within `scope`.
    public func list(state: JobState?, org: String?, scope: Scope, limit: Int = 500) async throws -> [JobView] {
        if !scope.seesOrganizations { return [] }
        if let org, !scope.includes(org: org) { return [] }
        let orgFilter = scope.organization ?? org
        return try await self.database.read { tx in
            let rows = try await tx.query(
                """
                SELECT \(unescaped: Self.jobColumns) FROM jobs
                WHERE (\(state?.rawValue)::job_state IS NULL OR state = \(state?.rawValue)::job_state)
                  AND (\(orgFilter)::text IS NULL OR org = \(orgFilter))
                ORDER BY id DESC LIMIT \(limit)
                """)
            var jobs = try await Self.decodeJobs(rows)
            try await Self.attachAttempts(&jobs, in: tx)
            return jobs
        }
    }

    /// One job, if `scope` sees it (else notFound, so a member cannot tell another organisation's job exists).
    public func show(_ id: Int64, scope: Scope) async throws -> JobView {
        try await self.database.read { tx in try await Self.show(id, scope: scope, in: tx) }
    }

    static func show(_ id: Int64, scope: Scope, in tx: Transaction) async throws -> JobView {
        var jobs = try await Self.decodeJobs(try await tx.query("SELECT \(unescaped: Self.jobColumns) FROM jobs WHERE id = \(id)"))
        guard !jobs.isEmpty, scope.includes(org: jobs[0].org) else { throw StoreError.notFound("job \(id)") }
        try await Self.attachAttempts(&jobs, in: tx)
        return jobs[0]
    }

    /// Cancels a job: a queued one at once; a live one is stopped (SIGTERM, grace, SIGKILL) and ends cancelled.
    public func cancel(_ id: Int64, by principal: Principal, scope: Scope) async throws -> JobView {
        try await self.database.transaction { tx in
            _ = try await Self.show(id, scope: scope, in: tx)
            try await tx.transitions.job(id, .cancel(by: principal))
        }
        return try await self.show(id, scope: scope)
    }

    static let jobColumns = """
        id, name, org, project, owner, kind::text, pool, state::text, reason, exit_code, nodes, gpus_per_node, gpu_milli,
        priority_class, priority, time_limit_s, max_attempts, command, submitted_at, updated_at, estimated_start, reason_code
        """

    static func decodeJobs(_ rows: PostgresRowSequence) async throws -> [JobView] {
        var jobs: [JobView] = []
        for try await row in rows {
            let (id, name, org, project, owner, kind, pool, state, reason, exitCode) =
                try row.decode((Int64, String, String, String?, String, String, String, String, String?, Int?).self)
            let columns = row.makeRandomAccess()
            jobs.append(
                JobView(
                    id: id, name: name, org: org, project: project, owner: owner, kind: try decoded(kind, "jobs.kind"), pool: pool,
                    state: try decoded(state, "jobs.state"), reason: reason, exitCode: exitCode,
                    nodes: try columns[10].decode(Int.self), gpusPerNode: try columns[11].decode(Int.self),
                    gpuMilli: try columns[12].decode(Int?.self), priorityClass: try columns[13].decode(String.self),
                    priority: try columns[14].decode(Int.self), timeLimitSeconds: try columns[15].decode(Int64?.self),
                    maxAttempts: try columns[16].decode(Int.self), command: try columns[17].decode(String.self),
                    submittedAt: try columns[18].decode(Date.self), updatedAt: try columns[19].decode(Date.self), attempts: [],
                    estimatedStart: try columns[20].decode(Date?.self), reasonCode: try columns[21].decode(String?.self)))
        }
        return jobs
    }

    static func attachAttempts(_ jobs: inout [JobView], in tx: Transaction) async throws {
        guard !jobs.isEmpty else { return }
        let ids = jobs.map(\.id)
        var ranks: [RankKey: [RankView]] = [:]
        let rankRows = try await tx.query(
            """
            SELECT job_id, attempt, rank, node, gpu_indices, milli_per_gpu, state::text, exit_code
            FROM attempt_ranks WHERE job_id = ANY(\(ids)) ORDER BY job_id, attempt, rank
            """)
        for try await (job, attempt, rank, node, gpus, milli, state, exit) in rankRows.decode(
            (Int64, Int, Int, String, [Int], Int, String, Int?).self)
        {
            ranks[RankKey(jobID: job, attempt: attempt, rank: 0), default: []].append(
                RankView(rank: rank, node: node, gpus: gpus, gpuMilli: milli, state: try decoded(state, "attempt_ranks.state"), exitCode: exit))
        }
        var steps: [RankKey: [StepStatus]] = [:]
        let stepRows = try await tx.query(
            """
            SELECT job_id, attempt, step, command, nodes, tasks, state, exit_code, started_at, ended_at
            FROM job_steps WHERE job_id = ANY(\(ids)) ORDER BY job_id, attempt, step
            """)
        for try await (job, attempt, step, command, nodes, tasks, state, exit, started, ended) in stepRows.decode(
            (Int64, Int, Int, String, Int, Int, String, Int?, Date, Date?).self)
        {
            steps[RankKey(jobID: job, attempt: attempt, rank: 0), default: []].append(
                StepStatus(
                    jobID: job, attempt: attempt, step: step, command: command, nodes: nodes, tasks: tasks,
                    state: StepStatus.State(rawValue: state) ?? .exited, exitCode: exit, startedAt: started, endedAt: ended))
        }
        var attempts: [Int64: [AttemptView]] = [:]
        let rows = try await tx.query(
            """
            SELECT job_id, number, state::text, reason, exit_code, placed_at, started_at, ended_at
            FROM attempts WHERE job_id = ANY(\(ids)) ORDER BY job_id, number
            """)
        for try await (job, number, state, reason, exit, placed, started, ended) in rows.decode(
            (Int64, Int, String, String?, Int?, Date, Date?, Date?).self)
        {
            attempts[job, default: []].append(
                AttemptView(
                    number: number, state: try decoded(state, "attempts.state"), reason: reason, exitCode: exit, placedAt: placed,
                    startedAt: started, endedAt: ended, nodes: ranks[RankKey(jobID: job, attempt: number, rank: 0)] ?? [],
                    steps: steps[RankKey(jobID: job, attempt: number, rank: 0)]))
        }
        for i in jobs.indices { jobs[i].attempts = attempts[jobs[i].id] ?? [] }
    }
}
