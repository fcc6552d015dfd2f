import AllotCore
import Foundation
import PostgresNIO

/// The one writer of `usage`: GPU time per attempt, charged to organisation × pool × allocation. A row opens when
/// every rank of the attempt runs and closes when the attempt ends; time the infrastructure lost is credited.
struct UsageLedger {
    let tx: Transaction

    /// Opens the attempt's row: its GPU thousandths, charged to the allocation in force today.
    func open(_ job: Int64, _ attempt: Int) async throws {
        let now = try await self.tx.now()
        try await self.tx.query(
            """
            INSERT INTO usage (job_id, attempt, org, pool, gpu_milli, started_at, allocation_id)
            SELECT j.id, \(attempt), j.org, j.pool, (SELECT coalesce(sum(milli), 0) FROM gpu_claims WHERE job_id = j.id AND attempt = \(attempt)), \(now),
                   (SELECT al.id FROM allocations al WHERE al.org = j.org AND al.pool = j.pool
                      AND (al.valid_from IS NULL OR current_date BETWEEN al.valid_from AND al.valid_until)
                    ORDER BY al.valid_from NULLS LAST LIMIT 1)
            FROM jobs j WHERE j.id = \(job)
            ON CONFLICT DO NOTHING
            """)
    }

    /// Closes the attempt's row (if it ever ran).
    func close(_ job: Int64, _ attempt: Int, credited: Bool) async throws {
        try await self.tx.query(
            """
            UPDATE usage SET ended_at = \(try await self.tx.now()), credited = \(credited)
            WHERE job_id = \(job) AND attempt = \(attempt) AND ended_at IS NULL
            """)
    }
}

extension Transaction {
    var usage: UsageLedger { UsageLedger(tx: self) }
}
