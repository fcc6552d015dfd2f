import Foundation

/// A named set of nodes, usually of one GPU model; allocations are granted per pool.
public struct Pool: Hashable, Codable, Sendable {
    public var name: String
    public var gpuModel: String?
    /// Organisations allowed to use the pool; empty means every organisation.
    public var restrictedTo: [String]
    /// Shares of one GPU go only to jobs of one organisation (`isolateSharedGPUs`; on by default where the pool is
    /// restricted, as a defence ministry's pool would be).
    public var isolateSharedGPUs: Bool
    public init(name: String, gpuModel: String? = nil, restrictedTo: [String] = [], isolateSharedGPUs: Bool? = nil) {
        self.name = name
        self.gpuModel = gpuModel
        self.restrictedTo = restrictedTo
        self.isolateSharedGPUs = isolateSharedGPUs ?? !restrictedTo.isEmpty
    }

    enum CodingKeys: String, CodingKey { case name, gpuModel, restrictedTo, isolateSharedGPUs }

    /// `isolateSharedGPUs` may be left out: its default follows `restrictedTo`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try c.decode(String.self, forKey: .name), gpuModel: try c.decodeIfPresent(String.self, forKey: .gpuModel),
            restrictedTo: try c.decodeIfPresent([String].self, forKey: .restrictedTo) ?? [],
            isolateSharedGPUs: try c.decodeIfPresent(Bool.self, forKey: .isolateSharedGPUs))
    }
}

/// The state's grant to one organisation in one pool for a validity window (or per calendar month).
public struct Allocation: Hashable, Codable, Sendable {
    public var pool: String
    public var guaranteedGPUs: Int
    public var limitGPUs: Int
    public var gpuHours: Int64
    /// Days as `YYYY-MM-DD`; both nil means the entitlement renews every calendar month.
    public var validFrom: String?
    public var validUntil: String?
    /// The grant split further inside the organisation (Slurm's sub-accounts, KAI's hierarchical queues).
    public var projects: [ProjectLimit]
    public init(
        pool: String, guaranteedGPUs: Int, limitGPUs: Int, gpuHours: Int64, validFrom: String? = nil, validUntil: String? = nil,
        projects: [ProjectLimit] = []
    ) {
        self.pool = pool
        self.guaranteedGPUs = guaranteedGPUs
        self.limitGPUs = limitGPUs
        self.gpuHours = gpuHours
        self.validFrom = validFrom
        self.validUntil = validUntil
        self.projects = projects
    }

    enum CodingKeys: String, CodingKey { case pool, guaranteedGPUs, limitGPUs, gpuHours, validFrom, validUntil, projects }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.pool = try c.decode(String.self, forKey: .pool)
        self.guaranteedGPUs = try c.decode(Int.self, forKey: .guaranteedGPUs)
        self.limitGPUs = try c.decode(Int.self, forKey: .limitGPUs)
        self.gpuHours = try c.decode(Int64.self, forKey: .gpuHours)
        self.validFrom = try c.decodeIfPresent(String.self, forKey: .validFrom)
        self.validUntil = try c.decodeIfPresent(String.self, forKey: .validUntil)
        self.projects = try c.decodeIfPresent([ProjectLimit].self, forKey: .projects) ?? []
    }
}

/// A project's part of its organisation's grant in one pool: the most GPUs it may hold and GPU-hours it may use
/// in the grant's period (nil: only the organisation's apply), its fair-share weight among the organisation's
/// projects, and optional limits per user.
public struct ProjectLimit: Hashable, Codable, Sendable {
    public var name: String
    public var limitGPUs: Int?
    public var gpuHours: Int64?
    public var share: Double
    public var users: [String: UserLimit]
    public init(name: String, limitGPUs: Int? = nil, gpuHours: Int64? = nil, share: Double = 1, users: [String: UserLimit] = [:]) {
        self.name = name
        self.limitGPUs = limitGPUs
        self.gpuHours = gpuHours
        self.share = share
        self.users = users
    }

    enum CodingKeys: String, CodingKey { case name, limitGPUs, gpuHours, share, users }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.name = try c.decode(String.self, forKey: .name)
        self.limitGPUs = try c.decodeIfPresent(Int.self, forKey: .limitGPUs)
        self.gpuHours = try c.decodeIfPresent(Int64.self, forKey: .gpuHours)
        self.share = try c.decodeIfPresent(Double.self, forKey: .share) ?? 1
        self.users = try c.decodeIfPresent([String: UserLimit].self, forKey: .users) ?? [:]
    }
}

