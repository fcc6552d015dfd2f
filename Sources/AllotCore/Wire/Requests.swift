public import Foundation

/// Bodies of the operator endpoints, shared by allotd and the CLI.

public struct AddNodeRequest: Codable, Sendable {
    public var name: String
    public var pool: String
    public var block: String?
    /// Where allotd will reach the node's agent; nil fixes it at the agent's first registration.
    public var agentURL: String?
    public init(name: String, pool: String, block: String?, agentURL: String? = nil) {
        self.name = name
        self.pool = pool
        self.block = block
        self.agentURL = agentURL
    }
}

/// A node's credentials, shown once, at enrolment: the agent's bearer token towards allotd and the key with
/// which allotd signs its requests to the agent (derived from allotd's secret; the database keeps neither).
public struct AddNodeResponse: Codable, Sendable {
    public var node: String
    public var token: String
    public var nodeKey: String
    public init(node: String, token: String, nodeKey: String) {
        self.node = node
        self.token = token
        self.nodeKey = nodeKey
    }
}

/// `POST /v1/nodes/NAME/enrol`: a new enrolment for a node (new credentials; the old ones stop working).
public struct EnrolRequest: Codable, Sendable {
    public var agentURL: String?
    public init(agentURL: String?) { self.agentURL = agentURL }
}

public struct CreateTokenRequest: Codable, Sendable {
    public var name: String
    public var role: Role
    public var org: String?
    /// Seconds it lives; nil takes Policies/ `defaults.tokenLifetime`.
    public var expiresInSeconds: Int64?
    public init(name: String, role: Role, org: String?, expiresInSeconds: Int64? = nil) {
        self.name = name
        self.role = role
        self.org = org
        self.expiresInSeconds = expiresInSeconds
    }
}

public struct CreateTokenResponse: Codable, Sendable {
    public var id: Int64
    public var name: String
    public var token: String
    public var expiresAt: Date?
    public init(id: Int64, name: String, token: String, expiresAt: Date?) {
        self.id = id
        self.name = name
        self.token = token
        self.expiresAt = expiresAt
    }
}

/// A token as `allot tokens list` shows it (never its secret).
public struct TokenView: Codable, Sendable, Hashable {
    public var id: Int64
    public var name: String
    public var role: Role
    public var org: String?
    public var node: String?
    public var createdAt: Date
    public var createdBy: String?
    public var expiresAt: Date?
    public var lastUsedAt: Date?
    public var revokedAt: Date?
    public init(
        id: Int64, name: String, role: Role, org: String?, node: String?, createdAt: Date, createdBy: String?, expiresAt: Date?, lastUsedAt: Date?,
        revokedAt: Date?
    ) {
        self.id = id
        self.name = name
        self.role = role
        self.org = org
        self.node = node
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.expiresAt = expiresAt
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
    }
}

public struct AuditVerification: Codable, Sendable {
    public var checked: Int
    public var intact: Bool
    public var firstBrokenID: Int64?
    /// What is wrong, in words (the first 20).
    public var problems: [String]
    public var checkpointsChecked: Int
    public init(checked: Int, intact: Bool, firstBrokenID: Int64?, problems: [String] = [], checkpointsChecked: Int = 0) {
        self.checked = checked
        self.intact = intact
        self.firstBrokenID = firstBrokenID
        self.problems = problems
        self.checkpointsChecked = checkpointsChecked
    }
}

/// `POST /v1/audit/verify`: check the log against these checkpoint lines too (from a file kept elsewhere).
/// A correction to the ledger (`POST /v1/adjustments`): GPU-seconds charged (or, negative, given back) to an
/// organisation × pool at a moment, with the reason. It is a row of its own; nothing is edited.
public struct AdjustUsageRequest: Codable, Sendable {
    public var org: String
    public var pool: String
    public var gpuSeconds: Int64
    public var appliesAt: Date
    public var reason: String
    public var project: String?
    public var user: String?
    public init(org: String, pool: String, gpuSeconds: Int64, appliesAt: Date, reason: String, project: String? = nil, user: String? = nil) {
        self.org = org
        self.pool = pool
        self.gpuSeconds = gpuSeconds
        self.appliesAt = appliesAt
        self.reason = reason
        self.project = project
        self.user = user
    }
}

public struct AuditVerifyRequest: Codable, Sendable {
    public var checkpoints: [String]
    public init(checkpoints: [String]) { self.checkpoints = checkpoints }
}

/// One difference between `Policies/` and the database, as `allot policy apply` prints it.
public struct PolicyChange: Codable, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Codable, Sendable { case added, changed, removed, kept }
    public var kind: Kind
    public var what: String
    public var detail: String?
    public init(kind: Kind, what: String, detail: String? = nil) {
        self.kind = kind
        self.what = what
        self.detail = detail
    }
    public var description: String { "\(self.kind.rawValue) \(self.what)\(self.detail.map { ": \($0)" } ?? "")" }
}

/// One audit record as `allot audit` prints it.
public struct AuditRecord: Codable, Sendable, Hashable {
    public var id: Int64
    public var at: Date
    public var actor: String
    public var action: String
    public var target: String
    public var outcome: String
    public var detail: String?
    public init(id: Int64, at: Date, actor: String, action: String, target: String, outcome: String, detail: String?) {
        self.id = id
        self.at = at
        self.actor = actor
        self.action = action
        self.target = target
        self.outcome = outcome
        self.detail = detail
    }
}

/// `PATCH /v1/jobs/ID` (`allot update`): what to change of a queued job; what is left out stays.
public struct JobUpdate: Hashable, Codable, Sendable {
    public var name: String?
    public var timeLimitSeconds: Int64?
    public var priorityClass: String?
    public init(name: String? = nil, timeLimitSeconds: Int64? = nil, priorityClass: String? = nil) {
        self.name = name
        self.timeLimitSeconds = timeLimitSeconds
        self.priorityClass = priorityClass
    }
}
