public import AllotCore
public import Foundation
import PostgresNIO

/// Reads allocations against the usage ledger: what `allot quota`, the web page and `/metrics` show.
public struct QuotaStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// One row per organisation × pool with an allocation in force at `at` (or in the month `period`, `YYYY-MM`).
    /// GPU-hours count each attempt's GPUs (fractions by their share) from its start to its end (or now), clipped
    /// to the period; time the infrastructure lost is credited back.
    public func rows(org: String? = nil, pool: String? = nil, period: String? = nil, at now: Date = Date()) async throws -> [QuotaRow] {
        try await self.database.read { tx in try await Self.rows(in: tx, org: org, pool: pool, period: period, at: now) }
    }

    static func rows(
        in tx: Transaction, org: String? = nil, pool: String? = nil, period: String? = nil, at now: Date = Date()
    ) async throws
        -> [QuotaRow]
    {
        let (monthStart, monthEnd) = try Self.month(period, containing: now)
        let reference = period == nil ? now : monthStart
        let rows = try await tx.query(
            """
            WITH a AS (
                SELECT al.org, al.pool, al.guaranteed_gpus, al.limit_gpus, al.gpu_hours::float8 AS hours,
                       coalesce(al.valid_from::timestamptz, \(monthStart)::timestamptz) AS p_start,
                       coalesce((al.valid_until + 1)::timestamptz, \(monthEnd)::timestamptz) AS p_end
                FROM allocations al
                WHERE (al.valid_from IS NULL OR (al.valid_from <= \(reference)::timestamptz::date AND \(reference)::timestamptz::date <= al.valid_until))
                  AND (\(org)::text IS NULL OR al.org = \(org)) AND (\(pool)::text IS NULL OR al.pool = \(pool))
            ),
            live AS (
                SELECT j.org, j.pool, sum(c.milli)::float8 / 1000 AS gpus
                FROM gpu_claims c JOIN jobs j ON j.id = c.job_id WHERE c.released_at IS NULL GROUP BY j.org, j.pool
            ),
            queued AS (
                SELECT org, pool, sum(nodes * (gpus_per_node + coalesce(gpu_milli, 0)::float8 / 1000))::float8 AS gpus
                FROM jobs WHERE state = 'queued' GROUP BY org, pool
            ),
            ledger AS (
                SELECT a.org, a.pool,
                       coalesce(sum(u.gpu_milli::float8 / 1000 * extract(epoch FROM
                           least(coalesce(u.ended_at, now()), a.p_end) - greatest(u.started_at, a.p_start)) / 3600)
                           FILTER (WHERE NOT u.credited), 0) AS used,
                       coalesce(sum(u.gpu_milli::float8 / 1000 * extract(epoch FROM
                           least(coalesce(u.ended_at, now()), a.p_end) - greatest(u.started_at, a.p_start)) / 3600)
                           FILTER (WHERE u.credited), 0) AS credited
                FROM a LEFT JOIN usage u ON u.org = a.org AND u.pool = a.pool
                     AND u.started_at < a.p_end AND coalesce(u.ended_at, now()) > a.p_start
                GROUP BY a.org, a.pool
            )
            SELECT a.org, a.pool, a.guaranteed_gpus, a.limit_gpus, coalesce(l.gpus, 0), coalesce(q.gpus, 0),
                   coalesce(g.used, 0), a.hours, coalesce(g.credited, 0), a.p_start, a.p_end
            FROM a LEFT JOIN live l ON l.org = a.org AND l.pool = a.pool
                   LEFT JOIN queued q ON q.org = a.org AND q.pool = a.pool
                   LEFT JOIN ledger g ON g.org = a.org AND g.pool = a.pool
            ORDER BY a.org, a.pool
            """)
        var out: [QuotaRow] = []
        for try await (org, pool, guaranteed, limit, inUse, queued, used, hours, credited, start, end) in rows.decode(
            (String, String, Int, Int, Double, Double, Double, Double, Double, Date, Date).self)
        {
            let left = hours - used
            // At the current burn rate (GPUs in use now), the entitlement runs out after `left / inUse` hours.
            let exhausts: Date? = inUse > 0 && left > 0 && period == nil ? now.addingTimeInterval(left / inUse * 3600) : (left <= 0 ? now : nil)
            out.append(
                QuotaRow(
                    org: org, pool: pool, guaranteedGPUs: guaranteed, limitGPUs: limit, inUseGPUs: inUse,
                    borrowedGPUs: max(0, inUse - Double(guaranteed)), lentGPUs: max(0, Double(guaranteed) - inUse), queuedGPUs: queued,
                    gpuHoursUsed: used, gpuHours: hours, creditedGPUHours: credited, exhaustsAt: exhausts.flatMap { $0 < end ? $0 : nil },
                    periodStart: start, periodEnd: end))
        }
        return out
    }

    /// The calendar month `YYYY-MM` (UTC), or the one containing `date`.
    static func month(_ period: String?, containing date: Date) throws -> (Date, Date) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        var components = calendar.dateComponents([.year, .month], from: date)
        if let period {
            let parts = period.split(separator: "-")
            guard parts.count == 2, parts[0].count == 4, let y = Int(parts[0]), let m = Int(parts[1]), (1...12).contains(m) else {
                throw StoreError.invalid(field: "period", message: "must be a month as YYYY-MM, not '\(period)'")
            }
            (components.year, components.month) = (y, m)
        }
        let start = calendar.date(from: components)!
        return (start, calendar.date(byAdding: .month, value: 1, to: start)!)
    }
}
