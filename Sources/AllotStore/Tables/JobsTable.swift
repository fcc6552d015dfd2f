import AllotCore
import Foundation
import PostgresNIO

/// The one writer of `jobs`.
struct JobsTable {
    let tx: Transaction

    /// Stores checked jobs as queued in one statement (a batch of submissions, or an array's tasks); returns them
    /// as stored, in the rows' order. The rows travel as one JSON document: one bind for any number of jobs, nulls
    /// and all.
    func insert(_ rows: [NewJob]) async throws -> [JobView] {
        guard !rows.isEmpty else { return [] }
        let document = String(decoding: try JSONEncoder().encode(rows), as: UTF8.self)
        let stored = try await self.tx.query(
            """
            INSERT INTO jobs (id, name, org, project, owner, kind, pool, gpu_models, nodes, gpus_per_node, gpu_milli,
                              cpu_milli_per_node, memory_mib_per_node, priority_class, priority, time_limit_s, command, env,
                              working_dir, max_attempts, exclusive, whole_node_memory, reason, warn_signal, time_min_s, slurm,
                              array_job_id, array_task_id, array_limit, dependency, held_by, hold_kind, begin_at, movable,
                              mig_profile, gpu_memory_mib)
            SELECT x.id, x.name, x.org, x.project, x.owner, x.kind::job_kind, x.pool, x.gpu_models, x.nodes, x.gpus_per_node,
                   x.gpu_milli, x.cpu_milli_per_node, x.memory_mib_per_node, x.priority_class, x.priority, x.time_limit_s,
                   x.command, x.env::jsonb, x.working_dir, x.max_attempts, x.exclusive, x.whole_node_memory, 'waiting for the scheduler',
                   x.warn_signal, x.time_min_s, x.slurm::jsonb,
                   -- An array's first task names the array (Slurm's ArrayJobID is its first job id).
                   CASE WHEN x.array_task_id IS NOT NULL THEN coalesce(x.array_job_id, x.id) END, x.array_task_id, x.array_limit,
                   x.dependency, x.held_by, x.hold_kind, to_timestamp(x.begin_at), x.movable, x.mig_profile, x.gpu_memory_mib
            -- Ids are taken as the rows are read, in their order, and a session's values of a sequence only grow:
            -- the ids sorted are the rows' in order.
            FROM (SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id, r.*
                  FROM jsonb_to_recordset(\(document)::jsonb) AS r(
                     name text, org text, project text, owner text, kind text, pool text, gpu_models text[], nodes int,
                     gpus_per_node int, gpu_milli int, cpu_milli_per_node int, memory_mib_per_node bigint, priority_class text,
                     priority int, time_limit_s bigint, command text, env text, working_dir text, max_attempts int,
                     exclusive boolean, whole_node_memory boolean, warn_signal text, time_min_s bigint, slurm text,
                     array_job_id bigint, array_task_id int, array_limit int, dependency text, held_by text, hold_kind text,
                     begin_at double precision, movable boolean, mig_profile text, gpu_memory_mib int)) x
            RETURNING \(unescaped: JobStore.jobColumns)
            """)
        let jobs = try await JobStore.decodeJobs(stored)
        guard jobs.count == rows.count else { throw StoreError.conflict("\(rows.count - jobs.count) of \(rows.count) jobs were not stored") }
        return jobs.sorted { $0.id < $1.id }
    }

    /// The job's lifecycle, locked for this transaction; nil when there is no such job.
    func lifecycle(_ id: Int64) async throws -> JobLifecycle? { try await self.lifecycles([id])[id] }

