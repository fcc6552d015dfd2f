public import AllotCore
import Foundation
import Logging
import PostgresNIO

/// Jobs as users see them: submission, listing, cancellation. Each call is one transaction; what it changes
/// goes through the job's lifecycle.
public struct JobStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// Stores a validated spec as a queued job (a batch of one: see `submit(_:neverFits:)`). Returns the new job's id.
    public func submit(
        _ spec: JobSpec, by principal: Principal, scope: Scope? = nil,
        neverFits: @Sendable (JobSpec, [NodeShape]) -> WaitReason?
    ) async throws -> Int64 {
        try await self.submit([Submission(spec, by: principal, scope: scope)], neverFits: neverFits)[0].get().id
    }

    /// Stores validated specs as queued jobs in one transaction: one commit and one extension of the audit chain
    /// for the lot, which is what lets concurrent submissions share PostgreSQL's fsync (group commit, done here
    /// because the audit chain admits one writer at a time). Each is checked on its own against the pools,
    /// organisations and priority classes in the database — the organisation is the scope's (a member's own) or,
    /// for a scope of every organisation, the spec's — under a savepoint of its own, so a refused one (its error
    /// in its place) changes nothing and leaves the others. `neverFits` is asked with the pool's node shapes to refuse
    /// jobs that could never run; `shapes` keeps the pools' node shapes between batches. Nothing is acknowledged
    /// before the commit: a failed commit throws for them all.
    /// Returns each one's job as stored (an array's first task).
    public func submit(
        _ batch: [Submission], shapes: NodeShapeCache? = nil, neverFits: @Sendable (JobSpec, [NodeShape]) -> WaitReason?
    ) async throws -> [Result<JobView, any Error>] {
        do {
            return try await self.stored(batch, shapes: shapes, neverFits: neverFits)
        } catch  where batch.count == 1 {
            // A batch of one is refused by rolling its transaction back: its answer, like any refused submission's.
            return [.failure(error)]
        }
    }

    private func stored(
        _ batch: [Submission], shapes: NodeShapeCache?, neverFits: @Sendable (JobSpec, [NodeShape]) -> WaitReason?
    ) async throws -> [Result<JobView, any Error>] {
        try await self.database.transaction { tx in
            let context = SubmissionContext(tx: tx, cache: shapes)
            // A batch of one needs no savepoint: its refusal rolls the transaction back.
            if batch.count == 1 { return [.success(try await Self.store(batch[0], in: context, neverFits: neverFits))] }
            if let together = try await Self.storedTogether(batch, in: context, neverFits: neverFits) { return together }
            var outcomes: [Result<JobView, any Error>] = []
            for (n, submission) in batch.enumerated() {
                // At most `SubmissionBatcher`'s batch of savepoints, none released: each costs one round trip.
                try await tx.savepoint("s\(n)")
                do {
                    outcomes.append(.success(try await Self.store(submission, in: context, neverFits: neverFits)))
                } catch {
                    // A refusal of the database's (a constraint) aborted the transaction up to the savepoint, which
                    // takes its audit record with it; a lost connection fails the batch.
                    try await tx.rollback(to: "s\(n)")
                    outcomes.append(.failure(self.database.translate(error)))
                }
            }
            return outcomes
        }
    }

    /// A batch checked job by job, then stored in one statement (`insert`), under one savepoint: the usual case,
    /// two round trips fewer per job than a savepoint each. Nil when the database refused something (a constraint
    /// the checks did not foresee): rolled back, for the batch to be stored again one savepoint per job.
    private static func storedTogether(
        _ batch: [Submission], in context: SubmissionContext, neverFits: (JobSpec, [NodeShape]) -> WaitReason?
    ) async throws -> [Result<JobView, any Error>]? {
        try await context.tx.savepoint("together")
        do {
            var checked: [Result<Checked, any Error>] = []
            for submission in batch {
                do {
                    checked.append(.success(try await Self.check(submission, in: context, neverFits: neverFits)))
                } catch let error as PSQLError {
                    throw error  // the transaction is aborted: the batch goes one savepoint per job
                } catch {
                    checked.append(.failure(error))  // a check's own refusal: nothing was written
                }
            }
            var jobs = try await Self.insert(checked.compactMap { try? $0.get() }, in: context.tx).makeIterator()
            return checked.map { outcome in outcome.flatMap { _ in jobs.next().map { .success($0) } ?? .failure(StoreError.conflict("not stored")) } }
        } catch is PSQLError {
            try await context.tx.rollback(to: "together")
            return nil
        }
    }

    /// One submission's checks, rows and audit record, inside the batch's transaction; returns its job as stored.
    private static func store(
        _ submission: Submission, in context: SubmissionContext, neverFits: (JobSpec, [NodeShape]) -> WaitReason?
    ) async throws -> JobView {
        try await Self.insert([try await Self.check(submission, in: context, neverFits: neverFits)], in: context.tx)[0]
    }

    /// A submission that passed its checks: its first row (an array's first task) and what its audit record says.
    private struct Checked {
        var row: NewJob
        var spec: JobSpec
        var principal: Principal
    }

    /// Checked submissions' rows and audit records: every job that is not an array in one statement, an array in two
    /// (its first task names it); returns each one as stored (an array's first task).
    private static func insert(_ checked: [Checked], in tx: Transaction) async throws -> [JobView] {
        var jobs = [JobView?](repeating: nil, count: checked.count)
        let single = checked.indices.filter { checked[$0].spec.array == nil }
        for (i, job) in zip(single, try await tx.jobs.insert(single.map { checked[$0].row })) { jobs[i] = job }
        for i in checked.indices where checked[i].spec.array != nil {
            let (first, indices) = (checked[i].row, checked[i].spec.array?.indices ?? [])
            let job = try await tx.jobs.insert([first])[0]
            // In chunks: one JSON document stays far below PostgreSQL's 256 MB for a jsonb value.
            for start in stride(from: 1, to: indices.count, by: 1000) {
                _ = try await tx.jobs.insert(
                    indices[start..<min(start + 1000, indices.count)].map { index in
                        var task = first
                        (task.arrayJobId, task.arrayTaskId) = (job.id, index)
                        return task
                    })
            }
            jobs[i] = job
        }
        let stored = try jobs.map { job in
            guard let job else { throw StoreError.conflict("a job of the batch was not stored") }
            return job
        }
        for (c, id) in zip(checked, stored.map(\.id)) {
            try await tx.audit.append(
                AuditEntry(
                    actor: c.principal, action: "job.submit", target: "job/\(id)", outcome: "queued",
                    detail: [
                        "org": c.row.org, "pool": c.row.pool ?? "-", "nodes": "\(c.spec.nodes)", "gpusPerNode": "\(c.spec.gpusPerNode)",
                        "array": c.spec.array?.description ?? "-", "dependency": c.spec.dependency?.description ?? "-",
                    ]))
        }
        return stored
    }

    /// One submission's checks against the pools, organisations and classes of the database; what to store.
    private static func check(
        _ submission: Submission, in context: SubmissionContext, neverFits: (JobSpec, [NodeShape]) -> WaitReason?
    ) async throws -> Checked {
        let (principal, tx) = (submission.principal, context.tx)
        var spec = submission.spec
        let org: String
        switch submission.scope ?? principal.scope {
        case .organization(let own):
            if let asked = spec.org, asked != own { throw StoreError.forbidden("a member of \(own) cannot submit for \(asked)") }
            org = own
        case .all:
            guard let asked = spec.org else { throw StoreError.invalid(field: "org", message: "is required when an operator submits") }
            org = asked
        case .node:
            throw StoreError.forbidden("an agent token cannot submit jobs")
        }
        try await context.prefetch(org: org, pool: spec.pool, priorityClass: spec.priorityClass)
        let pool = try await context.pool(spec.pool, org: org)
        spec.pool = pool
        let (shapes, models) = try await context.shapes(pool: pool)
        spec.gpuModel = spec.gpuModel.map { PendingJob.model(named: $0, among: models) ?? $0 }
        if let reason = neverFits(spec, shapes) {
            let field =
                spec.gpuMilli != nil
                ? "gpuMilli" : spec.migProfile != nil ? "migProfile" : spec.gpuMemoryMiB != nil ? "gpuMemory" : "gpusPerNode"
            throw StoreError.invalid(field: field, message: reason.text)
        }
        guard let restricted = try await context.restriction(pool: pool) else {
            throw StoreError.invalid(field: "pool", message: "unknown pool '\(pool.prefix(64))'")
        }
        if !restricted.isEmpty && !restricted.contains(org) {
            throw StoreError.forbidden("pool \(pool) is restricted to \(restricted.joined(separator: ", "))")
        }
        guard try await context.organizationExists(org) else {
            throw StoreError.invalid(field: "org", message: "unknown organization '\(org)'")
        }
        guard let grant = try await context.grant(org: org, pool: pool) else {
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
        let (className, priority, maxTime, classOrgs, classRoles) = try await context.priorityClass(spec.priorityClass)
        // Policy says who may use which class (a class that preempts is not everyone's).
        if !classOrgs.isEmpty && !classOrgs.contains(org) {
            throw StoreError.forbidden("priority class \(className) is not for \(org)'s jobs (Policies/: \(classOrgs.joined(separator: ", ")))")
        }
        if !classRoles.isEmpty && !classRoles.contains(principal.role.rawValue) {
            throw StoreError.forbidden(
                "priority class \(className) is not for \(principal.role.rawValue) tokens (Policies/: \(classRoles.joined(separator: ", ")))")
        }
        if let maxTime, let limit = spec.timeLimitSeconds, limit > maxTime {
            throw StoreError.invalid(field: "timeLimit", message: "\(limit)s is more than priority class \(className) allows (\(maxTime)s)")
        }
        // A dependency names jobs the submitter may see (another organisation's are unknown to a member).
        if let dependency = spec.dependency, !dependency.jobs.isEmpty {
            let seesAll = (submission.scope ?? principal.scope).organization == nil
            let visible = try await tx.query(
                "SELECT id FROM jobs WHERE id = ANY(\(dependency.jobs)) AND (\(seesAll) OR org = \(org))"
            ).decode(Int64.self).reduce(into: Set<Int64>()) { $0.insert($1) }
            if let unknown = dependency.jobs.first(where: { !visible.contains($0) }) {
                throw StoreError.invalid(field: "dependency", message: "job \(unknown) is not a job \(org) can see")
            }
        }
        let held = spec.hold == true ? principal : nil
        if let array = spec.array {
            // One job per index; the first one's id is the array's. Every task stores the spec, so an array's
            // spec is bounded in all (128 MiB), not only each task's.
            let each = spec.command.utf8.count + spec.env.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
            guard each * array.indices.count <= 128 << 20 else {
                throw StoreError.invalid(
                    field: "array",
                    message: "\(array.indices.count) tasks × \(each) bytes of command and env is more than 128 MiB: submit a shorter script")
            }
        }
        let row = try NewJob(
            spec, org: org, owner: principal.name, priorityClass: className, priority: priority,
            timeLimitSeconds: spec.timeLimitSeconds ?? maxTime, array: spec.array.map { (nil, $0.indices[0]) }, heldBy: held)
        return Checked(row: row, spec: spec, principal: principal)
    }

    /// The named class, the policy's default class, or (when no classes are declared) `default` at 0.
    static func priorityClass(_ name: String?, in tx: Transaction) async throws -> (String, Int, Int64?, [String], [String]) {
        var wanted = name
        if wanted == nil { wanted = try await tx.query("SELECT priority_class FROM policy_defaults").decode(String?.self).first() ?? nil }
        guard let wanted else { return ("default", 0, nil, [], []) }
        guard
            let found = try await tx.query("SELECT name, value, max_time_s, organizations, roles FROM priority_classes WHERE name = \(wanted)")
                .decode((String, Int, Int64?, [String], [String]).self).first()
        else { throw StoreError.invalid(field: "priorityClass", message: "unknown priority class '\(wanted)'") }
        return found
    }

    /// Jobs, newest first, optionally by state and organisation, within `scope`; `before` (the last job of the
    /// page before) starts the next page, in the same order.
    public func list(
        state: JobState?, org: String?, scope: Scope, limit: Int = 500, user: String? = nil, name: String? = nil, ended: Bool = false,
        before: Int64? = nil
    ) async throws -> [JobView] {
        if !scope.seesOrganizations { return [] }
        if let org, !scope.includes(org: org) { return [] }
        let orgFilter = scope.organization ?? org
        return try await self.database.read { tx in
            // `ended`: the history (sacct's), most recently ended first.
            let rows = try await tx.query(
                """
                SELECT \(unescaped: Self.jobColumns) FROM jobs
                WHERE (\(state?.rawValue)::job_state IS NULL OR state = \(state?.rawValue)::job_state)
                  AND (\(orgFilter)::text IS NULL OR org = \(orgFilter))
                  AND (\(user)::text IS NULL OR owner = \(user)) AND (\(name)::text IS NULL OR name = \(name))
                  AND (NOT \(ended) OR state IN ('succeeded', 'failed', 'cancelled'))
                  AND (\(before)::bigint IS NULL OR CASE WHEN \(ended)
                         THEN (ended_at, id) < (SELECT b.ended_at, b.id FROM jobs b WHERE b.id = \(before)) ELSE id < \(before) END)
                ORDER BY CASE WHEN \(ended) THEN ended_at END DESC NULLS LAST, id DESC LIMIT \(limit)
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
            let job = try await Self.show(id, scope: scope, in: tx)
            try await tx.transitions.job(id, .cancel(by: principal))
            // The array's id stands for the whole array, as `scancel ARRAYID` (its tasks not yet ended).
            if job.arrayJobID == id {
                for task in try await tx.jobs.openArrayTasks(id) where task != id { _ = try await tx.transitions.job(task, .cancel(by: principal)) }
            }
        }
        return try await self.show(id, scope: scope)
    }

    /// Holds queued jobs (`allot hold`, Slurm's `scontrol hold`): they wait until released. An operator's hold
    /// (JobHeldAdmin) only an operator releases; a member's (JobHeldUser) anyone who may act on the job.
    public func hold(_ id: Int64, by principal: Principal, scope: Scope) async throws -> JobView {
        try await self.database.transaction { tx in
            let job = try await Self.show(id, scope: scope, in: tx)
            guard job.state == .queued else { throw StoreError.conflict("job \(id) is \(job.state.rawValue): only a queued job can be held") }
            let admin = principal.role == .operator
            // An operator's hold stays one: a member's hold over it would let the member release it.
            if !admin, try await tx.jobs.holdKind(id) == "admin" {
                throw StoreError.forbidden("job \(id) is held by an operator: only an operator changes that hold")
            }
            try await tx.jobs.hold(id, by: principal.name, admin: admin)
            try await tx.audit.append(AuditEntry(actor: principal, action: "job.hold", target: "job/\(id)", outcome: admin ? "admin" : "user"))
        }
        return try await self.show(id, scope: scope)
    }

    /// Releases a held job; a job that is not held is left as it is.
    public func release(_ id: Int64, by principal: Principal, scope: Scope) async throws -> JobView {
        try await self.database.transaction { tx in
            let job = try await Self.show(id, scope: scope, in: tx)
            guard job.heldBy != nil else { return }
            if try await tx.jobs.holdKind(id) == "admin" && principal.role != .operator {
                throw StoreError.forbidden("job \(id) is held by an operator (\(job.heldBy ?? "-")): only an operator releases it")
            }
            try await tx.jobs.release(id)
            try await tx.audit.append(AuditEntry(actor: principal, action: "job.release", target: "job/\(id)", outcome: "released"))
        }
        return try await self.show(id, scope: scope)
    }

    /// Requeues a live job (`allot requeue`, Slurm's `scontrol requeue`): its attempt is stopped (SIGTERM, grace)
    /// and the job waits again with its submit time, as a preempted one does. A `--no-requeue` job is refused.
    public func requeue(_ id: Int64, by principal: Principal, scope: Scope) async throws -> JobView {
        try await self.database.transaction { tx in
            let job = try await Self.show(id, scope: scope, in: tx)
            guard [.placed, .starting, .running].contains(job.state) else {
                throw StoreError.conflict("job \(id) is \(job.state.rawValue): only a placed or running job can be requeued")
            }
            guard job.maxAttempts > 1 else {
                throw StoreError.conflict("job \(id) is never requeued: it was submitted with --no-requeue (maxAttempts 1)")
            }
            for a in job.attempts where a.state.isLive {
                try await tx.transitions.attempt(
                    id, a.number, .stop(endAs: .preempted, reason: "requeued by \(principal.name) (allot requeue)", credited: false))
            }
            try await tx.audit.append(AuditEntry(actor: principal, action: "job.requeue", target: "job/\(id)", outcome: "ok"))
        }
        return try await self.show(id, scope: scope)
    }

    /// Changes a queued job (`allot update`, Slurm's `scontrol update`): its name, its time limit (a member
    /// may only shorten it, as in Slurm; within the priority class's maximum) and its priority class (one the
    /// policy lets its organisation and the caller's role use).
    public func update(_ id: Int64, _ change: JobUpdate, by principal: Principal, scope: Scope) async throws -> JobView {
        try await self.database.transaction { tx in
            let job = try await Self.show(id, scope: scope, in: tx)
            guard job.state == .queued else { throw StoreError.conflict("job \(id) is \(job.state.rawValue): only a queued job can be changed") }
            var className = job.priorityClass
            var priority = job.priority
            var maxTime: Int64?
            if let asked = change.priorityClass {
                let (name, value, max, orgs, roles) = try await Self.priorityClass(asked, in: tx)
                if !orgs.isEmpty && !orgs.contains(job.org) { throw StoreError.forbidden("priority class \(name) is not for \(job.org)'s jobs") }
                if !roles.isEmpty && !roles.contains(principal.role.rawValue) {
                    throw StoreError.forbidden("priority class \(name) is not for \(principal.role.rawValue) tokens")
                }
                (className, priority, maxTime) = (name, value, max)
            } else {
                maxTime = try await Self.priorityClass(className, in: tx).2
            }
            let limit = change.timeLimitSeconds ?? job.timeLimitSeconds
            if let t = change.timeLimitSeconds, principal.role != .operator, t > (job.timeLimitSeconds ?? Int64.max) {
                throw StoreError.forbidden("only an operator lengthens a job's time limit (it is \(job.timeLimitSeconds ?? 0)s)")
            }
            if let limit, let maxTime, limit > maxTime {
                throw StoreError.invalid(field: "timeLimit", message: "\(limit)s is more than priority class \(className) allows (\(maxTime)s)")
            }
            try await tx.jobs.update(id, name: change.name ?? job.name, timeLimitSeconds: limit, priorityClass: className, priority: priority)
            try await tx.audit.append(
                AuditEntry(
                    actor: principal, action: "job.update", target: "job/\(id)", outcome: "ok",
                    detail: [
                        "name": change.name ?? "-", "timeLimitSeconds": change.timeLimitSeconds.map(String.init) ?? "-",
                        "priorityClass": change.priorityClass ?? "-",
                    ]))
        }
        return try await self.show(id, scope: scope)
    }

    static let jobColumns = """
        id, name, org, project, owner, kind::text, pool, state::text, reason, exit_code, nodes, gpus_per_node, gpu_milli,
        priority_class, priority, time_limit_s, max_attempts, command, submitted_at, updated_at, estimated_start, reason_code,
        array_job_id, array_task_id, array_limit, dependency, held_by, ended_at, time_min_s, warn_signal, begin_at, movable,
        mig_profile, gpu_memory_mib
        """

    static func decodeJobs(_ rows: Rows) async throws -> [JobView] {
        var jobs: [JobView] = []
        for try await row in rows {
            let (id, name, org, project, owner, kind, pool, state, reason, exitCode) =
                try row.decode((Int64, String, String, String?, String, String, String, String, String?, Int?).self)
            let columns = row.makeRandomAccess()
            var job = JobView(
                id: id, name: name, org: org, project: project, owner: owner, kind: try decoded(kind, "jobs.kind"), pool: pool,
                state: try decoded(state, "jobs.state"), reason: reason, exitCode: exitCode,
                nodes: try columns[10].decode(Int.self), gpusPerNode: try columns[11].decode(Int.self),
                gpuMilli: try columns[12].decode(Int?.self), priorityClass: try columns[13].decode(String.self),
                priority: try columns[14].decode(Int.self), timeLimitSeconds: try columns[15].decode(Int64?.self),
                maxAttempts: try columns[16].decode(Int.self), command: try columns[17].decode(String.self),
                submittedAt: try columns[18].decode(Date.self), updatedAt: try columns[19].decode(Date.self), attempts: [],
                estimatedStart: try columns[20].decode(Date?.self), reasonCode: try columns[21].decode(String?.self))
            job.arrayJobID = try columns[22].decode(Int64?.self)
            job.arrayTaskID = try columns[23].decode(Int?.self)
            job.arrayLimit = try columns[24].decode(Int?.self)
            job.dependency = try columns[25].decode(String?.self)
            job.heldBy = try columns[26].decode(String?.self)
            job.endedAt = try columns[27].decode(Date?.self)
            job.timeMinSeconds = try columns[28].decode(Int64?.self)
            job.signal = try columns[29].decode(String?.self)
            job.beginAt = try columns[30].decode(Date?.self)
            job.movable = try columns[31].decode(Bool.self) ? true : nil
            job.migProfile = try columns[32].decode(String?.self)
            job.gpuMemoryMiB = try columns[33].decode(Int?.self)
            jobs.append(job)
        }
        return jobs
    }

    static func attachAttempts(_ jobs: inout [JobView], in tx: Transaction) async throws {
        guard !jobs.isEmpty else { return }
        let ids = jobs.map(\.id)
        var ranks: [RankKey: [RankView]] = [:]
        let rankRows = try await tx.query(
            """
            SELECT job_id, attempt, rank, node, gpu_indices, milli_per_gpu, state::text, exit_code, restarts,
                   CASE WHEN dispatched_at IS NULL AND launch > 0 THEN next_dispatch_at END
            FROM attempt_ranks WHERE job_id = ANY(\(ids)) ORDER BY job_id, attempt, rank
            """)
        for try await (job, attempt, rank, node, gpus, milli, state, exit, restarts, restartAt) in rankRows.decode(
            (Int64, Int, Int, String, [Int], Int, String, Int?, Int, Date?).self)
        {
            var view = RankView(rank: rank, node: node, gpus: gpus, gpuMilli: milli, state: try decoded(state, "attempt_ranks.state"), exitCode: exit)
            view.restarts = restarts > 0 ? restarts : nil
            view.restartAt = restartAt
            ranks[RankKey(jobID: job, attempt: attempt, rank: 0), default: []].append(view)
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
        for i in jobs.indices {
            jobs[i].attempts = attempts[jobs[i].id] ?? []
            // A running service with fewer replicas running than it asked is degraded.
            if jobs[i].kind == .inference, jobs[i].state == .running, let live = jobs[i].attempts.last(where: { $0.state == .running }) {
                let running = live.nodes.filter { $0.state == .running }.count
                if running < jobs[i].nodes { jobs[i].degraded = true }
            }
        }
    }
}
