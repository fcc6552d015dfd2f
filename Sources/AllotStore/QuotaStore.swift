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
        // The grant version that counts: the one in force now, or at the end of a past month (so a later policy
        // change never alters a past period). A windowed grant reported for a month is sliced to it.
        let reference = period == nil ? now : min(now, monthEnd.addingTimeInterval(-1))
        let sliced = period != nil
        let rows = try await tx.query(
            """
            WITH a AS (
                SELECT al.org, al.pool, al.guaranteed_gpus, al.limit_gpus, al.gpu_hours::float8 AS hours,
                       CASE WHEN al.valid_from IS NULL THEN \(monthStart)::timestamptz
                            WHEN \(sliced) THEN greatest(al.valid_from::timestamptz, \(monthStart)::timestamptz)
                            ELSE al.valid_from::timestamptz END AS p_start,
                       CASE WHEN al.valid_from IS NULL THEN \(monthEnd)::timestamptz
                            WHEN \(sliced) THEN least((al.valid_until + 1)::timestamptz, \(monthEnd)::timestamptz)
                            ELSE (al.valid_until + 1)::timestamptz END AS p_end
                FROM allocations al
                WHERE al.effective_from <= \(reference) AND (al.superseded_at IS NULL OR al.superseded_at > \(reference))
                  AND (al.valid_from IS NULL
                       OR (NOT \(sliced) AND al.valid_from <= \(reference)::timestamptz::date AND \(reference)::timestamptz::date <= al.valid_until)
                       OR (\(sliced) AND al.valid_from < \(monthEnd)::timestamptz::date AND al.valid_until >= \(monthStart)::timestamptz::date))
                  AND (\(org)::text IS NULL OR al.org = \(org)) AND (\(pool)::text IS NULL OR al.pool = \(pool))
            ),
            live AS (
                SELECT j.org, j.pool, sum(c.milli)::float8 / 1000 AS gpus
                FROM gpu_claims c JOIN jobs j ON j.id = c.job_id WHERE c.released_at IS NULL GROUP BY j.org, j.pool
            ),
            -- Each live attempt's GPUs and what is left of its time limit (else of the policy's budget time).
            held AS (
                SELECT j.org, j.pool, sum(c.milli)::float8 / 1000 AS gpus,
                       greatest(0, coalesce(j.time_limit_s, d.budget_time_s) - extract(epoch FROM now() - coalesce(t.started_at, now())))::float8 AS secs
                FROM gpu_claims c JOIN attempts t ON t.job_id = c.job_id AND t.number = c.attempt JOIN jobs j ON j.id = c.job_id
                CROSS JOIN policy_defaults d
                WHERE c.released_at IS NULL
                GROUP BY j.org, j.pool, t.job_id, t.number, j.time_limit_s, d.budget_time_s, t.started_at
            ),
            reserved AS (
                SELECT a.org, a.pool, sum(h.gpus * least(h.secs, greatest(0, extract(epoch FROM a.p_end - now())))) / 3600 AS hours
                FROM a JOIN held h ON h.org = a.org AND h.pool = a.pool GROUP BY a.org, a.pool
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
            ),
            -- Fair share: every charged row's GPU-seconds decayed by age (the integral of 2^(-age/h) over the row),
            -- for every grant in force now, so that shares are of the whole pool whatever the filter. Rows older than
            -- 40 half-lives weigh under 1e-12 and are left out; exponents are floored where float8 would underflow.
            hl AS (SELECT fair_share_half_life_s::float8 AS h FROM policy_defaults),
            grants_now AS (
                SELECT al.org, al.pool, al.guaranteed_gpus FROM allocations al
                WHERE al.effective_from <= now() AND al.superseded_at IS NULL
                  AND (al.valid_from IS NULL OR current_date BETWEEN al.valid_from AND al.valid_until)
            ),
            decay AS (
                SELECT g.org, g.pool, g.guaranteed_gpus,
                       coalesce((SELECT sum(u.gpu_milli::float8 / 1000 * hl.h / ln(2) *
                                      (power(2::float8, greatest(-1000, -extract(epoch FROM now() - coalesce(u.ended_at, now()))::float8 / hl.h))
                                       - power(2::float8, greatest(-1000, -extract(epoch FROM now() - u.started_at)::float8 / hl.h))))
                                 FROM usage u
                                 WHERE u.org = g.org AND u.pool = g.pool AND NOT u.credited
                                   AND coalesce(u.ended_at, now()) > now() - make_interval(secs => 40 * hl.h)), 0)
                     + coalesce((SELECT sum(x.gpu_seconds * power(2::float8, greatest(-1000, -greatest(0, extract(epoch FROM now() - x.applies_at))::float8 / hl.h)))
                                 FROM usage_adjustments x WHERE x.org = g.org AND x.pool = g.pool), 0) AS seconds
                FROM grants_now g CROSS JOIN hl
            ),
            shares AS (
                SELECT org, pool, seconds / 3600 AS hours, sum(greatest(0, seconds)) OVER (PARTITION BY pool) / 3600 AS pool_hours,
                       guaranteed_gpus::float8 AS guaranteed, sum(guaranteed_gpus) OVER (PARTITION BY pool)::float8 AS pool_guaranteed
                FROM decay
            ),
            adjusted AS (
                SELECT a.org, a.pool, sum(x.gpu_seconds)::float8 / 3600 AS hours
                FROM a JOIN usage_adjustments x ON x.org = a.org AND x.pool = a.pool AND x.applies_at >= a.p_start AND x.applies_at < a.p_end
                GROUP BY a.org, a.pool
            )
            SELECT a.org, a.pool, a.guaranteed_gpus, a.limit_gpus, coalesce(l.gpus, 0), coalesce(q.gpus, 0),
                   coalesce(g.used, 0) + coalesce(x.hours, 0), a.hours, coalesce(g.credited, 0), a.p_start, a.p_end, coalesce(r.hours, 0),
                   coalesce(s.hours, 0), coalesce(s.pool_hours, 0), coalesce(s.guaranteed, 0), coalesce(s.pool_guaranteed, 0)
            FROM a LEFT JOIN live l ON l.org = a.org AND l.pool = a.pool
                   LEFT JOIN queued q ON q.org = a.org AND q.pool = a.pool
                   LEFT JOIN ledger g ON g.org = a.org AND g.pool = a.pool
                   LEFT JOIN reserved r ON r.org = a.org AND r.pool = a.pool
                   LEFT JOIN adjusted x ON x.org = a.org AND x.pool = a.pool
                   LEFT JOIN shares s ON s.org = a.org AND s.pool = a.pool
            ORDER BY a.org, a.pool
            """)
        var out: [QuotaRow] = []
        for try await row in rows {
            let (org, pool, guaranteed, limit, inUse, queued, used, hours, credited, start, end, reserved) = try row.decode(
                (String, String, Int, Int, Double, Double, Double, Double, Double, Date, Date, Double).self)
            let c = row.makeRandomAccess()
            let (decayed, poolDecayed, share, poolShare) = (
                try c[12].decode(Double.self), try c[13].decode(Double.self), try c[14].decode(Double.self), try c[15].decode(Double.self)
            )
            let left = hours - used
            // At the current burn rate (GPUs in use now), the entitlement runs out after `left / inUse` hours.
            let exhausts: Date? = inUse > 0 && left > 0 && period == nil ? now.addingTimeInterval(left / inUse * 3600) : (left <= 0 ? now : nil)
            out.append(
                QuotaRow(
                    org: org, pool: pool, guaranteedGPUs: guaranteed, limitGPUs: limit, inUseGPUs: inUse,
                    borrowedGPUs: max(0, inUse - Double(guaranteed)), lentGPUs: max(0, Double(guaranteed) - inUse), queuedGPUs: queued,
                    gpuHoursUsed: used, gpuHours: hours, creditedGPUHours: credited, reservedGPUHours: reserved,
                    exhaustsAt: exhausts.flatMap { $0 < end ? $0 : nil },
                    periodStart: start, periodEnd: end, decayedGPUHours: decayed, usageShare: poolDecayed > 0 ? max(0, decayed) / poolDecayed : 0,
                    guaranteeShare: poolShare > 0 ? share / poolShare : 0,
                    fairShareFactor: FairShare.factor(usage: max(0, decayed), totalUsage: poolDecayed, share: share, totalShare: poolShare)))
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