    /// The lifecycles of `ids` (locked, in id order), for a batch of the same change.
    func lifecycles(_ ids: [Int64]) async throws -> [Int64: JobLifecycle] {
        let rows = try await self.tx.query(
            """
            SELECT j.id, j.state::text, j.reason, j.exit_code, j.attempts, j.max_attempts, j.cancel_requested, j.ended_at,
                   coalesce((SELECT array_agg(a.number ORDER BY a.number) FROM attempts a
                             WHERE a.job_id = j.id AND attempt_is_live(a.state)), '{}'),
                   coalesce((SELECT array_agg(a.number ORDER BY a.number) FROM attempts a
                             WHERE a.job_id = j.id AND a.state IN ('lost', 'preempted', 'drained', 'dispatch_failed')), '{}')
            FROM jobs j WHERE j.id = ANY(\(ids)) ORDER BY j.id FOR UPDATE
            """)
        var out: [Int64: JobLifecycle] = [:]
        for try await (id, state, reason, exit, attempts, maxAttempts, cancel, ended, live, interrupted) in rows.decode(
            (Int64, String, String?, Int?, Int, Int, Bool, Date?, [Int], [Int]).self)
        {
            out[id] = JobLifecycle(
                id: id, state: try decoded(state, "jobs.state"), reason: reason, exitCode: exit, attempts: attempts, maxAttempts: maxAttempts,
                interrupted: interrupted, cancelRequested: cancel, endedAt: ended, liveAttempts: live)
        }
        return out
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

    /// Writes lifecycles back, as `save` does each, in one statement (a JSON document: its values may be null).
    func save(_ jobs: [JobLifecycle]) async throws {
        struct Row: Encodable {
            var id: Int64
            var state: String
            var reason: String?
            var exit_code: Int?
            var attempts: Int
            var cancel: Bool
            var ended_at: Double?
        }
        guard !jobs.isEmpty else { return }
        let rows = jobs.map {
            Row(
                id: $0.id, state: $0.state.rawValue, reason: $0.reason, exit_code: $0.exitCode, attempts: $0.attempts, cancel: $0.cancelRequested,
                ended_at: $0.endedAt?.timeIntervalSince1970)
        }
        let json = String(decoding: try JSONEncoder().encode(rows), as: UTF8.self)
        try await self.tx.query(
            """
            UPDATE jobs j SET state = u.state::job_state, reason = u.reason, reason_code = NULL, exit_code = u.exit_code,
                   attempts = u.attempts, cancel_requested = u.cancel, ended_at = to_timestamp(u.ended_at),
                   estimated_start = CASE WHEN u.state = 'queued' THEN j.estimated_start END, updated_at = now()
            FROM jsonb_to_recordset(\(json)::jsonb)
                 AS u(id bigint, state text, reason text, exit_code integer, attempts integer, cancel boolean, ended_at double precision)
            WHERE j.id = u.id
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

/// A checked job as `JobsTable.insert` stores it: the columns its submission decides, named as in `jobs`.
struct NewJob: Encodable {
    enum CodingKeys: String, CodingKey {
        case name, org, project, owner, kind, pool, nodes, priority, command, env, exclusive, slurm, dependency, movable
        case gpuModels = "gpu_models", gpusPerNode = "gpus_per_node", gpuMilli = "gpu_milli", cpuMilliPerNode = "cpu_milli_per_node"
        case memoryMibPerNode = "memory_mib_per_node", priorityClass = "priority_class", timeLimitS = "time_limit_s"
        case workingDir = "working_dir", maxAttempts = "max_attempts", wholeNodeMemory = "whole_node_memory"
        case warnSignal = "warn_signal", timeMinS = "time_min_s", arrayJobId = "array_job_id", arrayTaskId = "array_task_id"
        case arrayLimit = "array_limit", heldBy = "held_by", holdKind = "hold_kind", beginAt = "begin_at"
        case migProfile = "mig_profile", gpuMemoryMib = "gpu_memory_mib"
    }
    var name: String
    var org: String
    var project: String?
    var owner: String
    var kind: String
    var pool: String?
    var gpuModels: [String]
    var nodes: Int
    var gpusPerNode: Int
    var gpuMilli: Int?
    var cpuMilliPerNode: Int
    var memoryMibPerNode: Int
    var priorityClass: String
    var priority: Int
    var timeLimitS: Int64?
    var command: String
    /// JSON text, as `jobs.env` and `jobs.slurm` are read back (a JSON string inside the document).
    var env: String
    var workingDir: String?
    var maxAttempts: Int
    var exclusive: Bool
    var wholeNodeMemory: Bool
    var warnSignal: String?
    var timeMinS: Int64?
    var slurm: String?
    var arrayJobId: Int64?
    var arrayTaskId: Int?
    var arrayLimit: Int?
    var dependency: String?
    var heldBy: String?
    var holdKind: String?
    /// Seconds since 1970 (`to_timestamp`): a JSON date would lose the microseconds PostgreSQL keeps.
    var beginAt: Double?
    var movable: Bool
    var migProfile: String?
    var gpuMemoryMib: Int?

    init(
        _ spec: JobSpec, org: String, owner: String, priorityClass: String, priority: Int, timeLimitSeconds: Int64?,
        array: (jobID: Int64?, task: Int)? = nil, heldBy: Principal? = nil
    ) throws {
        self.name = spec.name
        self.org = org
        self.project = spec.project
        self.owner = owner
        self.kind = spec.kind.rawValue
        self.pool = spec.pool
        self.gpuModels = spec.gpuModel
        self.nodes = spec.nodes
        self.gpusPerNode = spec.gpusPerNode
        self.gpuMilli = spec.gpuMilli
        self.cpuMilliPerNode = spec.cpuMilliPerNode
        self.memoryMibPerNode = spec.memoryMiBPerNode
        self.priorityClass = priorityClass
        self.priority = priority
        self.timeLimitS = timeLimitSeconds
        self.command = spec.command
        self.env = String(decoding: try JSONEncoder().encode(spec.env), as: UTF8.self)
        self.workingDir = spec.workingDir
        self.maxAttempts = spec.maxAttempts
        self.exclusive = spec.exclusive
        self.wholeNodeMemory = spec.wholeNodeMemory
        self.warnSignal = spec.signal?.description
        self.timeMinS = spec.timeMinSeconds
        self.slurm = try spec.slurm.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
        self.arrayJobId = array?.jobID
        self.arrayTaskId = array?.task
        self.arrayLimit = array != nil ? spec.array?.limit : nil
        self.dependency = spec.dependency?.description
        self.heldBy = heldBy?.name
        self.holdKind = heldBy.map { $0.role == .operator ? "admin" : "user" }
        self.beginAt = spec.beginAt?.timeIntervalSince1970
        self.movable = spec.movable == true
        self.migProfile = spec.migProfile
        self.gpuMemoryMib = spec.gpuMemoryMiB
    }
}

extension Transaction {
    var jobs: JobsTable { JobsTable(tx: self) }
}
