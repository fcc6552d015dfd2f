import AllotCore
import Foundation
import PostgresNIO

/// The one writer of `usage`, the append-only ledger: GPU time per rank of an attempt, charged to organisation ×
/// project × user × pool × grant version. A charge row opens when every rank of the attempt runs and closes when
/// the attempt ends; time the infrastructure lost is a credit row of its own, from the fault's moment to the end.
/// Closed rows never change (the database refuses it); corrections are `usage_adjustments`.
struct UsageLedger {
    let tx: Transaction

    /// Opens one charge row per rank: its node and GPU thousandths, charged to the grant version in force now.
    func open(_ job: Int64, _ attempt: Int) async throws {
        let now = try await self.tx.now()
        try await self.tx.query(
            """
            INSERT INTO usage (job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, started_at, checkpointed_at, allocation_id)
            SELECT j.id, r.attempt, r.rank, r.node, j.org, j.project, j.owner, j.pool,
                   (SELECT coalesce(sum(c.milli), 0) FROM gpu_claims c WHERE c.job_id = j.id AND c.attempt = r.attempt AND c.rank = r.rank),
                   \(now), \(now),
                   (SELECT al.id FROM allocations al WHERE al.org = j.org AND al.pool = j.pool AND al.superseded_at IS NULL
                      AND (al.valid_from IS NULL OR \(now)::timestamptz::date BETWEEN al.valid_from AND al.valid_until)
                    ORDER BY al.valid_from NULLS LAST LIMIT 1)
            FROM jobs j JOIN attempt_ranks r ON r.job_id = j.id AND r.attempt = \(attempt)
            WHERE j.id = \(job)
            ON CONFLICT (job_id, attempt, rank, launch) WHERE NOT credited DO NOTHING
            """)
    }

    /// A restarted replica runs again: charged from now, for this launch, where it has no open charge (one that
    /// restarted on its node kept its GPUs, and its charge, all along).
    func openRank(_ job: Int64, _ attempt: Int, rank: Int) async throws {
        let now = try await self.tx.now()
        try await self.tx.query(
            """
            INSERT INTO usage (job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, started_at, checkpointed_at, allocation_id, launch)
            SELECT j.id, r.attempt, r.rank, r.node, j.org, j.project, j.owner, j.pool,
                   (SELECT coalesce(sum(c.milli), 0) FROM gpu_claims c
                    WHERE c.job_id = j.id AND c.attempt = r.attempt AND c.rank = r.rank AND c.released_at IS NULL),
                   \(now), \(now),
                   (SELECT al.id FROM allocations al WHERE al.org = j.org AND al.pool = j.pool AND al.superseded_at IS NULL
                      AND (al.valid_from IS NULL OR \(now)::timestamptz::date BETWEEN al.valid_from AND al.valid_until)
                    ORDER BY al.valid_from NULLS LAST LIMIT 1), r.launch
            FROM jobs j JOIN attempt_ranks r ON r.job_id = j.id AND r.attempt = \(attempt) AND r.rank = \(rank)
            WHERE j.id = \(job) AND NOT EXISTS (
                SELECT 1 FROM usage u WHERE u.job_id = j.id AND u.attempt = r.attempt AND u.rank = r.rank AND u.ended_at IS NULL AND NOT u.credited)
            ON CONFLICT (job_id, attempt, rank, launch) WHERE NOT credited DO NOTHING
            """)
    }

    /// Closes one replica's open charge (its node was lost): at the fault's moment, with a credit row for the rest.
    func closeRank(_ job: Int64, _ attempt: Int, rank: Int, credit: AttemptLifecycle.Credit?) async throws {
        let now = try await self.tx.now()
        let from = credit?.from ?? now
        try await self.tx.query(
            """
            WITH closed AS (
                UPDATE usage SET ended_at = greatest(started_at, least(\(now), \(from)))
                WHERE job_id = \(job) AND attempt = \(attempt) AND rank = \(rank) AND ended_at IS NULL AND NOT credited
                RETURNING job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, ended_at, allocation_id, launch)
            INSERT INTO usage (job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, started_at, ended_at, checkpointed_at,
                               allocation_id, credited, cause, fault_at, launch)
            SELECT job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, ended_at, \(now), \(now), allocation_id, true,
                   left(\(credit?.cause ?? "replica moved"), 500), \(from), launch
            FROM closed WHERE ended_at < \(now) AND \(credit != nil)
            """)
    }

    /// Closes the attempt's charge rows (if it ever ran). With a credit, they close at the fault's moment and a
    /// credit row covers the rest, with its cause.
    func close(_ job: Int64, _ attempt: Int, credit: AttemptLifecycle.Credit?) async throws {
        let now = try await self.tx.now()
        guard let credit else {
            try await self.tx.query(
                // Never before it began: a rank reported running by a transaction that committed after this one
                // started (its now()) ends when it began (seen cancelling arrays of 1,000 while their ranks started).
                """
                UPDATE usage SET ended_at = greatest(started_at, \(now))
                WHERE job_id = \(job) AND attempt = \(attempt) AND ended_at IS NULL AND NOT credited
                """)
            return
        }
        try await self.tx.query(
            """
            WITH closed AS (
                UPDATE usage SET ended_at = greatest(started_at, least(\(now), \(credit.from)))
                WHERE job_id = \(job) AND attempt = \(attempt) AND ended_at IS NULL AND NOT credited
                RETURNING job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, ended_at, allocation_id, launch)
            INSERT INTO usage (job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, started_at, ended_at, checkpointed_at,
                               allocation_id, credited, cause, fault_at, launch)
            SELECT job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, ended_at, \(now), \(now), allocation_id, true,
                   left(\(credit.cause), 500), \(credit.from), launch
            FROM closed WHERE ended_at < \(now)
            """)
    }
}

extension UsageLedger {
    /// Records that every open row still runs now: after a crash the ledger knows each ran at least until its
    /// last checkpoint, whatever else is lost.
    func checkpoint() async throws -> Int {
        try await self.tx.query("UPDATE usage SET checkpointed_at = now() WHERE ended_at IS NULL RETURNING 1").decode(Int.self).reduce(0) { n, _ in
            n + 1
        }
    }
}

extension Transaction {
    var usage: UsageLedger { UsageLedger(tx: self) }
}
