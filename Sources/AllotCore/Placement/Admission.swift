/// An organisation's standing in one pool, as admission sees it (SPEC §4.2). GPU amounts in thousandths.
public struct QuotaEntry: Hashable, Sendable {
    public var guaranteedMilli: Int
    public var limitMilli: Int
    /// What its live attempts hold now.
    public var inUseMilli: Int
    /// GPU-seconds left of the period's entitlement.
    public var remainingGPUSeconds: Double
    /// Fair share: GPU-hours used this period ÷ guaranteed GPUs; lower goes first among equal priorities.
    public var shareUsed: Double

    public init(guaranteedMilli: Int, limitMilli: Int, inUseMilli: Int = 0, remainingGPUSeconds: Double = .infinity, shareUsed: Double = 0) {
        self.guaranteedMilli = guaranteedMilli
        self.limitMilli = limitMilli
        self.inUseMilli = inUseMilli
        self.remainingGPUSeconds = remainingGPUSeconds
        self.shareUsed = shareUsed
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

    /// Whether `job` may start now, and whether it would borrow (run beyond its organisation's guarantee, and so
    /// be preemptible). A job starts only if its GPUs × time limit fit in what is left of the entitlement; one
    /// without a time limit needs some entitlement left.
    public func admit(_ job: PendingJob) -> Admission {
        guard let e = self[job.org, job.pool] else { return .waits(.noAllocation(org: job.org, pool: job.pool)) }
        let need = job.totalGPUMilli
        if e.inUseMilli + need > e.limitMilli {
            return .waits(.quota(org: job.org, limitGPUs: Double(e.limitMilli) / 1000, inUseGPUs: Double(e.inUseMilli) / 1000))
        }
        let cost = Double(need) / 1000 * Double(job.timeLimitSeconds ?? 0)
        if need > 0 && (e.remainingGPUSeconds <= 0 || cost > e.remainingGPUSeconds) {
            return .waits(.budget(org: job.org, neededGPUHours: cost / 3600, leftGPUHours: max(0, e.remainingGPUSeconds) / 3600))
        }
        return .admitted(borrowing: e.inUseMilli + need > e.guaranteedMilli)
    }

    mutating func charge(_ job: PendingJob) {
        self[job.org, job.pool]?.inUseMilli += job.totalGPUMilli
    }
}

/// Admission's answer for one job.
public enum Admission: Hashable, Sendable {
    case admitted(borrowing: Bool)
    case waits(WaitReason)
}

extension PendingJob {
    /// GPU thousandths over all of the job's nodes.
    public var totalGPUMilli: Int { self.nodes * self.perNode.gpuMilli }
}
