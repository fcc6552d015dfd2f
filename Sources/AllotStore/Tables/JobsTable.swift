import AllotCore
import Foundation
import PostgresNIO

/// The one writer of `jobs`.
struct JobsTable {
    let tx: Transaction

    /// Stores a checked job as queued; returns its id.
    func insert(
        _ spec: JobSpec, org: String, owner: String, priorityClass: String, priority: Int, timeLimitSeconds: Int64?,
        array: (jobID: Int64?, task: Int)? = nil, heldBy: Principal? = nil
    ) async throws -> Int64 {
        let envJSON = String(decoding: try JSONEncoder().encode(spec.env), as: UTF8.self)
        let slurmJSON = try spec.slurm.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
        let id = try await self.tx.query(
            """
            INSERT INTO jobs (id, name, org, project, owner, kind, pool, gpu_models, nodes, gpus_per_node, gpu_milli,
                              cpu_milli_per_node, memory_mib_per_node, priority_class, priority, time_limit_s, command, env,
                              working_dir, max_attempts, exclusive, whole_node_memory, reason, warn_signal, time_min_s, slurm,
                              array_job_id, array_task_id, array_limit, dependency, held_by, hold_kind, begin_at, movable,
                              mig_profile, gpu_memory_mib)
            SELECT n.id, \(spec.name), \(org), \(spec.project), \(owner), \(spec.kind.rawValue)::job_kind, \(spec.pool),
                    \(spec.gpuModel), \(spec.nodes), \(spec.gpusPerNode), \(spec.gpuMilli), \(spec.cpuMilliPerNode),
                    \(spec.memoryMiBPerNode), \(priorityClass), \(priority), \(timeLimitSeconds), \(spec.command), \(envJSON)::jsonb,
                    \(spec.workingDir), \(spec.maxAttempts), \(spec.exclusive), \(spec.wholeNodeMemory), 'waiting for the scheduler',
                    \(spec.signal?.description), \(spec.timeMinSeconds), \(slurmJSON)::jsonb,
                    CASE WHEN \(array != nil) THEN coalesce(\(array?.jobID)::bigint, n.id) END, \(array?.task),
                    \(array != nil ? spec.array?.limit : nil), \(spec.dependency?.description),
                    \(heldBy?.name), \(heldBy.map { $0.role == .operator ? "admin" : "user" }), \(spec.beginAt), \(spec.movable == true),
                    \(spec.migProfile), \(spec.gpuMemoryMiB)
            -- An array's first task names the array (Slurm's ArrayJobID is its first job id).
            FROM (SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id) n
            RETURNING id
            """
        ).decode(Int64.self).first()
        guard let id else { throw StoreError.conflict("the job was not stored") }
        return id
    }

    /// The job's lifecycle, locked for this transaction; nil when there is no such job.
    func lifecycle(_ id: Int64) async throws -> JobLifecycle? {
        let row = try await self.tx.query(
            """
            SELECT j.state::text, j.reason, j.exit_code, j.attempts, j.max_attempts, j.cancel_requested, j.ended_at,
                   coalesce((SELECT array_agg(a.number ORDER BY a.number) FROM attempts a
                             WHERE a.job_id = j.id AND attempt_is_live(a.state)), '{}'),
                   coalesce((SELECT array_agg(a.number ORDER BY a.number) FROM attempts a
                             WHERE a.job_id = j.id AND a.state IN ('lost', 'preempted', 'drained', 'dispatch_failed')), '{}')
            FROM jobs j WHERE j.id = \(id) FOR UPDATE
            """
        ).decode((String, String?, Int?, Int, Int, Bool, Date?, [Int], [Int]).self).first()
        guard let (state, reason, exit, attempts, maxAttempts, cancel, ended, live, interrupted) = row else { return nil }
        return JobLifecycle(
            id: id, state: try decoded(state, "jobs.state"), reason: reason, exitCode: exit, attempts: attempts, maxAttempts: maxAttempts,
            interrupted: interrupted, cancelRequested: cancel, endedAt: ended, liveAttempts: live)
    }

    /// Locks the job's row for this transaction; false when there is no such job.
    func lock(_ id: Int64) async throws -> Bool {
        try await self.tx.query("SELECT 1 FROM jobs WHERE id = \(id) FOR UPDATE").decode(Int.self).first() != nil
    }

    /// Writes the lifecycle back. Its reason replaces any wait reason (and its code) the scheduler wrote; a job
    /// that leaves the queue loses its estimated start.
    func save(_ job: JobLifecycle) async throws {
        try await self.tx.query(
            """
            UPDATE jobs SET state = \(job.state.rawValue)::job_state, reason = \(job.reason), reason_code = NULL, exit_code = \(job.exitCode),
                   attempts = \(job.attempts), cancel_requested = \(job.cancelRequested), ended_at = \(job.endedAt),
                   estimated_start = CASE WHEN \(job.state == .queued) THEN estimated_start END, updated_at = now()
            WHERE id = \(job.id)
            """)
    }

