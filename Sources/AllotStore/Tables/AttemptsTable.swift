import AllotCore
import Foundation
import PostgresNIO

/// The one writer of `attempts`, `attempt_ranks` and `gpu_claims`: an attempt, where its ranks run and the GPUs
/// they hold, and the dispatcher's bookkeeping of launches and stops.
struct AttemptsTable {
    let tx: Transaction

    /// The attempt with its ranks, locked for this transaction; nil when there is no such attempt.
    func lifecycle(_ job: Int64, _ number: Int) async throws -> AttemptLifecycle? {
        try await self.lifecycles([(job, number)], locked: true)[AttemptKey(job: job, number: number)]
    }

    struct AttemptKey: Hashable {
        let job: Int64
        let number: Int
    }

    /// These attempts with their ranks, as `lifecycle` reads one, in two statements; locked only when asked (an
    /// unlocked read tells whether an event would change anything before its job is locked).
    func lifecycles(_ keys: [(job: Int64, number: Int)], locked: Bool) async throws -> [AttemptKey: AttemptLifecycle] {
        guard !keys.isEmpty else { return [:] }
        let (jobs, numbers) = (keys.map(\.job), keys.map(\.number))
        let rows = try await self.tx.query(
            """
            SELECT a.job_id, a.number, a.state::text, a.stop_state::text, a.stop_requested_at, a.reason, a.exit_code, a.started_at, a.ended_at,
                   a.replaces, a.stop_credit_from, coalesce((j.slurm ->> 'batchStep')::boolean, false), j.kind = 'inference',
                   (SELECT replica_restart_limit FROM policy_defaults), (SELECT replica_restart_window_s FROM policy_defaults)
            FROM attempts a JOIN jobs j ON j.id = a.job_id
            WHERE (a.job_id, a.number) IN (SELECT * FROM unnest(\(jobs)::bigint[], \(numbers)::int[]))
            ORDER BY a.job_id, a.number \(unescaped: locked ? "FOR UPDATE OF a" : "")
            """)
        // The attempts first (locked when asked), then their ranks, as one attempt was read.
        var headers: [AttemptKey: ([AttemptLifecycle.Rank]) throws -> AttemptLifecycle] = [:]
        for try await row in rows {
            let (job, number, state, stopState, stopAt, reason, exit, started, ended) = try row.decode(
                (Int64, Int, String, String?, Date?, String?, Int?, Date?, Date?).self)
            let c = row.makeRandomAccess()
            let (replaces, creditFrom, batchStep, inference) = (
                try c[9].decode(Int?.self), try c[10].decode(Date?.self), try c[11].decode(Bool.self), try c[12].decode(Bool.self)
            )
            let (limit, window) = (try c[13].decode(Int?.self), try c[14].decode(Int?.self))
            headers[AttemptKey(job: job, number: number)] = { ranks in
                var stop: AttemptLifecycle.Stop?
                if let stopState, let stopAt {
                    stop = AttemptLifecycle.Stop(endAs: try decoded(stopState, "attempts.stop_state"), requestedAt: stopAt, creditFrom: creditFrom)
                }
                return AttemptLifecycle(
                    jobID: job, number: number, state: try decoded(state, "attempts.state"), stop: stop, reason: reason, exitCode: exit,
                    startedAt: started, endedAt: ended, replaces: replaces, batchStep: batchStep,
                    healing: inference ? AttemptLifecycle.Healing(limit: limit ?? 5, windowSeconds: Double(window ?? 600)) : nil, ranks: ranks)
            }
        }
        let rankRows = try await self.tx.query(
            """
            SELECT r.job_id, r.attempt, r.rank, r.node, r.state::text, r.dispatched_at IS NOT NULL, n.state = 'lost', r.exit_code, r.signal,
                   r.started_at, r.ended_at, r.detail, r.restarted_at, r.launch, r.needs_node
            FROM attempt_ranks r JOIN nodes n ON n.name = r.node
            WHERE (r.job_id, r.attempt) IN (SELECT * FROM unnest(\(jobs)::bigint[], \(numbers)::int[]))
            ORDER BY r.job_id, r.attempt, r.rank
            """)
        var ranks: [AttemptKey: [AttemptLifecycle.Rank]] = [:]
        for try await row in rankRows {
            let (job, number, rank, node, rankState, dispatched, lost, code, signal) = try row.decode(
                (Int64, Int, Int, String, String, Bool, Bool, Int?, Int?).self)
            let c = row.makeRandomAccess()
            ranks[AttemptKey(job: job, number: number), default: []].append(
                AttemptLifecycle.Rank(
                    rank: rank, node: node, state: try decoded(rankState, "attempt_ranks.state"), isDispatched: dispatched, nodeIsLost: lost,
                    exitCode: code, signal: signal, startedAt: try c[9].decode(Date?.self), endedAt: try c[10].decode(Date?.self),
                    detail: try c[11].decode(String?.self), restartedAt: try c[12].decode([Date].self), launch: try c[13].decode(Int.self),
                    needsNode: try c[14].decode(Bool.self)))
        }
        var out: [AttemptKey: AttemptLifecycle] = [:]
        for (key, make) in headers { out[key] = try make(ranks[key] ?? []) }
        return out
    }