/// One user's limits inside a project (nil: the project's apply).
public struct UserLimit: Hashable, Codable, Sendable {
    public var limitGPUs: Int?
    public var gpuHours: Int64?
    public init(limitGPUs: Int? = nil, gpuHours: Int64? = nil) {
        self.limitGPUs = limitGPUs
        self.gpuHours = gpuHours
    }
}

public struct Organization: Hashable, Codable, Sendable {
    public var name: String
    public var allocations: [Allocation]
    /// The Unix account its jobs run as on the nodes (a name, or `uid:gid`); nil runs them as `nobody`.
    public var account: String?
    /// Accounts for some of its users, by token name, instead of `account`.
    public var userAccounts: [String: String]
    public init(name: String, allocations: [Allocation] = [], account: String? = nil, userAccounts: [String: String] = [:]) {
        self.name = name
        self.allocations = allocations
        self.account = account
        self.userAccounts = userAccounts
    }

    enum CodingKeys: String, CodingKey { case name, allocations, account, userAccounts }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.name = try c.decode(String.self, forKey: .name)
        self.allocations = try c.decodeIfPresent([Allocation].self, forKey: .allocations) ?? []
        self.account = try c.decodeIfPresent(String.self, forKey: .account)
        self.userAccounts = try c.decodeIfPresent([String: String].self, forKey: .userAccounts) ?? [:]
    }
}

/// Orders the queue and says who may stop whom (SPEC §3).
public struct PriorityClass: Hashable, Codable, Sendable {
    public var name: String
    public var value: Int
    public var preemptible: Bool
    public var preempts: Bool
    public var maxTimeSeconds: Int64?
    /// The organisations whose jobs may use the class; empty: every organisation.
    public var organizations: [String]
    /// The roles that may submit with it; empty: every role that submits.
    public var roles: [Role]
    public init(
        name: String, value: Int, preemptible: Bool = false, preempts: Bool = false, maxTimeSeconds: Int64? = nil, organizations: [String] = [],
        roles: [Role] = []
    ) {
        self.name = name
        self.value = value
        self.preemptible = preemptible
        self.preempts = preempts
        self.maxTimeSeconds = maxTimeSeconds
        self.organizations = organizations
        self.roles = roles
    }

    enum CodingKeys: String, CodingKey { case name, value, preemptible, preempts, maxTimeSeconds, organizations, roles }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.name = try c.decode(String.self, forKey: .name)
        self.value = try c.decode(Int.self, forKey: .value)
        self.preemptible = try c.decodeIfPresent(Bool.self, forKey: .preemptible) ?? false
        self.preempts = try c.decodeIfPresent(Bool.self, forKey: .preempts) ?? false
        self.maxTimeSeconds = try c.decodeIfPresent(Int64.self, forKey: .maxTimeSeconds)
        self.organizations = try c.decodeIfPresent([String].self, forKey: .organizations) ?? []
        self.roles = try c.decodeIfPresent([Role].self, forKey: .roles) ?? []
    }

    /// Whether a principal of `role` may submit a job of `org` with this class.
    public func allows(org: String, role: Role) -> Bool {
        (self.organizations.isEmpty || self.organizations.contains(org)) && (self.roles.isEmpty || self.roles.contains(role))
    }
}

