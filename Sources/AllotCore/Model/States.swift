/// The kind of work a job is: a batch training run or a long-running inference service.
public enum JobKind: String, Codable, Sendable, CaseIterable {
    case training, inference
}

/// A job's lifecycle (SPEC §3): queued → placed → starting → running → succeeded | failed | cancelled.
public enum JobState: String, Codable, Sendable, CaseIterable {
    case queued, placed, starting, running, succeeded, failed, cancelled

    /// No further change will happen to a job in this state.
    public var isTerminal: Bool { self == .succeeded || self == .failed || self == .cancelled }
}

/// One try of a job. The last four endings are the infrastructure's, not the job's: the job is requeued.
public enum AttemptState: String, Codable, Sendable, CaseIterable {
    case placed, starting, running, succeeded, failed, cancelled
    case lost, preempted, drained
    case dispatchFailed = "dispatch_failed"

    /// A live attempt holds GPUs; every other state has released them.
    public var isLive: Bool { self == .placed || self == .starting || self == .running }

    /// Endings that are not the job's fault: the job goes back to the queue while attempts remain.
    public var requeuesJob: Bool {
        self == .lost || self == .preempted || self == .drained || self == .dispatchFailed
    }

    /// Endings whose GPU time the infrastructure lost (a lost node, an operator's drain deadline, an agent that
    /// never took the launch): recorded in the ledger and credited back. A preempted borrower pays for what it used.
    public var isCreditedToOrganization: Bool { self == .lost || self == .drained || self == .dispatchFailed }
}

/// One rank of an attempt on its node: not started yet, running, exited with a status, or gone without one
/// (its agent restarted and the process is no more).
public enum RankState: String, Codable, Sendable, CaseIterable {
    case pending, running, exited, vanished

    /// Pending or running: the rank still holds its node.
    public var isActive: Bool { self == .pending || self == .running }
}

/// Time a node could not take work: planned (drained, maintenance) is not lost capacity; lost is.
public enum DowntimeKind: String, Codable, Sendable, CaseIterable {
    case planned, lost
}

/// A node's administrative and liveness state (SPEC §3).
public enum NodeState: String, Codable, Sendable, CaseIterable {
    case ready, cordoned, draining, drained, maintenance, lost

    /// Only a ready node takes new work.
    public var acceptsWork: Bool { self == .ready }
}

/// A GPU's health grade (SPEC §3): suspect GPUs stay in service, quarantined ones take no work.
public enum GPUHealth: String, Codable, Sendable, CaseIterable {
    case healthy, suspect, quarantined

    public var isSchedulable: Bool { self != .quarantined }
}

/// What a token may do (SPEC §3). Agent tokens are bound to one node.
public enum Role: String, Codable, Sendable, CaseIterable {
    case member
    case orgAdmin = "org-admin"
    case `operator`
    case auditor
    case agent
    /// Reads `/metrics` and nothing else (Prometheus' token).
    case scraper
}
