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
