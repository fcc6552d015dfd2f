public import AllotCore
import Crypto
public import Foundation
import PostgresNIO

/// Statements (`allot report`): an organisation's month, from the ledger alone. Reads only.
public struct StatementStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// The statement of `org` for the month `period` (`YYYY-MM`, default: the current one), grouped `by`.
    /// GPU time is clipped to the month; rows still open count to now (the month not over) or to its end. Sums are
    /// exact decimals of GPU-seconds to the millisecond, so the same rows always give the same bytes.
    public func statement(org: String, period: String?, by: Statement.Grouping, at now: Date = Date()) async throws -> Statement {
        let (start, end) = try QuotaStore.month(period, containing: now)
        let name = period ?? Self.monthName(start)
        return try await self.database.read { tx in
            let clock = try await tx.now()
            let until = min(end, clock)
            let key: String
            let adjustmentKey: String
            switch by {
            case .pool: (key, adjustmentKey) = ("u.pool", "x.pool")
            case .project: (key, adjustmentKey) = ("coalesce(u.project, '-')", "coalesce(x.project, '-')")
            case .user: (key, adjustmentKey) = ("coalesce(u.owner, '-')", "coalesce(x.owner, '-')")
            case .grant: (key, adjustmentKey) = ("\(Self.grantLabel) ", "\(Self.grantLabel.replacingOccurrences(of: "u.pool", with: "x.pool"))")
            }
            // Constants chosen above, never input: splicing them in unescaped is safe.
            var lines: [String: (charged: Double, credited: Double, adjusted: Double)] = [:]
            let usage = try await tx.query(
                """
                SELECT \(unescaped: key),
                       coalesce(sum(round(u.gpu_milli::numeric / 1000 * extract(epoch FROM least(coalesce(u.ended_at, \(until)), \(until))
                           - greatest(u.started_at, \(start)::timestamptz)), 3)) FILTER (WHERE NOT u.credited), 0)::float8,
                       coalesce(sum(round(u.gpu_milli::numeric / 1000 * extract(epoch FROM least(coalesce(u.ended_at, \(until)), \(until))
                           - greatest(u.started_at, \(start)::timestamptz)), 3)) FILTER (WHERE u.credited), 0)::float8
                FROM usage u LEFT JOIN allocations al ON al.id = u.allocation_id
                WHERE u.org = \(org) AND u.started_at < \(until) AND coalesce(u.ended_at, \(until)) > \(start)::timestamptz
                GROUP BY 1
                """)
            for try await (k, charged, credited) in usage.decode((String, Double, Double).self) {
                lines[k, default: (0, 0, 0)].charged += charged / 3600
                lines[k, default: (0, 0, 0)].credited += credited / 3600
            }
            let adjusted = try await tx.query(
                """
                SELECT \(unescaped: adjustmentKey), sum(x.gpu_seconds)::float8
                FROM usage_adjustments x LEFT JOIN allocations al ON al.id = x.allocation_id
                WHERE x.org = \(org) AND x.applies_at >= \(start)::timestamptz AND x.applies_at < \(end)::timestamptz
                GROUP BY 1
                """)
            for try await (k, seconds) in adjusted.decode((String, Double).self) { lines[k, default: (0, 0, 0)].adjusted += seconds / 3600 }

            var credits: [Statement.Credit] = []
            let creditRows = try await tx.query(
                """
                SELECT u.job_id, u.attempt, u.rank, u.node, u.pool, greatest(u.started_at, \(start)::timestamptz), least(u.ended_at, \(until)),
                       round(u.gpu_milli::numeric / 1000 * extract(epoch FROM least(u.ended_at, \(until)) - greatest(u.started_at, \(start)::timestamptz)), 3)::float8,
                       u.cause
                FROM usage u
                WHERE u.org = \(org) AND u.credited AND u.started_at < \(until) AND u.ended_at > \(start)::timestamptz
                ORDER BY u.started_at, u.job_id, u.attempt, u.rank NULLS FIRST, u.id
                """)
            for try await (job, attempt, rank, node, pool, from, to, seconds, cause) in creditRows.decode(
                (Int64, Int, Int?, String?, String, Date, Date, Double, String).self)
            {
                credits.append(
                    Statement.Credit(
                        jobID: job, attempt: attempt, rank: rank, node: node, pool: pool, from: from, to: to, gpuHours: seconds / 3600, cause: cause))
            }
            var adjustments: [Statement.Adjustment] = []
            let adjustmentRows = try await tx.query(
                """
                SELECT id, pool, gpu_seconds::float8, applies_at, actor, reason FROM usage_adjustments
                WHERE org = \(org) AND applies_at >= \(start)::timestamptz AND applies_at < \(end)::timestamptz ORDER BY id
                """)
            for try await (id, pool, seconds, at, actor, reason) in adjustmentRows.decode((Int64, String, Double, Date, String, String).self) {
                adjustments.append(Statement.Adjustment(id: id, pool: pool, gpuHours: seconds / 3600, appliesAt: at, actor: actor, reason: reason))
            }
            var reclaims: [Statement.Reclaim] = []
            let reclaimRows = try await tx.query(
                """
                SELECT job_id, pool, requested_gpus, victims, requested_at, deadline_at,
                       CASE WHEN satisfied_at <= \(until) THEN satisfied_at END
                FROM reclaims WHERE org = \(org) AND requested_at >= \(start)::timestamptz AND requested_at < \(until) ORDER BY requested_at, id
                """)
            for try await (job, pool, gpus, victims, requested, deadline, satisfied) in reclaimRows.decode(
                (Int64, String, Double, [Int64], Date, Date, Date?).self)
            {
                reclaims.append(
                    Statement.Reclaim(
                        jobID: job, pool: pool, requestedGPUs: gpus, victims: victims, requestedAt: requested, deadlineAt: deadline,
                        satisfiedAt: satisfied, outcome: Self.outcome(satisfied: satisfied, deadline: deadline, asOf: until)))
            }
            let sorted = lines.keys.sorted().map { k in
                Statement.Line(key: k, chargedGPUHours: lines[k]!.charged, creditedGPUHours: lines[k]!.credited, adjustedGPUHours: lines[k]!.adjusted)
            }
            let total = Statement.Line(
                key: "total", chargedGPUHours: sorted.reduce(0) { $0 + $1.chargedGPUHours },
                creditedGPUHours: sorted.reduce(0) { $0 + $1.creditedGPUHours },
                adjustedGPUHours: sorted.reduce(0) { $0 + $1.adjustedGPUHours })
            var statement = Statement(
                org: org, period: name, periodStart: start, periodEnd: end, by: by, final: end <= clock, lines: sorted, credits: credits,
                adjustments: adjustments, reclaims: reclaims, total: total)
            statement.digest = "sha256:" + SHA256.hash(data: statement.canonicalJSON).map { String(format: "%02x", $0) }.joined()
            return statement
        }
    }

    /// Checkpoints the ledger's open rows (allotd's node monitor does, once a minute); returns how many.
    @discardableResult
    public func checkpoint() async throws -> Int {
        try await self.database.transaction { tx in try await tx.usage.checkpoint() }
    }

    /// Kept when met by its deadline; missed when met later, or not met by a deadline already past; else pending.
    public static func outcome(satisfied: Date?, deadline: Date, asOf: Date) -> Statement.Reclaim.Outcome {
        if let satisfied { return satisfied <= deadline ? .kept : .missed }
        return deadline < asOf ? .missed : .pending
    }

    /// A grant as a statement names it: pool, window (or monthly) and version; `-` where none applied.
    static let grantLabel = """
        coalesce(u.pool || ' ' || coalesce(to_char(al.valid_from, 'YYYY-MM-DD') || '…' || to_char(al.valid_until, 'YYYY-MM-DD'), 'monthly')
                 || ' v' || al.version, '-')
        """

    static func monthName(_ start: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month], from: start)
        return String(format: "%04d-%02d", c.year ?? 0, c.month ?? 0)
    }

    /// Records a correction: a new adjustment row (GPU-seconds, negative gives time back), with who and why,
    /// charged to the grant version in force at `appliesAt`; audited.
    public func adjust(
        org: String, pool: String, gpuSeconds: Int64, appliesAt: Date, reason: String, project: String? = nil, owner: String? = nil,
        by actor: Principal
    ) async throws -> Int64 {
        guard gpuSeconds != 0 else { throw StoreError.invalid(field: "gpuSeconds", message: "must not be 0") }
        guard !reason.trimmingCharacters(in: .whitespaces).isEmpty, reason.count <= 500 else {
            throw StoreError.invalid(field: "reason", message: "is required, at most 500 characters")
        }
        return try await self.database.transaction { tx in
            // A month whose statement is final never changes: a correction applies to the current month or later.
            let (monthStart, _) = try QuotaStore.month(nil, containing: try await tx.now())
            guard appliesAt >= monthStart else {
                throw StoreError.invalid(field: "appliesAt", message: "is in a month already closed: final statements never change")
            }
            guard try await tx.query("SELECT 1 FROM organizations WHERE name = \(org)").decode(Int.self).first() != nil else {
                throw StoreError.invalid(field: "org", message: "unknown organization '\(org.prefix(64))'")
            }
            guard try await tx.query("SELECT 1 FROM pools WHERE name = \(pool)").decode(Int.self).first() != nil else {
                throw StoreError.invalid(field: "pool", message: "unknown pool '\(pool.prefix(64))'")
            }
            let id = try await tx.query(
                """
                INSERT INTO usage_adjustments (org, pool, project, owner, allocation_id, gpu_seconds, applies_at, actor, reason)
                SELECT \(org), \(pool), \(project), \(owner),
                       (SELECT al.id FROM allocations al WHERE al.org = \(org) AND al.pool = \(pool)
                          AND al.effective_from <= \(appliesAt) AND (al.superseded_at IS NULL OR al.superseded_at > \(appliesAt))
                          AND (al.valid_from IS NULL OR \(appliesAt)::timestamptz::date BETWEEN al.valid_from AND al.valid_until)
                        ORDER BY al.valid_from NULLS LAST LIMIT 1),
                       \(gpuSeconds), \(appliesAt), \(actor.name), \(reason)
                RETURNING id
                """
            ).decode(Int64.self).first { _ in true }
            guard let id else { throw StoreError.notFound("organization \(org)") }
            try await tx.audit.append(
                AuditEntry(
                    actor: actor, action: "usage.adjust", target: "usage/\(org)/\(pool)", outcome: "adjustment \(id)",
                    detail: [
                        "gpuSeconds": "\(gpuSeconds)", "appliesAt": "\(appliesAt)", "reason": reason, "project": project ?? "-", "user": owner ?? "-",
                    ]))
            return id
        }
    }
}
