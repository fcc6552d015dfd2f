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
                SELECT al.org, al.pool, al.guaranteed_gpus, al.limit_gpus, al.gpu_hours::float8 AS hours, al.projects::text AS projects,
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
            -- for every grant in force now, so that shares are of the whole pool whatever the filter (decayed_gpu_seconds,
            -- migration 0013). Rows older than 40 half-lives weigh under 1e-12 and are left out.
            hl AS (SELECT fair_share_half_life_s::float8 AS h FROM policy_defaults),
            grants_now AS (
                SELECT al.org, al.pool, al.guaranteed_gpus FROM allocations al
                WHERE al.effective_from <= now() AND al.superseded_at IS NULL
                  AND (al.valid_from IS NULL OR current_date BETWEEN al.valid_from AND al.valid_until)
            ),
            decay AS (
                SELECT g.org, g.pool, g.guaranteed_gpus,
                       coalesce((SELECT sum(decayed_gpu_seconds(u.gpu_milli::float8 / 1000, u.started_at, u.ended_at, hl.h))
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
                   coalesce(s.hours, 0), coalesce(s.pool_hours, 0), coalesce(s.guaranteed, 0), coalesce(s.pool_guaranteed, 0), a.projects
            FROM a LEFT JOIN live l ON l.org = a.org AND l.pool = a.pool
                   LEFT JOIN queued q ON q.org = a.org AND q.pool = a.pool
                   LEFT JOIN ledger g ON g.org = a.org AND g.pool = a.pool
                   LEFT JOIN reserved r ON r.org = a.org AND r.pool = a.pool
                   LEFT JOIN adjusted x ON x.org = a.org AND x.pool = a.pool
                   LEFT JOIN shares s ON s.org = a.org AND s.pool = a.pool
            ORDER BY a.org, a.pool
            """)
        var out: [QuotaRow] = []
        var declared: [[ProjectLimit]] = []  // each row's grant's projects, in the order of `out`
        for try await row in rows {
            let (org, pool, guaranteed, limit, inUse, queued, used, hours, credited, start, end, reserved) = try row.decode(
                (String, String, Int, Int, Double, Double, Double, Double, Double, Date, Date, Double).self)
            let c = row.makeRandomAccess()
            let (decayed, poolDecayed, share, poolShare) = (
                try c[12].decode(Double.self), try c[13].decode(Double.self), try c[14].decode(Double.self), try c[15].decode(Double.self)
            )
            declared.append((try? JSONDecoder().decode([ProjectLimit].self, from: Data(try c[16].decode(String.self).utf8))) ?? [])
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
        // The projects' split, once the rows are read: no query runs while another's rows still stream.
        for (i, projects) in declared.enumerated() where !projects.isEmpty {
            out[i].projects = try await Self.projects(
                projects, org: out[i].org, pool: out[i].pool, from: out[i].periodStart, to: out[i].periodEnd, in: tx)
        }
        return out
    }

    /// The split of one organisation × pool by the projects its grant declares, with their users: GPUs held,
    /// GPU-hours used in the period and reserved by live attempts, decayed usage and the fair-share factor within
    /// the organisation (its part of the organisation's decayed usage against its part of the shares).
    static func projects(
        _ declared: [ProjectLimit], org: String, pool: String, from start: Date, to end: Date, in tx: Transaction
    ) async throws
        -> [ProjectQuota]
    {
        var figures: [String: [String: (inUse: Double, used: Double, reserved: Double, decayed: Double)]] = [:]
        let rows = try await tx.query(
            """
            WITH hl AS (SELECT fair_share_half_life_s::float8 AS h, budget_time_s FROM policy_defaults),
            live AS (
                SELECT coalesce(j.project, '') AS project, j.owner, sum(c.milli)::float8 / 1000 AS gpus,
                       greatest(0, coalesce(j.time_limit_s, hl.budget_time_s) - extract(epoch FROM now() - coalesce(t.started_at, now())))::float8 AS secs
                FROM gpu_claims c JOIN attempts t ON t.job_id = c.job_id AND t.number = c.attempt JOIN jobs j ON j.id = c.job_id CROSS JOIN hl
                WHERE c.released_at IS NULL AND j.org = \(org) AND j.pool = \(pool)
                GROUP BY j.project, j.owner, t.job_id, t.number, j.time_limit_s, hl.budget_time_s, t.started_at
            ),
            used AS (
                SELECT coalesce(u.project, '') AS project, coalesce(u.owner, '') AS owner,
                       sum(CASE WHEN u.started_at < \(end) AND coalesce(u.ended_at, now()) > \(start) THEN u.gpu_milli::float8 / 1000
                           * extract(epoch FROM least(coalesce(u.ended_at, now()), \(end)) - greatest(u.started_at, \(start)))::float8 ELSE 0 END) AS secs,
                       sum(decayed_gpu_seconds(u.gpu_milli::float8 / 1000, u.started_at, u.ended_at, hl.h)) AS decayed
                FROM usage u CROSS JOIN hl
                WHERE u.org = \(org) AND u.pool = \(pool) AND NOT u.credited
                  AND coalesce(u.ended_at, now()) > least(\(start), now() - make_interval(secs => 40 * hl.h))
                GROUP BY 1, 2
            )
            SELECT project, owner, sum(gpus), 0::float8, sum(gpus * least(secs, greatest(0, extract(epoch FROM \(end) - now()))::float8)), 0::float8
            FROM live GROUP BY 1, 2
            UNION ALL
            SELECT project, owner, 0::float8, secs, 0::float8, decayed FROM used
            """)
        for try await (project, owner, inUse, used, reserved, decayed) in rows.decode((String, String, Double, Double, Double, Double).self) {
            var f = figures[project, default: [:]][owner, default: (0, 0, 0, 0)]
            f.inUse += inUse
            f.used += used / 3600
            f.reserved += reserved / 3600
            f.decayed += decayed / 3600
            figures[project, default: [:]][owner] = f
        }
        let total = { (p: String) in
            figures[p, default: [:]].values.reduce((0.0, 0.0, 0.0, 0.0)) { ($0.0 + $1.inUse, $0.1 + $1.used, $0.2 + $1.reserved, $0.3 + $1.decayed) }
        }
        let orgDecayed = figures.keys.reduce(0.0) { $0 + max(0, total($1).3) }
        let shares = declared.reduce(0.0) { $0 + $1.share }
        return declared.map { p in
            let t = total(p.name)
            let users = p.users.keys.sorted().map { u in
                let f = figures[p.name, default: [:]][u, default: (0, 0, 0, 0)]
                return ProjectQuota.User(
                    name: u, limitGPUs: p.users[u]?.limitGPUs, gpuHours: p.users[u]?.gpuHours, inUseGPUs: f.inUse, gpuHoursUsed: f.used,
                    reservedGPUHours: f.reserved)
            }
            return ProjectQuota(
                name: p.name, limitGPUs: p.limitGPUs, gpuHours: p.gpuHours, share: p.share, inUseGPUs: t.0, gpuHoursUsed: t.1, reservedGPUHours: t.2,
                decayedGPUHours: t.3,
                fairShareFactor: FairShare.factor(usage: max(0, t.3), totalUsage: orgDecayed, share: p.share, totalShare: shares),
                users: users)
        }
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