    /// Records the srun steps the agent of `node` reports, each only where that node runs the attempt's rank 0 (the
    /// batch script's); an ended step is never changed again.
    func recordSteps(_ steps: [StepStatus], from node: String) async throws {
        for s in steps.prefix(1000) {
            try await self.tx.query(
                """
                INSERT INTO job_steps (job_id, attempt, step, command, nodes, tasks, state, exit_code, started_at, ended_at)
                SELECT \(s.jobID), \(s.attempt), \(s.step), \(String(s.command.prefix(200))), \(max(1, s.nodes)), \(max(1, s.tasks)),
                       \(s.state.rawValue), \(s.exitCode), \(s.startedAt), \(s.endedAt)
                FROM attempt_ranks r
                WHERE r.job_id = \(s.jobID) AND r.attempt = \(s.attempt) AND r.rank = 0 AND r.node = \(node) AND \(s.step) >= 0
                ON CONFLICT (job_id, attempt, step) DO UPDATE SET state = excluded.state, exit_code = excluded.exit_code, ended_at = excluded.ended_at
                WHERE job_steps.state = 'running'
                """)
        }
    }

    /// Writes back what changed since `before` was loaded.
    func save(_ attempt: AttemptLifecycle, from before: AttemptLifecycle) async throws {
        if attempt.state != before.state || attempt.stop != before.stop || attempt.reason != before.reason || attempt.exitCode != before.exitCode
            || attempt.startedAt != before.startedAt || attempt.endedAt != before.endedAt
        {
            try await self.tx.query(
                """
                UPDATE attempts SET state = \(attempt.state.rawValue)::attempt_state, stop_state = \(attempt.stop?.endAs.rawValue)::attempt_state,
                       stop_requested_at = \(attempt.stop?.requestedAt), stop_credit_from = \(attempt.stop?.creditFrom), reason = \(attempt.reason), exit_code = \(attempt.exitCode),
                       started_at = \(attempt.startedAt), ended_at = \(attempt.endedAt)
                WHERE job_id = \(attempt.jobID) AND number = \(attempt.number)
                """)
        }
        let changed = zip(attempt.ranks, before.ranks).filter { $0.0 != $0.1 }.map(\.0)
        guard !changed.isEmpty else { return }
        let now = try await self.tx.now()
        // Arrays bind no NULLs: a missing number travels as -1 (no exit code or signal is negative), a missing
        // time as the epoch.
        let epoch = Date(timeIntervalSince1970: 0)
        try await self.tx.query(
            """
            UPDATE attempt_ranks r SET state = u.state::rank_state,
                   dispatched_at = CASE WHEN u.dispatched THEN coalesce(r.dispatched_at, \(now)) END,
                   exit_code = nullif(u.code, -1), signal = nullif(u.signal, -1),
                   started_at = nullif(u.started, 'epoch'), ended_at = nullif(u.ended, 'epoch'), detail = nullif(u.detail, ''),
                   restarts = r.restarts + greatest(0, u.launch - r.launch), launch = u.launch, needs_node = u.needs_node
            FROM unnest(\(changed.map(\.rank))::integer[], \(changed.map(\.state.rawValue))::text[], \(changed.map(\.isDispatched))::boolean[],
                        \(changed.map { $0.exitCode ?? -1 })::integer[], \(changed.map { $0.signal ?? -1 })::integer[],
                        \(changed.map { $0.startedAt ?? epoch })::timestamptz[], \(changed.map { $0.endedAt ?? epoch })::timestamptz[],
                        \(changed.map { $0.detail ?? "" })::text[], \(changed.map(\.launch))::integer[], \(changed.map(\.needsNode))::boolean[])
                 AS u(rank, state, dispatched, code, signal, started, ended, detail, launch, needs_node)
            WHERE r.job_id = \(attempt.jobID) AND r.attempt = \(attempt.number) AND r.rank = u.rank
            """)
        // Restart times are arrays of their own (an array of arrays does not bind): one statement per replica restarted.
        for (rank, old) in zip(attempt.ranks, before.ranks) where rank.restartedAt != old.restartedAt {
            try await self.tx.query(
                """
                UPDATE attempt_ranks SET restarted_at = \(rank.restartedAt)::timestamptz[]
                WHERE job_id = \(attempt.jobID) AND attempt = \(attempt.number) AND rank = \(rank.rank)
                """)
        }
    }

