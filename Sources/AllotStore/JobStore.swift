import AllotCore
import Foundation
import PostgresNIO

/// Jobs: submission, listing, cancellation. Attempts' lifecycle lives in `AttemptStore`.
public struct JobStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// Stores a validated spec as a queued job, checking it against the pools, organisations and
    /// priority classes in the database. `neverFits` is asked with the pool's nodes to refuse jobs that
    /// could never run. Returns the new job's id.
    public func submit(
        _ spec: JobSpec, by principal: Principal,
        neverFits: @Sendable ([NodeSnapshot]) -> WaitReason?
    ) async throws -> Int64 {
        let org: String
        switch principal.role {
        case .member, .orgAdmin:
            guard let own = principal.org else { throw StoreError.forbidden("this token belongs to no organization") }
            if let asked = spec.org, asked != own {
                throw StoreError.forbidden("a member of \(own) cannot submit for \(asked)")
            }
            org = own
        case .operator:
            guard let asked = spec.org else { throw StoreError.invalid(field: "org", message: "is required when an operator submits") }
            org = asked
        case .auditor, .agent:
            throw StoreError.forbidden("a \(principal.role.rawValue) token cannot submit jobs")
        }
        let nodes = try await SchedulerStore(database: self.database).nodeSnapshots(pool: spec.pool)
        if let reason = neverFits(nodes) {
            throw StoreError.invalid(field: spec.gpuMilli != nil ? "gpuMilli" : "gpusPerNode", message: reason.text)
        }
        return try await self.database.transaction { connection in
            let logger = self.database.logger
            var restricted: [String]?
            for try await r in try await connection.query("SELECT restricted_to FROM pools WHERE name = \(spec.pool)", logger: logger)
                .decode([String].self)
            { restricted = r }
            guard let restricted else { throw StoreError.invalid(field: "pool", message: "unknown pool '\(spec.pool)'") }
            if !restricted.isEmpty && !restricted.contains(org) {
                throw StoreError.forbidden("pool \(spec.pool) is restricted to \(restricted.joined(separator: ", "))")
            }
            let orgExists =
                try await connection.query("SELECT 1 FROM organizations WHERE name = \(org)", logger: logger)
                .decode(Int.self).first { _ in true } != nil
            guard orgExists else { throw StoreError.invalid(field: "org", message: "unknown organization '\(org)'") }

            let allocated =
                try await connection.query(
                    """
                    SELECT 1 FROM allocations WHERE org = \(org) AND pool = \(spec.pool)
                      AND (valid_from IS NULL OR current_date BETWEEN valid_from AND valid_until)
                    """, logger: logger
                ).decode(Int.self).first { _ in true } != nil
            guard allocated else {
                throw StoreError.invalid(field: "pool", message: "\(org) has no allocation in force in pool \(spec.pool)")
            }
            let (className, priority, maxTime) = try await self.priorityClass(spec.priorityClass, on: connection)
            if let maxTime, let limit = spec.timeLimitSeconds, limit > maxTime {
                throw StoreError.invalid(
                    field: "timeLimit", message: "\(limit)s is more than priority class \(className) allows (\(maxTime)s)")
            }
            let envJSON = String(decoding: try JSONEncoder().encode(spec.env), as: UTF8.self)
            let timeLimit = spec.timeLimitSeconds ?? maxTime
            let rows = try await connection.query(
                """
                INSERT INTO jobs (name, org, project, owner, kind, pool, gpu_models, nodes, gpus_per_node, gpu_milli,
                                  cpu_milli_per_node, memory_mib_per_node, priority_class, priority, time_limit_s, command, env,
                                  working_dir, max_attempts, exclusive, whole_node_memory, reason)
                VALUES (\(spec.name), \(org), \(spec.project), \(principal.name), \(spec.kind.rawValue)::job_kind, \(spec.pool),
                        \(spec.gpuModel), \(spec.nodes), \(spec.gpusPerNode), \(spec.gpuMilli), \(spec.cpuMilliPerNode),
                        \(spec.memoryMiBPerNode), \(className), \(priority), \(timeLimit), \(spec.command), \(envJSON)::jsonb,
                        \(spec.workingDir), \(spec.maxAttempts), \(spec.exclusive), \(spec.wholeNodeMemory), 'waiting for the scheduler')
                RETURNING id
                """, logger: logger)
            guard let id = try await rows.decode(Int64.self).first(where: { _ in true }) else {
                throw StoreError.conflict("the job was not stored")
            }
            try await AuditStore.append(
                connection, logger: logger, actor: principal, action: "job.submit", target: "job/\(id)", outcome: "queued",
                detail: ["org": org, "pool": spec.pool, "nodes": "\(spec.nodes)", "gpusPerNode": "\(spec.gpusPerNode)"])
            return id
        }
    }

    /// The named class, the policy's default class, or (when no classes are declared) `default` at 0.
    private func priorityClass(_ name: String?, on connection: PostgresConnection) async throws -> (String, Int, Int64?) {
        let logger = self.database.logger
        var wanted = name
        if wanted == nil {
            wanted =
                try await connection.query("SELECT priority_class FROM policy_defaults", logger: logger)
                .decode(String?.self).first { _ in true } ?? nil
        }
        if let wanted {
            for try await (n, v, t) in try await connection.query(
                "SELECT name, value, max_time_s FROM priority_classes WHERE name = \(wanted)", logger: logger
            ).decode((String, Int, Int64?).self) { return (n, v, t) }
            throw StoreError.invalid(field: "priorityClass", message: "unknown priority class '\(wanted)'")
        }
        return ("default", 0, nil)
    }

    /// Jobs, newest first, optionally by state and organisation; `visibleTo` limits members to their own.
    public func list(state: JobState?, org: String?, visibleTo principal: Principal, limit: Int = 500) async throws -> [JobView] {
        let orgFilter = principal.seesAllOrganizations ? org : principal.org
        if !principal.seesAllOrganizations, let org, org != principal.org { return [] }
        let rows = try await self.database.query(
            """
            SELECT \(unescaped: Self.jobColumns) FROM jobs
            WHERE (\(state?.rawValue)::job_state IS NULL OR state = \(state?.rawValue)::job_state)
              AND (\(orgFilter)::text IS NULL OR org = \(orgFilter))
            ORDER BY id DESC LIMIT \(limit)
            """)
        var jobs = try await Self.decodeJobs(rows)
        try await self.attachAttempts(&jobs)
        return jobs
    }

    public func show(_ id: Int64, visibleTo principal: Principal) async throws -> JobView {
        let rows = try await self.database.query("SELECT \(unescaped: Self.jobColumns) FROM jobs WHERE id = \(id)")
        var jobs = try await Self.decodeJobs(rows)
        guard !jobs.isEmpty, principal.seesAllOrganizations || jobs[0].org == principal.org else {
            throw StoreError.notFound("job \(id)")
        }
        try await self.attachAttempts(&jobs)
        return jobs[0]
    }

    /// Cancels a job: a queued one at once; a live one is stopped (SIGTERM, grace, SIGKILL) and ends cancelled.
    public func cancel(_ id: Int64, by principal: Principal) async throws -> JobView {
        let job = try await self.show(id, visibleTo: principal)
        if principal.role == .auditor || principal.role == .agent { throw StoreError.forbidden("a \(principal.role.rawValue) cannot cancel jobs") }
        if principal.role == .member && job.owner != principal.name && job.org != principal.org {
            throw StoreError.forbidden("job \(id) belongs to another organization")
        }
        try await self.database.transaction { connection in
            let logger = self.database.logger
            try await connection.query(
                """
                UPDATE jobs SET state = 'cancelled', reason = 'cancelled by ' || \(principal.name), ended_at = now(), updated_at = now()
                WHERE id = \(id) AND state = 'queued'
                """, logger: logger)
            try await connection.query(
                "UPDATE jobs SET cancel_requested = true, updated_at = now() WHERE id = \(id) AND state NOT IN ('succeeded', 'failed', 'cancelled')",
                logger: logger)
            // Every live attempt: a job being moved off a draining node has two for a while.
            let live = try await connection.query(
                "SELECT number FROM attempts WHERE job_id = \(id) AND state IN ('placed', 'starting', 'running')", logger: logger
            ).decode(Int.self).reduce(into: [Int]()) { $0.append($1) }
            for attempt in live {
                try await AttemptStore(database: self.database).requestStop(
                    jobID: id, attempt: attempt, endAs: .cancelled, reason: "cancelled by \(principal.name)", exitCode: nil, on: connection)
            }
            try await AuditStore.append(
                connection, logger: logger, actor: principal, action: "job.cancel", target: "job/\(id)",
                outcome: job.state.isTerminal ? "already \(job.state.rawValue)" : "ok",
                detail: [:])
        }
        return try await self.show(id, visibleTo: principal)
    }

    static let jobColumns = """
        id, name, org, project, owner, kind::text, pool, state::text, reason, exit_code, nodes, gpus_per_node, gpu_milli,
        priority_class, priority, time_limit_s, max_attempts, command, submitted_at, updated_at, estimated_start
        """

    static func decodeJobs(_ rows: PostgresRowSequence) async throws -> [JobView] {
        var jobs: [JobView] = []
        for try await row in rows {
            let (id, name, org, project, owner, kind, pool, state, reason, exitCode) =
                try row.decode((Int64, String, String, String?, String, String, String, String, String?, Int?).self)
            let columns = row.makeRandomAccess()
            jobs.append(
                JobView(
                    id: id, name: name, org: org, project: project, owner: owner, kind: JobKind(rawValue: kind) ?? .training, pool: pool,
                    state: JobState(rawValue: state) ?? .queued, reason: reason, exitCode: exitCode,
                    nodes: try columns[10].decode(Int.self), gpusPerNode: try columns[11].decode(Int.self),
                    gpuMilli: try columns[12].decode(Int?.self), priorityClass: try columns[13].decode(String.self),
                    priority: try columns[14].decode(Int.self), timeLimitSeconds: try columns[15].decode(Int64?.self),
                    maxAttempts: try columns[16].decode(Int.self), command: try columns[17].decode(String.self),
                    submittedAt: try columns[18].decode(Date.self), updatedAt: try columns[19].decode(Date.self), attempts: [],
                    estimatedStart: try columns[20].decode(Date?.self)))
        }
        return jobs
    }

    private func attachAttempts(_ jobs: inout [JobView]) async throws {
        guard !jobs.isEmpty else { return }
        let ids = jobs.map(\.id)
        var ranks: [String: [RankView]] = [:]
        let rankRows = try await self.database.query(
            """
            SELECT job_id, attempt, rank, node, gpu_indices, milli_per_gpu, state::text, exit_code
            FROM attempt_ranks WHERE job_id = ANY(\(ids)) ORDER BY job_id, attempt, rank
            """)
        for try await (job, attempt, rank, node, gpus, milli, state, exit) in rankRows.decode(
            (Int64, Int, Int, String, [Int], Int, String, Int?).self)
        {
            ranks["\(job).\(attempt)", default: []].append(
                RankView(rank: rank, node: node, gpus: gpus, gpuMilli: milli, state: state, exitCode: exit))
        }
        var attempts: [Int64: [AttemptView]] = [:]
        let rows = try await self.database.query(
            """
            SELECT job_id, number, state::text, reason, exit_code, placed_at, started_at, ended_at
            FROM attempts WHERE job_id = ANY(\(ids)) ORDER BY job_id, number
            """)
        for try await (job, number, state, reason, exit, placed, started, ended) in rows.decode(
            (Int64, Int, String, String?, Int?, Date, Date?, Date?).self)
        {
            attempts[job, default: []].append(
                AttemptView(
                    number: number, state: AttemptState(rawValue: state) ?? .failed, reason: reason, exitCode: exit, placedAt: placed,
                    startedAt: started, endedAt: ended, nodes: ranks["\(job).\(number)"] ?? []))
        }
        for i in jobs.indices { jobs[i].attempts = attempts[jobs[i].id] ?? [] }
    }
}
