import AllotCore
import Foundation
import PostgresNIO

/// What the scheduling loop reads (a snapshot) and writes (a plan), each in one round of queries.
public struct SchedulerStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// Nodes whose agents have reported, with what live attempts hold on them. Nodes that never reported
    /// are left out: nothing is known of their GPUs yet.
    public func nodeSnapshots(pool: String? = nil) async throws -> [NodeSnapshot] {
        var nodes: [String: NodeSnapshot] = [:]
        let rows = try await self.database.query(
            """
            SELECT name, pool, block, state::text, cpu_milli, memory_mib FROM nodes
            WHERE last_heartbeat IS NOT NULL AND (\(pool)::text IS NULL OR pool = \(pool))
            """)
        for try await (name, pool, block, state, cpu, memory) in rows.decode((String, String, String?, String, Int, Int).self) {
            nodes[name] = NodeSnapshot(
                name: name, pool: pool, block: block, state: NodeState(rawValue: state) ?? .lost, cpuMilli: cpu, memoryMiB: memory, gpus: [])
        }
        let gpus = try await self.database.query(
            """
            SELECT g.node, g.idx, g.model, g.nvlink_domain, g.health::text, g.claimed_milli FROM gpus g JOIN nodes n ON n.name = g.node
            WHERE g.present AND n.last_heartbeat IS NOT NULL AND (\(pool)::text IS NULL OR n.pool = \(pool)) ORDER BY g.node, g.idx
            """)
        for try await (node, idx, model, domain, health, claimed) in gpus.decode((String, Int, String, Int?, String, Int).self) {
            nodes[node]?.gpus.append(
                GPUSlot(index: idx, model: model, nvlinkDomain: domain, health: GPUHealth(rawValue: health) ?? .quarantined, usedMilli: claimed))
        }
        let used = try await self.database.query(
            """
            SELECT r.node, sum(r.cpu_milli)::bigint, sum(r.memory_mib)::bigint
            FROM attempt_ranks r
            JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
            WHERE a.state IN ('placed', 'starting', 'running') AND r.state IN ('pending', 'running')
            GROUP BY r.node
            """)
        for try await (node, cpu, memory) in used.decode((String, Int64, Int64).self) {
            nodes[node]?.usedCPUMilli = Int(cpu)
            nodes[node]?.usedMemoryMiB = Int(memory)
        }
        for (node, seconds) in try await NodeLifecycleStore(database: self.database).upcomingMaintenance() {
            nodes[node]?.maintenanceInSeconds = seconds
        }
        return nodes.values.sorted { $0.name < $1.name }
    }

    /// Each organisation × pool with an allocation in force: guarantee, limit, GPUs held, entitlement left, share used.
    public func quotaBook() async throws -> QuotaBook {
        var book = QuotaBook()
        for r in try await QuotaStore(database: self.database).rows() {
            book[r.org, r.pool] = QuotaEntry(
                guaranteedMilli: r.guaranteedGPUs * 1000, limitMilli: r.limitGPUs * 1000, inUseMilli: Int((r.inUseGPUs * 1000).rounded()),
                remainingGPUSeconds: (r.gpuHours - r.gpuHoursUsed) * 3600, shareUsed: r.gpuHoursUsed / Double(max(r.guaranteedGPUs, 1)))
        }
        return book
    }

    /// Live attempts not being stopped, with where they run, for preemption.
    public func running() async throws -> [RunningAttempt] {
        var out: [RunningAttempt] = []
        let rows = try await self.database.query(
            """
            SELECT a.job_id, a.number, j.org, j.pool, a.borrowed, floor(extract(epoch FROM coalesce(a.started_at, a.placed_at)))::bigint,
                   r.rank, r.node, r.gpu_indices, r.milli_per_gpu, r.cpu_milli, r.memory_mib,
                   floor(extract(epoch FROM coalesce(a.started_at, a.placed_at)))::bigint + j.time_limit_s,
                   coalesce((SELECT pc.preemptible FROM priority_classes pc WHERE pc.name = j.priority_class), false), j.priority
            FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
            WHERE a.state IN ('placed', 'starting', 'running') AND a.stop_requested_at IS NULL
            ORDER BY a.job_id, a.number, r.rank
            """)
        for try await row in rows {
            let (job, attempt, org, pool, borrowed, started, rank, node, gpus, milli, cpu, memory, endsAt, preemptible, priority) = try row.decode(
                (Int64, Int, String, String, Bool, Int64, Int, String, [Int], Int, Int, Int, Int64?, Bool, Int).self)
            let r = RankAssignment(rank: rank, node: node, gpuIndices: gpus, milliPerGPU: milli, cpuMilli: cpu, memoryMiB: memory)
            if let last = out.last, last.jobID == job, last.attempt == attempt {
                out[out.count - 1].ranks.append(r)
            } else {
                var running = RunningAttempt(
                    jobID: job, attempt: attempt, org: org, pool: pool, borrowing: borrowed, startedAt: started, ranks: [r], endsAt: endsAt)
                running.preemptible = preemptible
                running.priority = priority
                out.append(running)
            }
        }
        return out
    }

    /// Pools where preempted attempts are still stopping: no further reclaim there until they have.
    public func poolsReclaiming() async throws -> Set<String> {
        try await self.database.query(
            """
            SELECT DISTINCT j.pool FROM attempts a JOIN jobs j ON j.id = a.job_id
            WHERE a.state IN ('placed', 'starting', 'running') AND a.stop_state = 'preempted'
            """
        ).decode(String.self).reduce(into: Set<String>()) { $0.insert($1) }
    }

    /// Preempts `victims` so that `job` gets its organisation's guarantee back: each gets SIGTERM and its grace
    /// period, then is requeued. The reclaim is recorded, and timed once the job is placed.
    public func preempt(_ victims: [RunningAttempt], for job: PendingJob, byClass: Bool = false) async throws {
        try await self.database.transaction { connection in
            let attempts = AttemptStore(database: self.database)
            for v in victims {
                try await attempts.requestStop(
                    jobID: v.jobID, attempt: v.attempt, endAs: .preempted,
                    reason: byClass
                        ? "preempted by job \(job.id), whose priority class preempts this one's"
                        : "preempted: \(job.org) reclaims its guaranteed GPUs in pool \(job.pool) (for job \(job.id))", exitCode: nil,
                    on: connection)
            }
            if !byClass {
                try await connection.query(
                    "INSERT INTO reclaims (job_id, org, pool, victims) VALUES (\(job.id), \(job.org), \(job.pool), \(victims.map(\.jobID)))",
                    logger: self.database.logger)
            }
            try await AuditStore.append(
                connection, logger: self.database.logger, actor: .scheduler, action: "job.preempt", target: "job/\(job.id)",
                outcome: "reclaim for \(job.org)", detail: ["victims": victims.map { "\($0.jobID).\($0.attempt)" }.joined(separator: ",")])
        }
    }

    /// Records when waiting jobs are expected to start (nil where it cannot be told).
    public func recordEstimates(_ estimates: [Int64: Int64?]) async throws {
        guard !estimates.isEmpty else { return }
        let ids = Array(estimates.keys)
        // -1 stands for "cannot be told" in the array; it becomes NULL.
        let seconds = ids.map { Double(estimates[$0]! ?? -1) }
        try await self.database.query(
            """
            UPDATE jobs j SET estimated_start = CASE WHEN e.t < 0 THEN NULL ELSE to_timestamp(e.t) END
            FROM unnest(\(ids)::bigint[], \(seconds)::float8[]) AS e(id, t)
            WHERE j.id = e.id AND j.state = 'queued'
            """)
    }

    /// Queued jobs, not being cancelled, reduced to what placement needs.
    public func queue() async throws -> [PendingJob] {
        let rows = try await self.database.query(
            """
            SELECT \(unescaped: Self.pendingColumns) FROM jobs j WHERE j.state = 'queued' AND NOT j.cancel_requested
            ORDER BY j.priority DESC, j.submitted_at, j.id
            """)
        return try await Self.pendingJobs(rows)
    }

    /// The per-node shapes of the attempts placed in the last `hours` (at most `limit`, newest first): the
    /// workload the fragmentation-aware strategy expects besides the queue. A gang counts once per node.
    public func recentShapes(hours: Int = 24, limit: Int = 5000) async throws -> WorkloadMix {
        let rows = try await self.database.query(
            """
            SELECT j.gpus_per_node, j.gpu_milli, j.cpu_milli_per_node, j.memory_mib_per_node, j.nodes
            FROM attempts a JOIN jobs j ON j.id = a.job_id
            WHERE a.placed_at > now() - \(hours)::int * interval '1 hour'
            ORDER BY a.placed_at DESC LIMIT \(limit)
            """)
        var mix = WorkloadMix()
        for try await (gpus, milli, cpu, memory, nodes) in rows.decode((Int, Int?, Int, Int, Int).self) {
            mix.add(NodeRequest(gpus: gpus, fractionMilli: milli, cpuMilli: cpu, memoryMiB: memory), weight: Double(nodes))
        }
        return mix
    }

    /// The columns `pendingJobs` reads, in its order (a constant, so splicing it in unescaped is safe).
    static let pendingColumns = """
        j.id, j.org, j.pool, j.gpu_models, j.nodes, j.gpus_per_node, j.gpu_milli, j.cpu_milli_per_node, j.memory_mib_per_node, j.priority,
        extract(epoch FROM j.submitted_at)::bigint, j.time_limit_s, j.exclusive, j.whole_node_memory,
        coalesce((SELECT pc.preempts FROM priority_classes pc WHERE pc.name = j.priority_class), false)
        """

    static func pendingJobs(_ rows: PostgresRowSequence) async throws -> [PendingJob] {
        var jobs: [PendingJob] = []
        for try await row in rows {
            let (id, org, pool, models, nodes, gpus, milli, cpu, memory, priority, submitted, limit, exclusive, allMemory, preempts) =
                try row.decode((Int64, String, String, [String], Int, Int, Int?, Int, Int, Int, Int64, Int64?, Bool, Bool, Bool).self)
            var job =
                PendingJob(
                    id: id, org: org, pool: pool, gpuModels: models, nodes: nodes,
                    perNode: NodeRequest(
                        gpus: gpus, fractionMilli: milli, cpuMilli: cpu, memoryMiB: memory, exclusive: exclusive, allMemory: allMemory),
                    priority: priority, submittedAt: submitted, timeLimitSeconds: limit)
            job.preempts = preempts
            jobs.append(job)
        }
        return jobs
    }

    /// Commits a plan in one transaction: each placement in a savepoint, so a placement that the database
    /// refuses (the job was cancelled, a node left, a GPU was claimed meanwhile) is skipped and the rest stand.
    /// Returns the ids of the jobs placed.
    public func commit(_ plan: Plan) async throws -> [Int64] {
        if plan.placements.isEmpty && plan.waiting.isEmpty { return [] }
        return try await self.database.transaction { connection in
            let logger = self.database.logger
            let placed = try await self.insertEach(plan.placements, on: connection)
            if !plan.waiting.isEmpty {
                let ids = Array(plan.waiting.keys)
                let reasons = ids.map { plan.waiting[$0]!.text }
                try await connection.query(
                    """
                    UPDATE jobs j SET reason = w.reason, updated_at = now()
                    FROM unnest(\(ids)::bigint[], \(reasons)::text[]) AS w(id, reason)
                    WHERE j.id = w.id AND j.state = 'queued' AND j.reason IS DISTINCT FROM w.reason
                    """, logger: logger)
            }
            return placed
        }
    }

    /// Inference jobs whose current attempt runs on a draining node and has no replacement yet: they are placed
    /// elsewhere first, and their old attempt is stopped once the replacement runs.
    public func replacementsNeeded() async throws -> [PendingJob] {
        let rows = try await self.database.query(
            """
            SELECT DISTINCT \(unescaped: Self.pendingColumns)
            FROM jobs j
            JOIN attempts a ON a.job_id = j.id AND a.state = 'running' AND a.replaces IS NULL AND a.stop_requested_at IS NULL
            JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
            JOIN nodes n ON n.name = r.node AND n.state = 'draining'
            WHERE j.kind = 'inference' AND j.state = 'running' AND NOT j.cancel_requested AND j.attempts < j.max_attempts
              AND NOT EXISTS (SELECT 1 FROM attempts x WHERE x.job_id = j.id AND x.replaces IS NOT NULL AND x.state IN ('placed', 'starting', 'running'))
            """)
        return try await Self.pendingJobs(rows)
    }

    /// Commits replacement attempts for running jobs (see `replacementsNeeded`).
    public func commitReplacements(_ placements: [Placement]) async throws -> [Int64] {
        guard !placements.isEmpty else { return [] }
        return try await self.database.transaction { connection in
            try await self.insertEach(placements, replacing: true, on: connection)
        }
    }

    /// Inserts each placement in a savepoint of its own, so one the database refuses (the job was cancelled, a
    /// node left, a GPU was claimed meanwhile) is skipped and the rest stand. Returns the jobs placed.
    private func insertEach(_ placements: [Placement], replacing: Bool = false, on connection: PostgresConnection) async throws -> [Int64] {
        let logger = self.database.logger
        var placed: [Int64] = []
        for placement in placements {
            try await connection.query("SAVEPOINT placement", logger: logger)
            do {
                if try await self.insert(placement, replacing: replacing, on: connection) {
                    placed.append(placement.jobID)
                    try await connection.query("RELEASE SAVEPOINT placement", logger: logger)
                } else {
                    try await connection.query("ROLLBACK TO SAVEPOINT placement", logger: logger)
                }
            } catch let error as PSQLError {
                try await connection.query("ROLLBACK TO SAVEPOINT placement", logger: logger)
                logger.debug(
                    "placement refused by the database",
                    metadata: [
                        "job": "\(placement.jobID)", "constraint": "\(error.constraint ?? "-")",
                        "message": "\(error.serverMessage ?? "\(error)")",
                    ])
            }
        }
        return placed
    }

    private func insert(_ placement: Placement, replacing: Bool = false, on connection: PostgresConnection) async throws -> Bool {
        let logger = self.database.logger
        let job = placement.jobID
        var replaces: Int?
        if replacing {
            replaces = try await connection.query(
                """
                SELECT number FROM attempts WHERE job_id = \(job) AND state = 'running' AND replaces IS NULL AND stop_requested_at IS NULL FOR UPDATE
                """, logger: logger
            ).decode(Int.self).first { _ in true }
            guard replaces != nil else { return false }
        }
        guard
            let number = try await connection.query(
                replacing
                    ? """
                    UPDATE jobs SET attempts = attempts + 1, updated_at = now()
                    WHERE id = \(job) AND state = 'running' AND NOT cancel_requested RETURNING attempts
                    """
                    : """
                    UPDATE jobs SET state = 'placed', attempts = attempts + 1, reason = NULL, estimated_start = NULL, updated_at = now()
                    WHERE id = \(job) AND state = 'queued' AND NOT cancel_requested RETURNING attempts
                    """, logger: logger
            ).decode(Int.self).first(where: { _ in true })
        else { return false }
        let names = placement.ranks.map(\.node)
        let ready = try await connection.query(
            "SELECT name FROM nodes WHERE name = ANY(\(names)) AND state = 'ready' FOR SHARE", logger: logger
        ).decode(String.self).reduce(into: 0) { n, _ in n += 1 }
        guard ready == Set(names).count else { return false }
        try await connection.query(
            "INSERT INTO attempts (job_id, number, borrowed, replaces) VALUES (\(job), \(number), \(placement.borrowing), \(replaces))",
            logger: logger)
        try await connection.query("UPDATE reclaims SET satisfied_at = now() WHERE job_id = \(job) AND satisfied_at IS NULL", logger: logger)
        for r in placement.ranks {
            try await connection.query(
                """
                INSERT INTO attempt_ranks (job_id, attempt, rank, node, gpu_indices, milli_per_gpu, cpu_milli, memory_mib)
                VALUES (\(job), \(number), \(r.rank), \(r.node), \(r.gpuIndices)::integer[], \(r.milliPerGPU), \(r.cpuMilli), \(r.memoryMiB))
                """, logger: logger)
            if !r.gpuIndices.isEmpty {
                try await connection.query(
                    """
                    INSERT INTO gpu_claims (job_id, attempt, rank, node, gpu_index, milli)
                    SELECT \(job), \(number), \(r.rank), \(r.node), g, \(r.milliPerGPU) FROM unnest(\(r.gpuIndices)::integer[]) AS g
                    """, logger: logger)
            }
        }
        let detail = placement.ranks.map { "\($0.node):\($0.gpuIndices.map(String.init).joined(separator: ","))" }.joined(separator: " ")
        try await AuditStore.append(
            connection, logger: logger, actor: .scheduler, action: "job.place", target: "job/\(job)", outcome: "attempt \(number)",
            detail: ["ranks": detail])
        return true
    }
}
