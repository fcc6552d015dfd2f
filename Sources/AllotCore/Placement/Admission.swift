import Foundation

/// An organisation's standing in one pool, as admission sees it (SPEC §4.2). GPU amounts in thousandths.
public struct QuotaEntry: Hashable, Sendable {
    public var guaranteedMilli: Int
    public var limitMilli: Int
    /// What its live attempts hold now.
    public var inUseMilli: Int
    /// GPU-seconds of the period's entitlement neither used nor reserved by its live attempts (what they may
    /// still use of their time limits, up to the period's end).
    public var remainingGPUSeconds: Double
    /// Seconds until the accounting period ends: a reservation never reaches past it, as time after it is
    /// charged to the next period's entitlement.
    public var periodSecondsLeft: Double
    /// The fair-share factor (`FairShare.factor`), 0…1: higher goes first among equal priorities.
    public var fairShare: Double
    /// Its projects' standing (limits they declare, else unbounded), and its users' inside them (keyed
    /// `project/user`): admission checks the user's, then the project's, then the organisation's.
    public var projects: [String: QuotaEntry] = [:]
    public var users: [String: QuotaEntry] = [:]

    public init(
        guaranteedMilli: Int, limitMilli: Int, inUseMilli: Int = 0, remainingGPUSeconds: Double = .infinity, periodSecondsLeft: Double = .infinity,
        fairShare: Double = 1
    ) {
        self.guaranteedMilli = guaranteedMilli
        self.limitMilli = limitMilli
        self.inUseMilli = inUseMilli
        self.remainingGPUSeconds = remainingGPUSeconds
        self.periodSecondsLeft = periodSecondsLeft
        self.fairShare = fairShare
    }

    /// The GPU-seconds `gpuMilli` thousandths reserve for `seconds`, up to the period's end
    /// (`periodSecondsLeft` away: a project's or user's entry goes by its organisation's period).
    static func reservation(gpuMilli: Int, seconds: Int64, periodSecondsLeft: Double) -> Double {
        Double(gpuMilli) / 1000 * Swift.min(Double(seconds), Swift.max(0, periodSecondsLeft))
    }
}

/// Every organisation × pool with an allocation in force. A job whose organisation has none in its pool waits.
public struct QuotaBook: Hashable, Sendable {
    public struct Key: Hashable, Sendable {
        public var org: String
        public var pool: String
        public init(org: String, pool: String) {
            self.org = org
            self.pool = pool
        }
    }
    public var entries: [Key: QuotaEntry]
    public init(_ entries: [Key: QuotaEntry] = [:]) { self.entries = entries }

    public subscript(org: String, pool: String) -> QuotaEntry? {
        get { self.entries[Key(org: org, pool: pool)] }
        set { self.entries[Key(org: org, pool: pool)] = newValue }
    }

    /// Whether `job` may start now holding `gpuMilli` thousandths (default: what it asks; an exclusive job's
    /// are every GPU of the nodes it takes), and whether it would borrow (run beyond its organisation's
    /// guarantee, and so be preemptible). A job starts only if its GPUs × budget time (its time limit, or the
    /// policy's budget time for jobs without one) fit in what neither usage nor running reservations nor jobs
    /// admitted before it have taken.
    public func admit(_ job: PendingJob, gpuMilli: Int? = nil) -> Admission {
        guard let e = self[job.org, job.pool] else { return .waits(.noAllocation(org: job.org, pool: job.pool)) }
        let need = gpuMilli ?? job.totalGPUMilli
        if let project = job.project, let p = e.projects[project] {
            if let owner = job.owner, let u = e.users["\(project)/\(owner)"],
                let why = u.refusal(
                    need: need, seconds: job.budgetSeconds, periodSecondsLeft: e.periodSecondsLeft, who: "\(owner) in \(job.org)/\(project)")
            {
                return .waits(why)
            }
            if let why = p.refusal(need: need, seconds: job.budgetSeconds, periodSecondsLeft: e.periodSecondsLeft, who: "\(job.org)/\(project)") {
                return .waits(why)
            }
        }
        if let why = e.refusal(need: need, seconds: job.budgetSeconds, periodSecondsLeft: e.periodSecondsLeft, who: job.org) { return .waits(why) }
        return .admitted(borrowing: e.inUseMilli + need > e.guaranteedMilli)
    }