    /// A replica restarts: it is dispatched again once its back-off has passed; moved, its GPUs are given back
    /// (the scheduler finds it a node and GPUs anew).
    func scheduleRestart(_ job: Int64, _ number: Int, rank: Int, afterSeconds: Double, moved: Bool) async throws {
        try await self.tx.query(
            """
            UPDATE attempt_ranks SET next_dispatch_at = \(try await self.tx.now()) + make_interval(secs => \(afterSeconds))
            WHERE job_id = \(job) AND attempt = \(number) AND rank = \(rank)
            """)
        if moved {
            try await self.tx.query(
                """
                UPDATE gpu_claims SET released_at = \(try await self.tx.now())
                WHERE job_id = \(job) AND attempt = \(number) AND rank = \(rank) AND released_at IS NULL
                """)
        }
    }

    /// A moved replica's new node and GPUs (the scheduler's choice): claimed, and dispatched from now on. Only while
    /// the replica still waits for a node in a running, unstopped attempt (the service may have been cancelled
    /// since the snapshot); false otherwise, and nothing is claimed.
    func relocate(_ job: Int64, _ number: Int, to r: RankAssignment) async throws -> Bool {
        let moved =
            try await self.tx.query(
                """
                UPDATE attempt_ranks SET node = \(r.node), gpu_indices = \(r.gpuIndices)::integer[], milli_per_gpu = \(r.milliPerGPU),
                       cpu_milli = \(r.cpuMilli), memory_mib = \(r.memoryMiB), needs_node = false, next_dispatch_at = now(), dispatched_at = NULL
                WHERE job_id = \(job) AND attempt = \(number) AND rank = \(r.rank) AND needs_node AND state = 'pending'
                  AND EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = \(job) AND a.number = \(number) AND a.state = 'running'
                              AND a.stop_requested_at IS NULL)
                RETURNING 1
                """
            ).decode(Int.self).first() != nil
        guard moved else { return false }
        if !r.gpuIndices.isEmpty {
            // Back on a GPU the attempt held before (its node returned): that claim is live again.
            try await self.tx.query(
                """
                INSERT INTO gpu_claims (job_id, attempt, rank, node, gpu_index, milli)
                SELECT \(job), \(number), \(r.rank), \(r.node), g, \(r.milliPerGPU) FROM unnest(\(r.gpuIndices)::integer[]) AS g
                ON CONFLICT (job_id, attempt, node, gpu_index) DO UPDATE SET released_at = NULL, rank = EXCLUDED.rank, claimed_at = now()
                """)
        }
        return true
    }

