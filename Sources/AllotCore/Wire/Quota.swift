public import Foundation

/// One organisation × pool row of `allot quota` (SPEC §5 keys).
public struct QuotaRow: Codable, Hashable, Sendable {
    public var org: String
    public var pool: String
    public var guaranteedGPUs: Int
    public var limitGPUs: Int
    /// GPUs its live attempts hold now (fractions count their share).
    public var inUseGPUs: Double
    /// In use beyond the guarantee: capacity lent by others.
    public var borrowedGPUs: Double
    /// Guaranteed GPUs it does not use, which others may borrow.
    public var lentGPUs: Double
    /// GPUs its queued jobs ask for.
    public var queuedGPUs: Double
    public var gpuHoursUsed: Double
    /// The entitlement for the period.
    public var gpuHours: Double
    /// GPU-hours lost to the infrastructure and given back.
    public var creditedGPUHours: Double
    /// GPU-hours its live attempts may still use of their time limits (or the policy's budget time) within the
    /// period: held back from admission until they end.
    public var reservedGPUHours: Double
    /// Fair share: GPU-hours used, each decayed by its age with the policy's half-life (not by period).
    public var decayedGPUHours: Double
    /// This organisation's part of the pool's decayed usage (0…1), against its part of the pool's guarantees.
    public var usageShare: Double
    public var guaranteeShare: Double
    /// 2^(−usageShare ÷ guaranteeShare): 1 for no use, 0.5 for exactly its share; higher goes first.
    public var fairShareFactor: Double
    /// The split by the projects the grant declares (empty when it declares none).
    public var projects: [ProjectQuota]
    /// When the entitlement runs out at the current burn rate; nil when not in sight.
    public var exhaustsAt: Date?
    /// The accounting period: the allocation's window, or the calendar month.
    public var periodStart: Date
    public var periodEnd: Date

    public init(
        org: String, pool: String, guaranteedGPUs: Int, limitGPUs: Int, inUseGPUs: Double, borrowedGPUs: Double, lentGPUs: Double,
        queuedGPUs: Double, gpuHoursUsed: Double, gpuHours: Double, creditedGPUHours: Double, reservedGPUHours: Double = 0, exhaustsAt: Date?,
        periodStart: Date, periodEnd: Date, decayedGPUHours: Double = 0, usageShare: Double = 0, guaranteeShare: Double = 0,
        fairShareFactor: Double = 1, projects: [ProjectQuota] = []
    ) {
        self.org = org
        self.pool = pool
        self.guaranteedGPUs = guaranteedGPUs
        self.limitGPUs = limitGPUs
        self.inUseGPUs = inUseGPUs
        self.borrowedGPUs = borrowedGPUs
        self.lentGPUs = lentGPUs
        self.queuedGPUs = queuedGPUs
        self.gpuHoursUsed = gpuHoursUsed
        self.gpuHours = gpuHours
        self.creditedGPUHours = creditedGPUHours
        self.reservedGPUHours = reservedGPUHours
        self.decayedGPUHours = decayedGPUHours
        self.usageShare = usageShare
        self.guaranteeShare = guaranteeShare
        self.fairShareFactor = fairShareFactor
        self.projects = projects
        self.exhaustsAt = exhaustsAt
        self.periodStart = periodStart
        self.periodEnd = periodEnd
    }
}

/// One project's part of an organisation × pool row: its limits (nil: the organisation's apply), what it holds,
/// used and reserved, and its fair share within the organisation.
public struct ProjectQuota: Codable, Hashable, Sendable {
    public struct User: Codable, Hashable, Sendable {
        public var name: String
        public var limitGPUs: Int?
        public var gpuHours: Int64?
        public var inUseGPUs: Double
        public var gpuHoursUsed: Double
        public var reservedGPUHours: Double
        public init(name: String, limitGPUs: Int?, gpuHours: Int64?, inUseGPUs: Double, gpuHoursUsed: Double, reservedGPUHours: Double) {
            self.name = name
            self.limitGPUs = limitGPUs
            self.gpuHours = gpuHours
            self.inUseGPUs = inUseGPUs
            self.gpuHoursUsed = gpuHoursUsed
            self.reservedGPUHours = reservedGPUHours
        }
    }
    public var name: String
    public var limitGPUs: Int?
    public var gpuHours: Int64?
    public var share: Double
    public var inUseGPUs: Double
    public var gpuHoursUsed: Double
    public var reservedGPUHours: Double
    public var decayedGPUHours: Double
    public var fairShareFactor: Double
    /// Users with limits of their own.
    public var users: [User]
    public init(
        name: String, limitGPUs: Int?, gpuHours: Int64?, share: Double, inUseGPUs: Double, gpuHoursUsed: Double, reservedGPUHours: Double,
        decayedGPUHours: Double, fairShareFactor: Double, users: [User]
    ) {
        self.name = name
        self.limitGPUs = limitGPUs
        self.gpuHours = gpuHours
        self.share = share
        self.inUseGPUs = inUseGPUs
        self.gpuHoursUsed = gpuHoursUsed
        self.reservedGPUHours = reservedGPUHours
        self.decayedGPUHours = decayedGPUHours
        self.fairShareFactor = fairShareFactor
        self.users = users
    }
}