    /// Books an admitted job: its GPUs are in use and its budget time reserved (for its organisation, project and
    /// user), so later jobs of the same cycle see what is left after it.
    public mutating func charge(_ job: PendingJob, gpuMilli: Int? = nil) {
        guard var e = self[job.org, job.pool] else { return }
        let need = gpuMilli ?? job.totalGPUMilli
        let left = e.periodSecondsLeft
        e.charge(need, seconds: job.budgetSeconds, periodSecondsLeft: left)
        if let project = job.project {
            e.projects[project]?.charge(need, seconds: job.budgetSeconds, periodSecondsLeft: left)
            if let owner = job.owner { e.users["\(project)/\(owner)"]?.charge(need, seconds: job.budgetSeconds, periodSecondsLeft: left) }
        }
        self[job.org, job.pool] = e
    }
}

extension QuotaEntry {
    /// Why `need` thousandths for `seconds` do not fit this entry (its limit, then what is left of its hours),
    /// `who` naming it in the reason; nil when they fit.
    func refusal(need: Int, seconds: Int64, periodSecondsLeft: Double, who: String) -> WaitReason? {
        if self.inUseMilli + need > self.limitMilli {
            return .quota(org: who, limitGPUs: Double(self.limitMilli) / 1000, inUseGPUs: Double(self.inUseMilli) / 1000)
        }
        let cost = Self.reservation(gpuMilli: need, seconds: seconds, periodSecondsLeft: periodSecondsLeft)
        if need > 0 && (self.remainingGPUSeconds <= 0 || cost > self.remainingGPUSeconds) {
            return .budget(org: who, neededGPUHours: cost / 3600, leftGPUHours: max(0, self.remainingGPUSeconds) / 3600)
        }
        return nil
    }

    mutating func charge(_ need: Int, seconds: Int64, periodSecondsLeft: Double) {
        self.inUseMilli += need
        self.remainingGPUSeconds -= Self.reservation(gpuMilli: need, seconds: seconds, periodSecondsLeft: periodSecondsLeft)
    }
}

/// Admission's answer for one job.
public enum Admission: Hashable, Sendable {
    case admitted(borrowing: Bool)
    case waits(WaitReason)
}

extension PendingJob {
    /// GPU thousandths over all of the job's nodes (an exclusive job's least: it takes every GPU of its nodes; a
    /// MIG job's least, an eighth of a GPU per device, until its devices are chosen).
    public var totalGPUMilli: Int { self.nodes * (self.migProfile != nil ? self.perNode.gpus * 125 : self.perNode.gpuMilli) }

    /// The seconds the budget reserves for the job: its time limit, else the policy's budget time.
    public var budgetSeconds: Int64 { self.timeLimitSeconds ?? self.defaultBudgetSeconds }
}

/// Fair share with decayed history, as Slurm's classic multifactor priority computes it: an organisation's
/// factor is 2^(−U/S), U its share of the pool's decayed usage and S its share of the pool's guarantees. An
/// organisation that used exactly its share gets 0.5, one that used nothing 1, one that used everything while
/// owed a little near 0.
public enum FairShare {
    /// `usage` and `totalUsage` in decayed GPU-hours; `share` and `totalShare` in guaranteed GPUs.
    public static func factor(usage: Double, totalUsage: Double, share: Double, totalShare: Double) -> Double {
        guard usage > 0, totalUsage > 0 else { return 1 }
        guard share > 0, totalShare > 0 else { return 0 }
        return pow(2, -(usage / totalUsage) / (share / totalShare))
    }
}