    /// A replica left down: its GPUs are free for others.
    func releaseClaims(_ job: Int64, _ number: Int, rank: Int) async throws {
        try await self.tx.query(
            """
            UPDATE gpu_claims SET released_at = \(try await self.tx.now())
            WHERE job_id = \(job) AND attempt = \(number) AND rank = \(rank) AND released_at IS NULL
            """)
    }

    /// Inserts a placed attempt: its row with its rendezvous port, its ranks and their GPU claims (the schema refuses
    /// a GPU claimed twice, and a port two live attempts would share on one node).
    func insert(_ placement: Placement, number: Int, replaces: Int?) async throws {
        try await self.insertAttempt(placement, number: number, replaces: replaces)
        try await self.insertRanks([(placement, number)])
    }

    /// The attempt's own row, with its rendezvous port (its ranks and claims: `insertRanks`).
    func insertAttempt(_ placement: Placement, number: Int, replaces: Int?) async throws {
        let job = placement.jobID
        let master = (placement.ranks.first { $0.rank == 0 } ?? placement.ranks.first)?.node
        // The first free port of the rank-0 node's range, from a point that differs per job and attempt (so a
        // port just given back, perhaps still in TIME_WAIT, is not the next one taken); each probe is one index look-up.
        try await self.tx.query(
            """
            INSERT INTO attempts (job_id, number, borrowed, replaces, rendezvous_node, rendezvous_port)
            SELECT \(job), \(number), \(placement.borrowing), \(replaces), n.name, (
                SELECT p FROM generate_series(0, upper(n.rendezvous_ports) - lower(n.rendezvous_ports) - 1) AS k,
                  LATERAL (SELECT lower(n.rendezvous_ports)
                    + ((\(job) * 10 + \(number)) % (upper(n.rendezvous_ports) - lower(n.rendezvous_ports)) + k)
                    % (upper(n.rendezvous_ports) - lower(n.rendezvous_ports)) AS p) AS candidate
                WHERE NOT EXISTS (
                    SELECT 1 FROM attempts a WHERE a.rendezvous_node = n.name AND a.rendezvous_port = candidate.p AND attempt_is_live(a.state))
                LIMIT 1)
            FROM (SELECT \(master)::text AS name) m LEFT JOIN nodes n ON n.name = m.name
            """)
    }

    /// The ranks and GPU claims of many attempts (each inserted already), one statement each.
    func insertRanks(_ placements: [(placement: Placement, number: Int)]) async throws {
        let ranks = placements.flatMap { p in p.placement.ranks.map { (p.placement.jobID, p.number, $0) } }
        guard !ranks.isEmpty else { return }
        try await self.tx.query(
            """
            INSERT INTO attempt_ranks (job_id, attempt, rank, node, gpu_indices, milli_per_gpu, cpu_milli, memory_mib)
            SELECT r.job_id, r.attempt, r.rank, r.node, r.gpus::integer[], r.milli, r.cpu, r.memory FROM unnest(\(ranks.map(\.0))::bigint[], \(ranks.map(\.1))::integer[], \(ranks.map(\.2.rank))::integer[],
                                 \(ranks.map(\.2.node))::text[], \(ranks.map { "{\($0.2.gpuIndices.map(String.init).joined(separator: ","))}" })::text[],
                                 \(ranks.map(\.2.milliPerGPU))::integer[], \(ranks.map(\.2.cpuMilli))::integer[], \(ranks.map(\.2.memoryMiB))::bigint[])
                     AS r(job_id, attempt, rank, node, gpus, milli, cpu, memory)
            """)
        let claims = ranks.flatMap { job, number, r in r.gpuIndices.map { (job, number, r.rank, r.node, $0, r.milliPerGPU) } }
        guard !claims.isEmpty else { return }
        try await self.tx.query(
            """
            INSERT INTO gpu_claims (job_id, attempt, rank, node, gpu_index, milli)
            SELECT * FROM unnest(\(claims.map(\.0))::bigint[], \(claims.map(\.1))::integer[], \(claims.map(\.2))::integer[],
                                 \(claims.map(\.3))::text[], \(claims.map(\.4))::integer[], \(claims.map(\.5))::integer[])
            """)
    }

