public import Foundation

/// Bodies of the operator endpoints, shared by allotd and the CLI.

public struct AddNodeRequest: Codable, Sendable {
    public var name: String
    public var pool: String
    public var block: String?
    public init(name: String, pool: String, block: String?) {
        self.name = name
        self.pool = pool
        self.block = block
    }
}

public struct AddNodeResponse: Codable, Sendable {
    public var node: String
    public var token: String
    public init(node: String, token: String) {
        self.node = node
        self.token = token
    }
}

public struct CreateTokenRequest: Codable, Sendable {
    public var name: String
    public var role: Role
    public var org: String?
    public init(name: String, role: Role, org: String?) {
        self.name = name
        self.role = role
        self.org = org
    }
}

public struct CreateTokenResponse: Codable, Sendable {
    public var name: String
    public var token: String
    public init(name: String, token: String) {
        self.name = name
        self.token = token
    }
}

public struct AuditVerification: Codable, Sendable {
    public var checked: Int
    public var intact: Bool
    public var firstBrokenID: Int64?
    public init(checked: Int, intact: Bool, firstBrokenID: Int64?) {
        self.checked = checked
        self.intact = intact
        self.firstBrokenID = firstBrokenID
    }
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
