public import Foundation

/// An organisation's statement for one calendar month, computed from the ledger alone (`usage` and
/// `usage_adjustments`): what was charged, credited and adjusted, grouped `by` pool, project, user or grant.
/// A past month's statement never changes: the ledger's closed rows cannot, and no grant is read.
public struct Statement: Codable, Hashable, Sendable {
    public enum Grouping: String, Codable, Sendable, CaseIterable {
        case pool, project, user, grant
    }

    public struct Line: Codable, Hashable, Sendable {
        /// The pool, project, user or grant (`pool vN`, or `-` where none applied) the line is for.
        public var key: String
        public var chargedGPUHours: Double
        public var creditedGPUHours: Double
        public var adjustedGPUHours: Double
        /// Charged plus adjusted: what counts against the entitlement.
        public var netGPUHours: Double
        public init(key: String, chargedGPUHours: Double, creditedGPUHours: Double, adjustedGPUHours: Double) {
            self.key = key
            self.chargedGPUHours = chargedGPUHours
            self.creditedGPUHours = creditedGPUHours
            self.adjustedGPUHours = adjustedGPUHours
            self.netGPUHours = chargedGPUHours + adjustedGPUHours
        }
    }

    /// GPU time the infrastructure lost and gave back: what, when, why.
    public struct Credit: Codable, Hashable, Sendable {
        public var jobID: Int64
        public var attempt: Int
        public var rank: Int?
        public var node: String?
        public var pool: String
        public var from: Date
        public var to: Date
        public var gpuHours: Double
        public var cause: String
        public init(jobID: Int64, attempt: Int, rank: Int?, node: String?, pool: String, from: Date, to: Date, gpuHours: Double, cause: String) {
            self.jobID = jobID
            self.attempt = attempt
            self.rank = rank
            self.node = node
            self.pool = pool
            self.from = from
            self.to = to
            self.gpuHours = gpuHours
            self.cause = cause
        }
    }

    /// A correction: a row of its own, never an edit.
    public struct Adjustment: Codable, Hashable, Sendable {
        public var id: Int64
        public var pool: String
        public var gpuHours: Double
        public var appliesAt: Date
        public var actor: String
        public var reason: String
        public init(id: Int64, pool: String, gpuHours: Double, appliesAt: Date, actor: String, reason: String) {
            self.id = id
            self.pool = pool
            self.gpuHours = gpuHours
            self.appliesAt = appliesAt
            self.actor = actor
            self.reason = reason
        }
    }

    /// An organisation asked for its guarantee back: borrowed work was stopped so that its job could start within
    /// the reclaim deadline. As of the statement's end: satisfied by then or not, kept or missed.
    public struct Reclaim: Codable, Hashable, Sendable {
        public enum Outcome: String, Codable, Sendable { case kept, missed, pending }
        public var jobID: Int64
        public var pool: String
        public var requestedGPUs: Double
        public var victims: [Int64]
        public var requestedAt: Date
        public var deadlineAt: Date
        public var satisfiedAt: Date?
        public var outcome: Outcome
        public init(
            jobID: Int64, pool: String, requestedGPUs: Double, victims: [Int64], requestedAt: Date, deadlineAt: Date, satisfiedAt: Date?,
            outcome: Outcome
        ) {
            self.jobID = jobID
            self.pool = pool
            self.requestedGPUs = requestedGPUs
            self.victims = victims
            self.requestedAt = requestedAt
            self.deadlineAt = deadlineAt
            self.satisfiedAt = satisfiedAt
            self.outcome = outcome
        }
    }

    public var org: String
    /// The month, `YYYY-MM` (UTC).
    public var period: String
    public var periodStart: Date
    public var periodEnd: Date
    public var by: Grouping
    /// Whether the month is over: a final statement never changes; the current month's grows until its end.
    public var final: Bool
    public var lines: [Line]
    public var credits: [Credit]
    public var adjustments: [Adjustment]
    /// Reclaims the organisation asked for in the month.
    public var reclaims: [Reclaim]
    public var total: Line
    /// SHA-256 of the statement's canonical JSON (everything above): print it with the statement, and a later
    /// change is visible.
    public var digest: String

    public init(
        org: String, period: String, periodStart: Date, periodEnd: Date, by: Grouping, final: Bool, lines: [Line], credits: [Credit],
        adjustments: [Adjustment], reclaims: [Reclaim] = [], total: Line, digest: String = ""
    ) {
        self.org = org
        self.period = period
        self.periodStart = periodStart
        self.periodEnd = periodEnd
        self.by = by
        self.final = final
        self.lines = lines
        self.credits = credits
        self.adjustments = adjustments
        self.reclaims = reclaims
        self.total = total
        self.digest = digest
    }

    /// The canonical JSON the digest is taken over: sorted keys, ISO 8601 times, the digest itself left empty.
    public var canonicalJSON: Data {
        var copy = self
        copy.digest = ""
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return (try? encoder.encode(copy)) ?? Data()
    }
}