    /// Its stop gets at most `seconds` of grace (a reclaim's deadline bounds it).
    func boundStopGrace(_ job: Int64, _ number: Int, seconds: Int) async throws {
        try await self.tx.query(
            "UPDATE attempts SET stop_grace_s = least(coalesce(stop_grace_s, \(seconds)), \(seconds)) WHERE job_id = \(job) AND number = \(number)")
    }

    /// The attempt has ended: its GPUs are free again.
    func releaseClaims(_ job: Int64, _ number: Int) async throws {
        try await self.tx.query(
            "UPDATE gpu_claims SET released_at = \(try await self.tx.now()) WHERE job_id = \(job) AND attempt = \(number) AND released_at IS NULL")
    }

    /// The attempt that replaced `ended` is now the job's own.
    func promote(_ job: Int64, _ number: Int, replacing ended: Int) async throws {
        try await self.tx.query("UPDATE attempts SET replaces = NULL WHERE job_id = \(job) AND number = \(number) AND replaces = \(ended)")
    }

    /// Live attempts with a rank on any of `nodes` (any rank state), with the node.
    func live(onNodes nodes: [String]) async throws -> [(job: Int64, number: Int, node: String)] {
        try await self.tx.query(
            """
            SELECT DISTINCT a.job_id, a.number, r.node FROM attempts a
            JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
            WHERE attempt_is_live(a.state) AND r.node = ANY(\(nodes))
            ORDER BY 1, 2
            """
        ).decode((Int64, Int, String).self).array().map { (job: $0.0, number: $0.1, node: $0.2) }
    }

    /// Live, unstopped attempts holding GPU `index` of `node`.
    func live(onGPU index: Int, node: String) async throws -> [(job: Int64, number: Int)] {
        try await self.tx.query(
            """
            SELECT DISTINCT a.job_id, a.number FROM gpu_claims c JOIN attempts a ON a.job_id = c.job_id AND a.number = c.attempt
            WHERE c.node = \(node) AND c.gpu_index = \(index) AND c.released_at IS NULL AND attempt_is_live(a.state) AND a.stop_requested_at IS NULL
            ORDER BY 1, 2
            """
        ).decode((Int64, Int).self).array().map { (job: $0.0, number: $0.1) }
    }

    /// Whether any live attempt holds a rank on `node`.
    func anyLive(on node: String) async throws -> Bool {
        try await self.tx.query(
            """
            SELECT 1 FROM attempt_ranks r JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
            WHERE r.node = \(node) AND attempt_is_live(a.state) LIMIT 1
            """
        ).decode(Int.self).first() != nil
    }

    /// The ranks still live on `node`: what its agent may keep running.
    func liveRanks(on node: String, activeOnly: Bool) async throws -> [RankKey] {
        try await self.tx.query(
            """
            SELECT r.job_id, r.attempt, r.rank FROM attempt_ranks r
            JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
            WHERE r.node = \(node) AND attempt_is_live(a.state) AND (NOT \(activeOnly) OR rank_is_active(r.state))
            ORDER BY 1, 2, 3
            """
        ).decode((Int64, Int, Int).self).array().map { RankKey(jobID: $0.0, attempt: $0.1, rank: $0.2) }
    }

