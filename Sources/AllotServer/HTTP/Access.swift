public import AllotCore
public import Hummingbird

/// Every route of allotd's HTTP API (SPEC §5). Routes are registered by these cases only, so each has a rule.
public enum Endpoint: String, CaseIterable, Sendable {
    case healthz = "GET /healthz"
    case readyz = "GET /readyz"
    case metrics = "GET /metrics"
    case page = "GET /"
    case login = "POST /login"
    case logout = "POST /logout"
    case quota = "GET /v1/quota"
    case report = "GET /v1/report"
    case adjustUsage = "POST /v1/adjustments"
    case submitJob = "POST /v1/jobs"
    case listJobs = "GET /v1/jobs"
    case showJob = "GET /v1/jobs/:id"
    case cancelJob = "POST /v1/jobs/:id/cancel"
    case holdJob = "POST /v1/jobs/:id/hold"
    case releaseJob = "POST /v1/jobs/:id/release"
    case requeueJob = "POST /v1/jobs/:id/requeue"
    case updateJob = "PATCH /v1/jobs/:id"
    case jobLog = "GET /v1/jobs/:id/log"
    case listNodes = "GET /v1/nodes"
    case addNode = "POST /v1/nodes"
    case showNode = "GET /v1/nodes/:name"
    case cordon = "POST /v1/nodes/:name/cordon"
    case uncordon = "POST /v1/nodes/:name/uncordon"
    case undrain = "POST /v1/nodes/:name/undrain"
    case declareLost = "POST /v1/nodes/:name/lost"
    case enrolNode = "POST /v1/nodes/:name/enrol"
    case restoreGPU = "POST /v1/nodes/:name/gpus/:index/restore"
    case drain = "POST /v1/drains"
    case showDrain = "GET /v1/drains/:id"
    case listMaintenance = "GET /v1/maintenance"
    case addMaintenance = "POST /v1/maintenance"
    case removeMaintenance = "DELETE /v1/maintenance/:id"
    case register = "POST /v1/agents/register"
    case heartbeat = "POST /v1/agents/heartbeat"
    case applyPolicy = "POST /v1/policy"
    case createToken = "POST /v1/tokens"
    case listTokens = "GET /v1/tokens"
    case revokeToken = "POST /v1/tokens/:id/revoke"
    case audit = "GET /v1/audit"
    case verifyAudit = "GET /v1/audit/verify"
    case verifyAuditAgainst = "POST /v1/audit/verify"

    public var method: HTTPRequest.Method {
        let name = self.rawValue.prefix { $0 != " " }
        return HTTPRequest.Method(String(name))!
    }

    /// The path as routes are registered (`/v1/jobs/:id`).
    public var path: String { String(self.rawValue.drop { $0 != " " }.dropFirst()) }

    /// The path as the router reports the route it matched (`/v1/jobs/{id}`).
    var matchedPath: String {
        "/" + self.path.split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(separator: "/")
    }

    /// The endpoint the router matched, by method and matched path.
    static func matching(_ method: HTTPRequest.Method, _ matchedPath: String) -> Endpoint? {
        Self.byRoute["\(method.rawValue) \(matchedPath)"]
    }

    private static let byRoute: [String: Endpoint] = Dictionary(
        uniqueKeysWithValues: Endpoint.allCases.map { ("\($0.method.rawValue) \($0.matchedPath)", $0) })
}

/// Who may call a route, and whose data it then reaches.
public struct AccessRule: Sendable, Hashable {
    /// Whose data the route touches once the role is allowed.
    public enum Tenant: Sendable, Hashable {
        /// Cluster-wide facts (nodes, maintenance): the same for everyone allowed.
        case cluster
        /// Organisations' data: members and org-admins reach their own, operators and auditors every one.
        case organization
        /// A node's own reports: an agent acts for its node only.
        case node
    }

    /// Roles allowed; nil for a public route (no token needed).
    public var roles: Set<Role>?
    public var tenant: Tenant
    /// Answered without a token too (the page's login form), but a token given must still be of `roles`.
    public var anonymous = false
    /// The web page's session cookie stands for a token here (the page's own routes only, so no API call can
    /// be made by a forged cross-site request).
    public var acceptsSession = false

    static let open = AccessRule(roles: nil, tenant: .cluster)
    static func only(_ roles: Role..., tenant: Tenant = .cluster) -> AccessRule { AccessRule(roles: Set(roles), tenant: tenant) }
}

/// The authorization decision, in one place: route → roles allowed → tenant rule. The access middleware asks
/// it before any handler runs; handlers and stores receive the scope it grants, never a role to check.
public enum Access {
    /// People of an organisation, and those who see every organisation.
    static let readers: [Role] = [.member, .orgAdmin, .operator, .auditor]

    public static func rule(_ endpoint: Endpoint) -> AccessRule {
        switch endpoint {
        case .healthz, .readyz, .login, .logout:
            return .open
        case .page:
            // The page is for people; without a session it answers its login form.
            return AccessRule(roles: Set(Self.readers), tenant: .organization, anonymous: true, acceptsSession: true)
        case .metrics:
            return .only(.scraper, .operator, .auditor)
        case .quota, .report, .listJobs, .showJob, .jobLog:
            return AccessRule(roles: Set(Self.readers), tenant: .organization)
        case .submitJob, .cancelJob, .holdJob, .releaseJob, .requeueJob, .updateJob:
            return .only(.member, .orgAdmin, .operator, tenant: .organization)
        case .listNodes, .showNode, .showDrain, .listMaintenance:
            return AccessRule(roles: Set(Self.readers), tenant: .cluster)
        case .addNode, .enrolNode, .cordon, .uncordon, .undrain, .declareLost, .restoreGPU, .drain, .addMaintenance, .removeMaintenance, .applyPolicy,
            .adjustUsage:
            return .only(.operator)
        case .register, .heartbeat:
            return .only(.agent, tenant: .node)
        case .createToken, .listTokens, .revokeToken:
            return .only(.operator, .orgAdmin, tenant: .organization)
        case .audit, .verifyAudit, .verifyAuditAgainst:
            return .only(.operator, .auditor)
        }
    }

    public enum Decision: Sendable, Hashable {
        /// Go ahead, within `scope` (nil on a public route called without a token).
        case allowed(Scope?)
        /// A token is needed and none valid was given.
        case unauthenticated
        case forbidden(String)
    }

    public static func decide(_ endpoint: Endpoint, for principal: Principal?) -> Decision {
        let rule = self.rule(endpoint)
        guard let roles = rule.roles else { return .allowed(principal?.scope) }
        guard let principal else { return rule.anonymous ? .allowed(nil) : .unauthenticated }
        guard roles.contains(principal.role) else {
            let allowed = Role.allCases.filter { roles.contains($0) }.map(\.rawValue).joined(separator: ", ")
            return .forbidden("\(endpoint.rawValue) is for \(allowed) tokens, not \(principal.role.rawValue)")
        }
        return .allowed(principal.scope)
    }
}