/// Cluster-wide defaults from `Policies/`.
public struct PolicyDefaults: Hashable, Codable, Sendable {
    public var priorityClass: String?
    /// Where a job that names no pool goes (Slurm's default partition); nil: the organisation's only pool.
    public var pool: String?
    public var gracePeriodSeconds: Int
    public var reclaimDeadlineSeconds: Int
    public var heartbeatTimeoutSeconds: Int
    /// How long a token lives when its maker gives no expiry, and the longest it may live.
    public var tokenLifetimeSeconds: Int64
    public var tokenMaxLifetimeSeconds: Int64
    /// What admission reserves of the budget for a job without a time limit (its GPUs × this).
    public var budgetTimeSeconds: Int64
    /// Usage this long ago counts half in fair share.
    public var fairShareHalfLifeSeconds: Int64
    /// How many attempts defragmentation may move per pool in an hour (0: never).
    public var defragmentMovesPerHour: Int
    /// How long an attempt must have run before defragmentation may move it.
    public var defragmentMinimumRuntimeSeconds: Int64
    /// An inference replica restarts at most this many times within the window, then it is left down.
    public var replicaRestartLimit: Int = 5
    public var replicaRestartWindowSeconds: Int = 600
    public init(
        priorityClass: String? = nil, gracePeriodSeconds: Int = 60, reclaimDeadlineSeconds: Int = 300, heartbeatTimeoutSeconds: Int = 30,
        tokenLifetimeSeconds: Int64 = 90 * 86400, tokenMaxLifetimeSeconds: Int64 = 365 * 86400, budgetTimeSeconds: Int64 = 86400,
        fairShareHalfLifeSeconds: Int64 = 7 * 86400, pool: String? = nil, defragmentMovesPerHour: Int = 4,
        defragmentMinimumRuntimeSeconds: Int64 = 600
    ) {
        self.defragmentMovesPerHour = defragmentMovesPerHour
        self.defragmentMinimumRuntimeSeconds = defragmentMinimumRuntimeSeconds
        self.pool = pool
        self.priorityClass = priorityClass
        self.gracePeriodSeconds = gracePeriodSeconds
        self.reclaimDeadlineSeconds = reclaimDeadlineSeconds
        self.heartbeatTimeoutSeconds = heartbeatTimeoutSeconds
        self.tokenLifetimeSeconds = tokenLifetimeSeconds
        self.tokenMaxLifetimeSeconds = tokenMaxLifetimeSeconds
        self.budgetTimeSeconds = budgetTimeSeconds
        self.fairShareHalfLifeSeconds = fairShareHalfLifeSeconds
    }

    enum CodingKeys: String, CodingKey {
        case priorityClass, pool, gracePeriodSeconds, reclaimDeadlineSeconds, heartbeatTimeoutSeconds, tokenLifetimeSeconds, tokenMaxLifetimeSeconds,
            budgetTimeSeconds, fairShareHalfLifeSeconds, defragmentMovesPerHour, defragmentMinimumRuntimeSeconds, replicaRestartLimit,
            replicaRestartWindowSeconds
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = PolicyDefaults()
        self.priorityClass = try c.decodeIfPresent(String.self, forKey: .priorityClass)
        self.gracePeriodSeconds = try c.decodeIfPresent(Int.self, forKey: .gracePeriodSeconds) ?? d.gracePeriodSeconds
        self.reclaimDeadlineSeconds = try c.decodeIfPresent(Int.self, forKey: .reclaimDeadlineSeconds) ?? d.reclaimDeadlineSeconds
        self.heartbeatTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .heartbeatTimeoutSeconds) ?? d.heartbeatTimeoutSeconds
        self.tokenLifetimeSeconds = try c.decodeIfPresent(Int64.self, forKey: .tokenLifetimeSeconds) ?? d.tokenLifetimeSeconds
        self.tokenMaxLifetimeSeconds = try c.decodeIfPresent(Int64.self, forKey: .tokenMaxLifetimeSeconds) ?? d.tokenMaxLifetimeSeconds
        self.budgetTimeSeconds = try c.decodeIfPresent(Int64.self, forKey: .budgetTimeSeconds) ?? d.budgetTimeSeconds
        self.fairShareHalfLifeSeconds = try c.decodeIfPresent(Int64.self, forKey: .fairShareHalfLifeSeconds) ?? d.fairShareHalfLifeSeconds
        self.defragmentMovesPerHour = try c.decodeIfPresent(Int.self, forKey: .defragmentMovesPerHour) ?? d.defragmentMovesPerHour
        self.defragmentMinimumRuntimeSeconds =
            try c.decodeIfPresent(Int64.self, forKey: .defragmentMinimumRuntimeSeconds) ?? d.defragmentMinimumRuntimeSeconds
        self.replicaRestartLimit = try c.decodeIfPresent(Int.self, forKey: .replicaRestartLimit) ?? d.replicaRestartLimit
        self.replicaRestartWindowSeconds = try c.decodeIfPresent(Int.self, forKey: .replicaRestartWindowSeconds) ?? d.replicaRestartWindowSeconds
    }
}

/// Everything `Policies/` declares, merged over all its files.
public struct Policy: Hashable, Codable, Sendable {
    public var pools: [Pool]
    public var organizations: [Organization]
    public var priorityClasses: [PriorityClass]
    public var defaults: PolicyDefaults
    public init(pools: [Pool] = [], organizations: [Organization] = [], priorityClasses: [PriorityClass] = [], defaults: PolicyDefaults = .init()) {
        self.pools = pools
        self.organizations = organizations
        self.priorityClasses = priorityClasses
        self.defaults = defaults
    }
}