    /// Why each queued job still waits (only where it changed, so a quiet cycle writes nothing).
    func recordWaitReasons(_ waiting: [Int64: WaitReason]) async throws {
        guard !waiting.isEmpty else { return }
        let ids = Array(waiting.keys)
        let reasons = ids.map { waiting[$0]!.text }
        let codes = ids.map { waiting[$0]!.code }
        try await self.tx.query(
            """
            UPDATE jobs j SET reason = w.reason, reason_code = w.code, updated_at = now()
            FROM unnest(\(ids)::bigint[], \(reasons)::text[], \(codes)::text[]) AS w(id, reason, code)
            WHERE j.id = w.id AND j.state = 'queued' AND (j.reason IS DISTINCT FROM w.reason OR j.reason_code IS DISTINCT FROM w.code)
            """)
    }

    func hold(_ id: Int64, by name: String, admin: Bool) async throws {
        let reason = WaitReason.held(by: name, admin: admin)
        try await self.tx.query(
            """
            UPDATE jobs SET held_by = \(name), hold_kind = \(admin ? "admin" : "user"), reason = \(reason.text), reason_code = \(reason.code),
                   estimated_start = NULL, updated_at = now()
            WHERE id = \(id) AND state = 'queued'
            """)
    }

    /// `user`, `admin`, or nil when the job is not held.
    func holdKind(_ id: Int64) async throws -> String? {
        try await self.tx.query("SELECT hold_kind FROM jobs WHERE id = \(id)").decode(String?.self).first { _ in true } ?? nil
    }

    /// The tasks of an array that have not ended.
    func openArrayTasks(_ array: Int64) async throws -> [Int64] {
        try await self.tx.query(
            "SELECT id FROM jobs WHERE array_job_id = \(array) AND state NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY id"
        ).decode(Int64.self).reduce(into: []) { $0.append($1) }
    }

    func release(_ id: Int64) async throws {
        try await self.tx.query(
            """
            UPDATE jobs SET held_by = NULL, hold_kind = NULL, reason = 'waiting for the scheduler', reason_code = NULL, updated_at = now()
            WHERE id = \(id) AND state = 'queued'
            """)
    }

    func update(_ id: Int64, name: String, timeLimitSeconds: Int64?, priorityClass: String, priority: Int) async throws {
        try await self.tx.query(
            """
            UPDATE jobs SET name = \(name), time_limit_s = \(timeLimitSeconds), priority_class = \(priorityClass), priority = \(priority),
                   updated_at = now()
            WHERE id = \(id) AND state = 'queued'
            """)
    }

    /// Backfill started the job with a shorter limit than it asked, within its `--time-min` (as Slurm sets it).
    func cutTimeLimit(_ id: Int64, to seconds: Int64) async throws {
        try await self.tx.query(
            "UPDATE jobs SET time_limit_s = \(seconds), updated_at = now() WHERE id = \(id) AND (time_min_s IS NULL OR time_min_s <= \(seconds))")
    }

    /// A queued job's dependency is met: it takes its turn in the queue.
    func dependencyMet(_ id: Int64) async throws {
        try await self.tx.query(
            """
            UPDATE jobs SET dependency = NULL, reason = 'waiting for the scheduler', reason_code = NULL, updated_at = now()
            WHERE id = \(id) AND state = 'queued'
            """)
    }

    /// The queued tasks of arrays at their `%` limit say so (only where that changed); the text is
    /// `WaitReason.arrayLimit`'s.
    func recordArrayLimitReasons() async throws {
        try await self.tx.query(
            """
            UPDATE jobs j SET reason = 'array limit: at most ' || j.array_limit || ' tasks of array ' || j.array_job_id || ' run at once',
                   reason_code = 'array_limit', updated_at = now()
            WHERE j.state = 'queued' AND j.array_limit IS NOT NULL AND j.dependency IS NULL AND j.held_by IS NULL
              AND j.reason_code IS DISTINCT FROM 'array_limit' AND j.id NOT IN (\(unescaped: ClusterReader.arrayTasksWithRoom))
            """)
    }

    /// Queued jobs whose `--begin` has not come say so (only where that changed).
    func recordBeginTimeReasons() async throws {
        try await self.tx.query(
            """
            UPDATE jobs SET reason = 'begin time: not before ' || to_char(begin_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   reason_code = 'begin_time', updated_at = now()
            WHERE state = 'queued' AND begin_at > now() AND held_by IS NULL AND reason_code IS DISTINCT FROM 'begin_time'
            """)
    }

    /// When waiting jobs are expected to start (nil where it cannot be told).
    func recordEstimates(_ estimates: [Int64: Int64?]) async throws {
        guard !estimates.isEmpty else { return }
        let ids = Array(estimates.keys)
        // -1 stands for "cannot be told" in the array; it becomes NULL.
        let seconds = ids.map { Double(estimates[$0]! ?? -1) }
        try await self.tx.query(
            """
            UPDATE jobs j SET estimated_start = CASE WHEN e.t < 0 THEN NULL ELSE to_timestamp(e.t) END
            FROM unnest(\(ids)::bigint[], \(seconds)::float8[]) AS e(id, t)
            WHERE j.id = e.id AND j.state = 'queued'
            """)
    }
}

extension Transaction {
    var jobs: JobsTable { JobsTable(tx: self) }
}
