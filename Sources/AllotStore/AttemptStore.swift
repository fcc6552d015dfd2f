import AllotCore
import Foundation
import Logging
import PostgresNIO

/// One attempt's ranks that the dispatcher must start, with everything the agents need.
public struct LaunchWork: Sendable, Hashable {
    public struct Rank: Sendable, Hashable {
        public var rank: Int
        public var node: String
        public var agentURL: String?
        public var callbackToken: String?
        public var gpuIndices: [Int]
        public var dispatched: Bool
    }
    public var jobID: Int64
    public var attempt: Int
    public var ranks: [Rank]
    public var command: String
    public var env: [String: String]
    public var workingDir: String?
    public var gpusPerNode: Int
    public var gracePeriodSeconds: Int
}

/// A rank the dispatcher must ask its agent to stop.
public struct StopWork: Sendable, Hashable {
    public var key: RankKey
    public var node: String
    public var agentURL: String
    public var callbackToken: String?
    public var gracePeriodSeconds: Int
}

/// The lifecycle of attempts: dispatch, reports from agents, stops and endings, node loss.
///
/// An attempt ends in two steps: `requestStop` records how it will end (cancelled, failed, lost, …) and
/// asks for its ranks to be stopped; once every rank has ended, `finishIfDone` ends the attempt, releases
/// its GPUs, closes its usage and moves the job on (finished, or requeued while attempts remain).
public struct AttemptStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    private var logger: Logger { self.database.logger }

    // MARK: - Dispatch

    /// Attempts placed but not yet started on every agent, whose next try is due.
    public func dueLaunches() async throws -> [LaunchWork] {
        let rows = try await self.database.query(
            """
            SELECT a.job_id, a.number, r.rank, r.node, n.agent_url, n.callback_token, r.gpu_indices, r.dispatched_at IS NOT NULL,
                   j.command, j.env::text, j.working_dir, j.gpus_per_node, d.grace_period_s
            FROM attempts a
            JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
            JOIN nodes n ON n.name = r.node
            JOIN jobs j ON j.id = a.job_id
            CROSS JOIN policy_defaults d
            WHERE a.state = 'placed' AND a.stop_requested_at IS NULL AND a.next_dispatch_at <= now()
            ORDER BY a.job_id, a.number, r.rank
            """)
        var work: [LaunchWork] = []
        for try await row in rows {
            let (job, attempt, rank, node, url, token, gpus, dispatched, command, env, dir, gpn, grace) = try row.decode(
                (Int64, Int, Int, String, String?, String?, [Int], Bool, String, String, String?, Int, Int).self)
            let r = LaunchWork.Rank(rank: rank, node: node, agentURL: url, callbackToken: token, gpuIndices: gpus, dispatched: dispatched)
            if let last = work.last, last.jobID == job, last.attempt == attempt {
                work[work.count - 1].ranks.append(r)
            } else {
                let environment = (try? JSONDecoder().decode([String: String].self, from: Data(env.utf8))) ?? [:]
                work.append(
                    LaunchWork(
                        jobID: job, attempt: attempt, ranks: [r], command: command, env: environment, workingDir: dir, gpusPerNode: gpn,
                        gracePeriodSeconds: grace))
            }
        }
        return work
    }

    /// Records that an agent accepted a rank; once every rank is accepted the attempt (and job) is `starting`.
    public func markDispatched(_ key: RankKey) async throws {
        try await self.database.transaction { connection in
            try await connection.query(
                """
                UPDATE attempt_ranks SET dispatched_at = coalesce(dispatched_at, now())
                WHERE job_id = \(key.jobID) AND attempt = \(key.attempt) AND rank = \(key.rank)
                """, logger: self.logger)
            let started = try await connection.query(
                """
                UPDATE attempts SET state = 'starting'
                WHERE job_id = \(key.jobID) AND number = \(key.attempt) AND state = 'placed' AND stop_requested_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM attempt_ranks WHERE job_id = \(key.jobID) AND attempt = \(key.attempt) AND dispatched_at IS NULL)
                RETURNING number
                """, logger: self.logger
            ).decode(Int.self).first { _ in true }
            if started != nil {
                try await connection.query(
                    "UPDATE jobs SET state = 'starting', updated_at = now() WHERE id = \(key.jobID) AND state = 'placed'", logger: self.logger)
            }
        }
    }

    /// Counts a failed dispatch and backs off (0.5 s doubling, capped at 8 s); after `maxTries` the attempt ends
    /// `dispatch_failed` and the job is requeued. Returns true when the attempt was given up.
    @discardableResult
    public func dispatchFailed(jobID: Int64, attempt: Int, node: String, error: String, maxTries: Int) async throws -> Bool {
        try await self.database.transaction { connection in
            let tries = try await connection.query(
                """
                UPDATE attempts SET dispatch_tries = dispatch_tries + 1,
                       next_dispatch_at = now() + least(8.0, 0.5 * power(2, dispatch_tries)) * interval '1 second'
                WHERE job_id = \(jobID) AND number = \(attempt) AND state IN ('placed', 'starting')
                RETURNING dispatch_tries
                """, logger: self.logger
            ).decode(Int.self).first { _ in true }
            guard let tries, tries >= maxTries else { return false }
            try await self.requestStop(
                jobID: jobID, attempt: attempt, endAs: .dispatchFailed,
                reason: "the agent on \(node) did not accept the launch after \(tries) tries: \(error)", exitCode: nil, on: connection)
            return true
        }
    }

    // MARK: - Stopping and ending

    /// Records how a live attempt will end and asks for its ranks to stop. Ranks never started, or on a lost
    /// node, count as ended at once. The first reason given wins.
    public func requestStop(
        jobID: Int64, attempt: Int, endAs: AttemptState, reason: String, exitCode: Int?, on connection: PostgresConnection
    ) async throws {
        try await connection.query(
            """
            UPDATE attempts SET stop_requested_at = coalesce(stop_requested_at, now()),
                   stop_state = coalesce(stop_state, \(endAs.rawValue)::attempt_state),
                   reason = coalesce(reason, \(reason)), exit_code = coalesce(exit_code, \(exitCode))
            WHERE job_id = \(jobID) AND number = \(attempt) AND state IN ('placed', 'starting', 'running')
            """, logger: self.logger)
        try await connection.query(
            """
            UPDATE attempt_ranks r SET state = 'vanished', ended_at = now()
            WHERE r.job_id = \(jobID) AND r.attempt = \(attempt) AND r.state IN ('pending', 'running')
              AND (r.dispatched_at IS NULL OR EXISTS (SELECT 1 FROM nodes n WHERE n.name = r.node AND n.state = 'lost'))
            """, logger: self.logger)
        try await self.finishIfDone(jobID: jobID, attempt: attempt, on: connection)
    }

    /// Ranks of attempts being stopped that their agents have not yet confirmed; each attempt at most every 5 s.
    public func dueStops() async throws -> [StopWork] {
        try await self.database.transaction { connection in
            let rows = try await connection.query(
                """
                WITH due AS (
                    UPDATE attempts SET last_stop_sent_at = now()
                    WHERE stop_requested_at IS NOT NULL AND state IN ('placed', 'starting', 'running')
                      AND (last_stop_sent_at IS NULL OR last_stop_sent_at < now() - interval '5 seconds')
                    RETURNING job_id, number)
                SELECT r.job_id, r.attempt, r.rank, r.node, n.agent_url, n.callback_token, d.grace_period_s
                FROM due JOIN attempt_ranks r ON r.job_id = due.job_id AND r.attempt = due.number
                JOIN nodes n ON n.name = r.node CROSS JOIN policy_defaults d
                WHERE r.state IN ('pending', 'running') AND r.dispatched_at IS NOT NULL AND n.agent_url IS NOT NULL
                """, logger: self.logger)
            var out: [StopWork] = []
            for try await (job, attempt, rank, node, url, token, grace) in rows.decode((Int64, Int, Int, String, String, String?, Int).self) {
                out.append(
                    StopWork(
                        key: RankKey(jobID: job, attempt: attempt, rank: rank), node: node, agentURL: url, callbackToken: token,
                        gracePeriodSeconds: grace))
            }
            return out
        }
    }

    /// Ends the attempt once no rank is pending or running: releases its GPUs, closes its usage and moves the job on.
    func finishIfDone(jobID: Int64, attempt: Int, on connection: PostgresConnection) async throws {
        let rows = try await connection.query(
            """
            SELECT a.state::text, a.stop_state::text, a.reason, a.exit_code,
                   count(*) FILTER (WHERE r.state IN ('pending', 'running')),
                   count(*) FILTER (WHERE r.state = 'exited' AND r.exit_code = 0),
                   count(*)
            FROM attempts a JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
            WHERE a.job_id = \(jobID) AND a.number = \(attempt)
            GROUP BY a.state, a.stop_state, a.reason, a.exit_code
            """, logger: self.logger)
        guard
            let (state, stopState, reason, exitCode, active, succeeded, total) = try await rows.decode(
                (String, String?, String?, Int?, Int, Int, Int).self
            ).first(where: { _ in true }),
            AttemptState(rawValue: state)?.isLive == true, active == 0
        else { return }
        let ending = stopState.flatMap(AttemptState.init(rawValue:)) ?? (succeeded == total ? .succeeded : .failed)
        let why = reason ?? (ending == .succeeded ? "exited 0" : "failed")
        try await connection.query(
            """
            UPDATE attempts SET state = \(ending.rawValue)::attempt_state, ended_at = now(), reason = \(why),
                   exit_code = \(ending == .succeeded ? 0 : exitCode)
            WHERE job_id = \(jobID) AND number = \(attempt)
            """, logger: self.logger)
        try await connection.query(
            "UPDATE gpu_claims SET released_at = now() WHERE job_id = \(jobID) AND attempt = \(attempt) AND released_at IS NULL",
            logger: self.logger)
        try await connection.query(
            """
            UPDATE usage SET ended_at = now(), credited = \(ending == .lost || ending == .drained || ending == .dispatchFailed)
            WHERE job_id = \(jobID) AND attempt = \(attempt) AND ended_at IS NULL
            """, logger: self.logger)

        // While another attempt of the job is live (a replacement, or the attempt it replaces), ending this one
        // does not move the job: the other carries on, and becomes the job's current attempt.
        let others = try await connection.query(
            "SELECT number FROM attempts WHERE job_id = \(jobID) AND number <> \(attempt) AND state IN ('placed', 'starting', 'running')",
            logger: self.logger
        ).decode(Int.self).reduce(into: [Int]()) { $0.append($1) }
        if !others.isEmpty {
            try await connection.query(
                "UPDATE attempts SET replaces = NULL WHERE job_id = \(jobID) AND replaces = \(attempt)", logger: self.logger)
            try await AuditStore.append(
                connection, logger: self.logger, actor: .scheduler, action: "attempt.end", target: "job/\(jobID)",
                outcome: "attempt \(attempt) \(ending.rawValue); attempt \(others[0]) carries on", detail: ["reason": why])
            return
        }
        let jobState: JobState
        let jobReason: String
        let job = try await connection.query(
            "SELECT attempts, max_attempts, cancel_requested FROM jobs WHERE id = \(jobID) FOR UPDATE", logger: self.logger
        ).decode((Int, Int, Bool).self).first { _ in true }
        let (made, maxAttempts, cancelRequested) = job ?? (attempt, attempt, false)
        switch ending {
        case .succeeded:
            (jobState, jobReason) = (.succeeded, "exited 0")
        case .cancelled:
            (jobState, jobReason) = (.cancelled, why)
        case .failed:
            (jobState, jobReason) = (.failed, why)
        default:
            if cancelRequested {
                (jobState, jobReason) = (.cancelled, "cancelled")
            } else if made < maxAttempts {
                (jobState, jobReason) = (.queued, "requeued after attempt \(attempt): \(why)")
            } else {
                (jobState, jobReason) = (.failed, "attempt \(attempt) \(ending.rawValue): \(why); maxAttempts (\(maxAttempts)) spent")
            }
        }
        let jobExit: Int? = jobState == .succeeded ? 0 : jobState == .failed ? exitCode : nil
        try await connection.query(
            """
            UPDATE jobs SET state = \(jobState.rawValue)::job_state, reason = \(jobReason), exit_code = \(jobExit),
                   ended_at = CASE WHEN \(jobState.isTerminal) THEN now() END, updated_at = now()
            WHERE id = \(jobID)
            """, logger: self.logger)
        try await AuditStore.append(
            connection, logger: self.logger, actor: .scheduler, action: "attempt.end", target: "job/\(jobID)",
            outcome: "attempt \(attempt) \(ending.rawValue); job \(jobState.rawValue)", detail: ["reason": why])
    }

    /// Stops attempts that ran past their job's time limit (SIGTERM, grace, SIGKILL); they end `failed`, with
    /// the reason saying so, as Slurm's TIMEOUT does. Backfill relies on jobs ending by their limits.
    public func stopOverdue() async throws {
        try await self.database.transaction { connection in
            let overdue = try await connection.query(
                """
                SELECT a.job_id, a.number, j.time_limit_s FROM attempts a JOIN jobs j ON j.id = a.job_id
                WHERE a.state = 'running' AND a.stop_requested_at IS NULL AND j.time_limit_s IS NOT NULL
                  AND a.started_at + make_interval(secs => j.time_limit_s) < now()
                FOR UPDATE OF a
                """, logger: self.logger
            ).decode((Int64, Int, Int64).self).reduce(into: [(Int64, Int, Int64)]()) { $0.append($1) }
            for (job, attempt, limit) in overdue {
                try await self.requestStop(
                    jobID: job, attempt: attempt, endAs: .failed, reason: "timeout: the time limit of \(limit)s was reached", exitCode: nil,
                    on: connection)
            }
        }
    }

    // MARK: - Agent reports

    /// Applies what an agent reports of its ranks. Returns the ranks whose endings are now recorded.
    func apply(_ reports: [RankStatus], node: String, on connection: PostgresConnection) async throws -> [RankKey] {
        var touched = Set<[Int64]>()
        for report in reports {
            let k = report.key
            switch report.state {
            case .running:
                try await connection.query(
                    """
                    UPDATE attempt_ranks SET state = 'running', started_at = coalesce(started_at, now())
                    WHERE job_id = \(k.jobID) AND attempt = \(k.attempt) AND rank = \(k.rank) AND node = \(node) AND state = 'pending'
                    """, logger: self.logger)
            case .exited, .vanished:
                let state = report.state == .exited ? "exited" : "vanished"
                try await connection.query(
                    """
                    UPDATE attempt_ranks SET state = \(state)::rank_state, exit_code = \(report.exitCode), signal = \(report.signal),
                           ended_at = now(), started_at = coalesce(started_at, now())
                    WHERE job_id = \(k.jobID) AND attempt = \(k.attempt) AND rank = \(k.rank) AND node = \(node)
                      AND state IN ('pending', 'running')
                    """, logger: self.logger)
            }
            touched.insert([k.jobID, Int64(k.attempt)])
        }
        for pair in touched { try await self.advance(jobID: pair[0], attempt: Int(pair[1]), on: connection) }
        let ended = reports.filter { $0.state != .running }
        guard !ended.isEmpty else { return [] }
        // Acknowledge every ended rank the database holds as ended, or does not know at all.
        let jobs = ended.map(\.key.jobID)
        let attempts = ended.map(\.key.attempt)
        let ranks = ended.map(\.key.rank)
        let stillActive = try await connection.query(
            """
            SELECT r.job_id, r.attempt, r.rank FROM attempt_ranks r
            JOIN unnest(\(jobs)::bigint[], \(attempts)::integer[], \(ranks)::integer[]) AS k(job_id, attempt, rank)
              ON r.job_id = k.job_id AND r.attempt = k.attempt AND r.rank = k.rank
            WHERE r.state IN ('pending', 'running')
            """, logger: self.logger
        ).decode((Int64, Int, Int).self)
        var active = Set<RankKey>()
        for try await (j, a, r) in stillActive { active.insert(RankKey(jobID: j, attempt: a, rank: r)) }
        return ended.map(\.key).filter { !active.contains($0) }
    }

    /// Moves one attempt on after its ranks changed: running once all run; stopping the gang when a rank
    /// failed or vanished; ended once all ended.
    private func advance(jobID: Int64, attempt: Int, on connection: PostgresConnection) async throws {
        let rows = try await connection.query(
            """
            SELECT a.state::text, a.stop_requested_at IS NOT NULL,
                   count(*) FILTER (WHERE r.state = 'running'),
                   count(*) FILTER (WHERE r.state = 'exited' AND r.exit_code = 0),
                   count(*),
                   (array_agg(r.rank || ':' || r.node || ':' || coalesce(r.exit_code, -1) || ':' || coalesce(r.signal, 0) ORDER BY r.ended_at)
                       FILTER (WHERE r.state = 'exited' AND (r.exit_code IS DISTINCT FROM 0)))[1],
                   (array_agg(r.rank || ':' || r.node) FILTER (WHERE r.state = 'vanished'))[1]
            FROM attempts a JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
            WHERE a.job_id = \(jobID) AND a.number = \(attempt)
            GROUP BY a.state, a.stop_requested_at
            """, logger: self.logger)
        guard
            let (state, stopping, running, succeeded, total, failedRank, vanishedRank) = try await rows.decode(
                (String, Bool, Int, Int, Int, String?, String?).self
            ).first(where: { _ in true }),
            let current = AttemptState(rawValue: state), current.isLive
        else { return }
        if !stopping {
            if let failedRank {
                let p = failedRank.split(separator: ":")
                let (code, signal) = (Int(p[2]) ?? -1, Int(p[3]) ?? 0)
                let how = signal > 0 ? "was killed by signal \(signal)" : code < 0 ? "ended with an unknown status" : "exited with code \(code)"
                try await self.requestStop(
                    jobID: jobID, attempt: attempt, endAs: .failed, reason: "rank \(p[0]) on \(p[1]) \(how)",
                    exitCode: signal > 0 ? 128 + signal : code, on: connection)
                return
            }
            if let vanishedRank {
                let p = vanishedRank.split(separator: ":")
                try await self.requestStop(
                    jobID: jobID, attempt: attempt, endAs: .lost,
                    reason: "rank \(p[0]) on \(p[1]) vanished: its agent restarted and the process is gone (exit status unknown)",
                    exitCode: nil, on: connection)
                return
            }
            if current != .running && running + succeeded == total && running > 0 {
                try await self.markRunning(jobID: jobID, attempt: attempt, on: connection)
            }
        }
        try await self.finishIfDone(jobID: jobID, attempt: attempt, on: connection)
    }

    private func markRunning(jobID: Int64, attempt: Int, on connection: PostgresConnection) async throws {
        // A replacement that runs takes over: the attempt it replaces (on a draining node) is stopped now.
        let replaced =
            try await connection.query(
                "SELECT replaces FROM attempts WHERE job_id = \(jobID) AND number = \(attempt)", logger: self.logger
            ).decode(Int?.self).first { _ in true } ?? nil
        if let replaced {
            try await self.requestStop(
                jobID: jobID, attempt: replaced, endAs: .drained,
                reason: "replaced by attempt \(attempt), started elsewhere before its node was drained", exitCode: nil, on: connection)
        }
        try await connection.query(
            "UPDATE attempts SET state = 'running', started_at = now() WHERE job_id = \(jobID) AND number = \(attempt)", logger: self.logger)
        try await connection.query(
            "UPDATE jobs SET state = 'running', updated_at = now() WHERE id = \(jobID) AND state IN ('placed', 'starting')", logger: self.logger)
        try await connection.query(
            """
            INSERT INTO usage (job_id, attempt, org, pool, gpu_milli, started_at, allocation_id)
            SELECT j.id, \(attempt), j.org, j.pool, (SELECT coalesce(sum(milli), 0) FROM gpu_claims WHERE job_id = j.id AND attempt = \(attempt)), now(),
                   (SELECT al.id FROM allocations al WHERE al.org = j.org AND al.pool = j.pool
                      AND (al.valid_from IS NULL OR current_date BETWEEN al.valid_from AND al.valid_until)
                    ORDER BY al.valid_from NULLS LAST LIMIT 1)
            FROM jobs j WHERE j.id = \(jobID)
            ON CONFLICT DO NOTHING
            """, logger: self.logger)
    }

    // MARK: - Node loss

    /// Marks nodes `lost` whose last heartbeat is older than `timeoutSeconds`, and stops their attempts (ending
    /// `lost`, so the jobs requeue). When more than half of a pool's reporting nodes go silent together, that is
    /// more likely the network or the scheduler's side than the nodes: the pool is held instead (nothing is
    /// requeued, an audit record and a metric say so) until the nodes return or an operator declares them lost.
    /// Returns the nodes newly lost and the pools newly held.
    public func markLostNodes(timeoutSeconds: Int) async throws -> (lost: [String], held: [String]) {
        try await self.database.transaction { connection in
            let nodes = try await connection.query(
                """
                SELECT n.pool, n.name, n.last_heartbeat < now() - make_interval(secs => \(Double(timeoutSeconds)))
                FROM nodes n WHERE n.last_heartbeat IS NOT NULL AND n.state <> 'lost' ORDER BY n.name FOR UPDATE
                """, logger: self.logger
            ).decode((String, String, Bool).self).reduce(into: [(String, String, Bool)]()) { $0.append($1) }
            var byPool: [String: (silent: [String], reporting: Int)] = [:]
            for (pool, name, isSilent) in nodes {
                byPool[pool, default: ([], 0)].reporting += 1
                if isSilent { byPool[pool]!.silent.append(name) }
            }
            var lost: [String] = []
            var held: [String] = []
            for (pool, p) in byPool.sorted(by: { $0.key < $1.key }) {
                if p.silent.isEmpty {
                    try await connection.query("DELETE FROM pool_holds WHERE pool = \(pool)", logger: self.logger)
                    continue
                }
                if p.reporting >= 2 && p.silent.count * 2 > p.reporting {
                    let inserted =
                        try await connection.query(
                            """
                            INSERT INTO pool_holds (pool, silent_nodes) VALUES (\(pool), \(p.silent))
                            ON CONFLICT (pool) DO UPDATE SET silent_nodes = EXCLUDED.silent_nodes RETURNING (xmax = 0)
                            """, logger: self.logger
                        ).decode(Bool.self).first { _ in true } ?? false
                    if inserted {
                        held.append(pool)
                        try await AuditStore.append(
                            connection, logger: self.logger, actor: .scheduler, action: "pool.hold", target: "pool/\(pool)",
                            outcome: "\(p.silent.count) of \(p.reporting) nodes silent: nothing requeued; an operator decides",
                            detail: ["nodes": p.silent.joined(separator: ",")])
                    }
                    continue
                }
                try await connection.query("DELETE FROM pool_holds WHERE pool = \(pool)", logger: self.logger)
                try await self.markLost(p.silent, reason: "no heartbeat for \(timeoutSeconds)s", actor: .scheduler, on: connection)
                lost += p.silent
            }
            return (lost, held)
        }
    }

    /// Marks nodes lost now and stops their attempts so their jobs requeue; their ranks count as ended.
    public func markLost(_ nodes: [String], reason: String, actor: Principal, on connection: PostgresConnection) async throws {
        try await connection.query(
            "UPDATE nodes SET state = 'lost', state_reason = \(reason) WHERE name = ANY(\(nodes)) AND state <> 'lost'", logger: self.logger)
        try await connection.query(
            """
            INSERT INTO node_downtime (node, kind, reason) SELECT n, 'lost', \(reason) FROM unnest(\(nodes)::text[]) AS n
            ON CONFLICT DO NOTHING
            """, logger: self.logger)
        let attempts = try await connection.query(
            """
            SELECT DISTINCT a.job_id, a.number, r.node FROM attempts a
            JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
            WHERE a.state IN ('placed', 'starting', 'running') AND r.node = ANY(\(nodes))
            """, logger: self.logger
        ).decode((Int64, Int, String).self).reduce(into: [(Int64, Int, String)]()) { $0.append($1) }
        for (job, attempt, node) in attempts {
            try await self.requestStop(
                jobID: job, attempt: attempt, endAs: .lost, reason: "node \(node) lost (\(reason))", exitCode: nil, on: connection)
        }
        for node in nodes {
            try await AuditStore.append(
                connection, logger: self.logger, actor: actor, action: "node.lost", target: "node/\(node)", outcome: "lost",
                detail: ["reason": reason])
        }
    }
}