    /// Of `keys`, those whose rank the database holds as pending or running.
    func active(_ keys: [RankKey]) async throws -> Set<RankKey> {
        guard !keys.isEmpty else { return [] }
        return try await self.tx.query(
            """
            SELECT r.job_id, r.attempt, r.rank FROM attempt_ranks r
            JOIN unnest(\(keys.map(\.jobID))::bigint[], \(keys.map(\.attempt))::integer[], \(keys.map(\.rank))::integer[]) AS k(job_id, attempt, rank)
              ON r.job_id = k.job_id AND r.attempt = k.attempt AND r.rank = k.rank
            WHERE rank_is_active(r.state)
            """
        ).decode((Int64, Int, Int).self).reduce(into: Set<RankKey>()) { $0.insert(RankKey(jobID: $1.0, attempt: $1.1, rank: $1.2)) }
    }

    /// The running, unstopped attempt of a job that a replacement would take over from (locked), if any.
    func replaceable(_ job: Int64) async throws -> Int? {
        try await self.tx.query(
            """
            SELECT number FROM attempts WHERE job_id = \(job) AND state = 'running' AND replaces IS NULL AND stop_requested_at IS NULL FOR UPDATE
            """
        ).decode(Int.self).first()
    }

    /// Live attempts that ran past their job's time limit and are not yet being stopped, with the limit.
    func overdue() async throws -> [(job: Int64, number: Int, limit: Int64)] {
        try await self.tx.query(
            """
            SELECT a.job_id, a.number, j.time_limit_s FROM attempts a JOIN jobs j ON j.id = a.job_id
            WHERE a.state = 'running' AND a.stop_requested_at IS NULL AND j.time_limit_s IS NOT NULL
              AND a.started_at + make_interval(secs => j.time_limit_s) < now()
            ORDER BY 1, 2
            """
        ).decode((Int64, Int, Int64).self).array().map { (job: $0.0, number: $0.1, limit: $0.2) }
    }

    /// Live, unstopped attempts with an active rank on a draining node whose drain deadline has passed.
    func pastDrainDeadline() async throws -> [(job: Int64, number: Int, node: String, reason: String, deadline: Date)] {
        try await self.tx.query(
            """
            SELECT DISTINCT ON (a.job_id, a.number) a.job_id, a.number, n.name, d.reason, d.deadline FROM nodes n
            JOIN drains d ON d.id = n.drain_id
            JOIN attempt_ranks r ON r.node = n.name AND rank_is_active(r.state)
            JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
            WHERE n.state = 'draining' AND d.deadline <= now() AND attempt_is_live(a.state) AND a.stop_requested_at IS NULL
            ORDER BY a.job_id, a.number, n.name
            """
        ).decode((Int64, Int, String, String, Date).self).array().map { (job: $0.0, number: $0.1, node: $0.2, reason: $0.3, deadline: $0.4) }
    }

    // MARK: - Dispatch bookkeeping

