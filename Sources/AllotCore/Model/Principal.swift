/// Who a request acts as: the holder of one token.
public struct Principal: Hashable, Sendable, Codable {
    /// The token's name: a person, a service, or `agent:NODE`.
    public var name: String
    public var role: Role
    /// The organisation a member or org-admin belongs to.
    public var org: String?
    /// The node an agent token acts for.
    public var node: String?

    public init(name: String, role: Role, org: String? = nil, node: String? = nil) {
        self.name = name
        self.role = role
        self.org = org
        self.node = node
    }

    /// The scheduler's own identity in the audit log.
    public static let scheduler = Principal(name: "allotd", role: .operator)

    /// Sees every organisation's jobs and usage.
    public var seesAllOrganizations: Bool { self.role == .operator || self.role == .auditor }
}

/// Whose data a request may see and change: what the authorization decision grants, and what the stores filter
/// by. Roles never reach the stores; scopes do.
public enum Scope: Hashable, Sendable {
    /// Every organisation's (operators, auditors).
    case all
    /// One organisation's (its members and org-admins).
    case organization(String)
    /// One node's (its agent).
    case node(String)

    /// The organisation a scoped request is limited to; nil for `all`.
    public var organization: String? {
        if case .organization(let org) = self { return org }
        return nil
    }

    /// Whether any organisation's data is within it (an agent's node scope holds none): a store answers a scope
    /// without it with nothing, whatever route asked.
    public var seesOrganizations: Bool {
        if case .node = self { return false }
        return true
    }

    public func includes(org: String) -> Bool {
        switch self {
        case .all: true
        case .organization(let own): own == org
        case .node: false
        }
    }
}

extension Principal {
    /// The widest scope the token's role allows: everything for operators and auditors, the organisation for its
    /// members and org-admins, the node for its agent.
    public var scope: Scope {
        switch self.role {
        case .operator, .auditor, .scraper: .all
        case .member, .orgAdmin: .organization(self.org ?? "")
        case .agent: .node(self.node ?? "")
        }
    }

    /// How the audit log names it: `role:org/name`, or `role:name` for a principal of no organisation.
    public var auditName: String { "\(self.role.rawValue):\(self.org.map { "\($0)/" } ?? "")\(self.name)" }
}
