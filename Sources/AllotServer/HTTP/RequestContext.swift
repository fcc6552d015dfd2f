public import AllotCore
import AllotHTTPServer
public import Hummingbird

/// allotd's request context: who the request acts as, and the scope the authorization decision granted.
public struct AllotRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The token's principal; nil on a public route called without one.
    public var principal: Principal?
    /// Whose data the request may reach; nil on a public route called without a token.
    public var scope: Scope?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }

    /// The caller, on a route that needs a token (the access middleware let it through with one).
    func caller() throws -> (principal: Principal, scope: Scope) {
        guard let principal, let scope else { throw APIError.unauthorized }
        return (principal, scope)
    }
}