    /// Takes the launches that are due: placed attempts not being stopped whose next try has come. Each is leased
    /// to this dispatcher for `leaseSeconds` (another dispatcher skips locked and leased ones), and returned with
    /// everything the agents need.
    func claimLaunches(leaseSeconds: Int) async throws -> [LaunchWork] {
        let rows = try await self.tx.query(
            """
            WITH due AS (
                SELECT job_id, number FROM attempts
                WHERE state = 'placed' AND stop_requested_at IS NULL AND next_dispatch_at <= now()
                ORDER BY next_dispatch_at, job_id LIMIT 1000
                FOR UPDATE SKIP LOCKED),
            placed AS (
                UPDATE attempts a SET next_dispatch_at = now() + make_interval(secs => \(Double(leaseSeconds)))
                FROM due WHERE a.job_id = due.job_id AND a.number = due.number
                RETURNING a.job_id, a.number, a.launch_id, a.rendezvous_port),
            -- Restarted replicas of running services whose back-off has passed, leased one by one.
            relaunched AS (
                UPDATE attempt_ranks r SET next_dispatch_at = now() + make_interval(secs => \(Double(leaseSeconds)))
                WHERE r.dispatched_at IS NULL AND r.launch > 0 AND NOT r.needs_node AND r.next_dispatch_at <= now()
                  AND EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = r.job_id AND a.number = r.attempt
                              AND a.state IN ('starting', 'running') AND a.stop_requested_at IS NULL)
                RETURNING r.job_id, r.attempt, r.rank),
            leased AS (
                SELECT *, false AS relaunch FROM placed
                UNION
                SELECT a.job_id, a.number, a.launch_id, a.rendezvous_port, true FROM attempts a
                WHERE (a.job_id, a.number) IN (SELECT job_id, attempt FROM relaunched))
            SELECT l.job_id, l.number, r.rank, r.node, n.agent_url, n.enrolment, r.gpu_indices, r.cpu_milli, r.memory_mib,
                   -- Of a running service, only the replicas leased now are to be sent (not one still in its back-off,
                   -- nor one waiting for a node).
                   r.dispatched_at IS NOT NULL
                     OR (l.relaunch AND (r.job_id, r.attempt, r.rank) NOT IN (SELECT job_id, attempt, rank FROM relaunched)), j.command, j.env::text, j.working_dir, j.gpus_per_node, d.grace_period_s,
                   j.org, j.owner, \(unescaped: ClusterReader.accountOf), j.image, l.launch_id::text,
                   j.name, j.pool, j.project, j.time_limit_s, j.warn_signal, j.slurm::text, j.array_job_id, j.array_task_id,
                   (SELECT count(*)::int FROM jobs t WHERE t.array_job_id = j.array_job_id),
                   (SELECT min(array_task_id) FROM jobs t WHERE t.array_job_id = j.array_job_id),
                   (SELECT max(array_task_id) FROM jobs t WHERE t.array_job_id = j.array_job_id), l.rendezvous_port,
                   ARRAY(SELECT coalesce(g.uuid, '') FROM unnest(r.gpu_indices) WITH ORDINALITY AS u(slot, k)
                         LEFT JOIN gpus g ON g.node = r.node AND g.idx = u.slot ORDER BY u.k),
                   -- A share of a GPU (not a MIG device's charge): the agent holds the rank to it.
                   CASE WHEN r.milli_per_gpu < 1000 AND j.gpu_milli IS NOT NULL THEN r.milli_per_gpu END, r.launch
            FROM leased l
            JOIN attempt_ranks r ON r.job_id = l.job_id AND r.attempt = l.number
            JOIN nodes n ON n.name = r.node
            JOIN jobs j ON j.id = l.job_id
            JOIN organizations o ON o.name = j.org
            CROSS JOIN policy_defaults d
            ORDER BY l.job_id, l.number, r.rank
            """)
        var work: [LaunchWork] = []
        for try await row in rows {
            let (job, attempt, rank, node, url, enrolment, gpus, cpu, memory, dispatched) = try row.decode(
                (Int64, Int, Int, String, String?, Int, [Int], Int, Int, Bool).self)
            let c = row.makeRandomAccess()
            let r = LaunchWork.Rank(
                rank: rank, node: node, agentURL: url, enrolment: enrolment, gpuIndices: gpus, gpuUUIDs: try c[32].decode([String].self),
                cpuMilli: cpu, memoryMiB: memory, dispatched: dispatched, shareMilli: try c[33].decode(Int?.self), launch: try c[34].decode(Int.self))
            if let last = work.last, last.jobID == job, last.attempt == attempt {
                work[work.count - 1].ranks.append(r)
            } else {
                let environment = (try? JSONDecoder().decode([String: String].self, from: Data(try c[11].decode(String.self).utf8))) ?? [:]
                work.append(
                    LaunchWork(
                        jobID: job, attempt: attempt, ranks: [r], command: try c[10].decode(String.self), env: environment,
                        workingDir: try c[12].decode(String?.self), gpusPerNode: try c[13].decode(Int.self),
                        gracePeriodSeconds: try c[14].decode(Int.self),
                        org: try c[15].decode(String.self), owner: try c[16].decode(String.self), account: try c[17].decode(String.self),
                        image: try c[18].decode(String?.self), launchID: try c[19].decode(String.self), name: try c[20].decode(String.self),
                        pool: try c[21].decode(String.self), project: try c[22].decode(String?.self),
                        timeLimitSeconds: try c[23].decode(Int64?.self), signal: try c[24].decode(String?.self).flatMap { JobSignal(slurm: $0) },
                        slurm: try c[25].decode(String?.self).flatMap { try? JSONDecoder().decode(SlurmOptions.self, from: Data($0.utf8)) },
                        array: try c[26].decode(Int64?.self).flatMap { arrayID in
                            guard let task = try c[27].decode(Int?.self), let count = try c[28].decode(Int?.self),
                                let low = try c[29].decode(Int?.self), let high = try c[30].decode(Int?.self)
                            else { return nil }
                            return SlurmLaunch.ArrayTask(jobID: arrayID, taskID: task, count: count, min: low, max: high)
                        }, rendezvousPort: try c[31].decode(Int?.self)))
            }
        }
        return work
    }

