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