    /// Counts a failed dispatch and backs off (0.5 s doubling, capped at 8 s); returns the tries so far, or nil
    /// when the attempt is no longer being started.
    func countDispatchFailure(_ job: Int64, _ number: Int) async throws -> Int? {
        try await self.tx.query(
            """
            UPDATE attempts SET dispatch_tries = dispatch_tries + 1,
                   next_dispatch_at = now() + least(8.0, 0.5 * power(2, dispatch_tries)) * interval '1 second'
            WHERE job_id = \(job) AND number = \(number) AND state IN ('placed', 'starting')
            RETURNING dispatch_tries
            """
        ).decode(Int.self).first()
    }

    /// Takes the ranks of attempts being stopped that their agents have not confirmed yet, each attempt at
    /// most every 5 s (so a slow agent is asked again, not flooded).
    func claimStops() async throws -> [StopWork] {
        let rows = try await self.tx.query(
            """
            WITH due AS (
                SELECT job_id, number FROM attempts
                WHERE stop_requested_at IS NOT NULL AND attempt_is_live(state)
                  AND (last_stop_sent_at IS NULL OR last_stop_sent_at < now() - interval '5 seconds')
                FOR UPDATE SKIP LOCKED),
            sent AS (
                UPDATE attempts a SET last_stop_sent_at = now() FROM due WHERE a.job_id = due.job_id AND a.number = due.number
                RETURNING a.job_id, a.number)
            SELECT r.job_id, r.attempt, r.rank, r.node, n.agent_url, n.enrolment, coalesce(a.stop_grace_s, d.grace_period_s),
                   a.stop_state IN ('preempted', 'drained')
            FROM sent JOIN attempt_ranks r ON r.job_id = sent.job_id AND r.attempt = sent.number
            JOIN attempts a ON a.job_id = sent.job_id AND a.number = sent.number
            JOIN nodes n ON n.name = r.node CROSS JOIN policy_defaults d
            WHERE rank_is_active(r.state) AND r.dispatched_at IS NOT NULL AND n.agent_url IS NOT NULL
            ORDER BY 1, 2, 3
            """)
        var out: [StopWork] = []
        for try await (job, attempt, rank, node, url, enrolment, grace, warn) in rows.decode((Int64, Int, Int, String, String, Int, Int, Bool?).self)
        {
            out.append(
                StopWork(
                    key: RankKey(jobID: job, attempt: attempt, rank: rank), node: node, agentURL: url, enrolment: enrolment,
                    gracePeriodSeconds: grace, warnFirst: warn ?? false))
        }
        return out
    }
}

extension Transaction {
    var attempts: AttemptsTable { AttemptsTable(tx: self) }
}
