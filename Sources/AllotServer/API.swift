public import AllotStore
public import Hummingbird
public import Logging

/// The HTTP API of allotd (SPEC §5): routes by resource, behind one error middleware and one access middleware.
///
/// ```swift
/// let app = Application(router: API(database: db, wake: Wakeup(), logger: logger).router())
/// ```
public struct API: Sendable {
    public let database: Database
    public let wake: Wakeup
    public let metrics: Metrics
    public let nodeKeys: NodeKeys
    public let oidc: OIDCVerifier?
    /// The file of the audit log's checkpoints, which `GET /v1/audit/verify` checks the log against.
    public let auditCheckpoints: String?
    /// The principals of tokens looked up lately (nil: every request reads the tokens table); see `TokenCache`.
    public let tokenCache: TokenCache?
    public let logger: Logger

    public init(
        database: Database, wake: Wakeup, metrics: Metrics = Metrics(), nodeKeys: NodeKeys = .ephemeral(), oidc: OIDCVerifier? = nil,
        auditCheckpoints: String? = nil, tokenCache: TokenCache? = nil, logger: Logger
    ) {
        self.auditCheckpoints = auditCheckpoints
        self.tokenCache = tokenCache
        self.database = database
        self.wake = wake
        self.metrics = metrics
        self.nodeKeys = nodeKeys
        self.oidc = oidc
        self.logger = logger
    }

    /// Wakes this allotd's scheduler, and the leader's wherever it runs.
    var clusterWake: ClusterWake { ClusterWake(database: self.database, local: self.wake) }

    var authenticator: Authenticator {
        Authenticator(tokens: TokenStore(database: self.database, cache: self.tokenCache), oidc: self.oidc, nodeKeys: self.nodeKeys)
    }

    public func router() -> Router<AllotRequestContext> {
        let wake = self.clusterWake
        let router = Router(context: AllotRequestContext.self)
        // Errors outermost, so that what the access check throws is answered in the API's shape too.
        router.add(middleware: ErrorMiddleware(logger: self.logger))
        router.add(middleware: AccessMiddleware(authenticator: self.authenticator))
        router.addRoutes(StatusRoutes(database: self.database, metrics: self.metrics, authenticator: self.authenticator).routes)
        router.addRoutes(
            JobRoutes(
                jobs: JobStore(database: self.database), nodes: NodeStore(database: self.database), nodeKeys: self.nodeKeys, wake: wake,
                submissions: SubmissionBatcher(jobs: JobStore(database: self.database))
            ).routes)
        router.addRoutes(
            NodeRoutes(
                nodes: NodeStore(database: self.database), lifecycle: NodeLifecycleStore(database: self.database), nodeKeys: self.nodeKeys,
                wake: wake, tokenCache: self.tokenCache
            ).routes)
        router.addRoutes(
            AgentRoutes(
                agents: AgentStore(database: self.database), wake: wake, shortcut: HeartbeatShortcut(agents: AgentStore(database: self.database))
            ).routes)
        router.addRoutes(ProgrammeRoutes(database: self.database, auditCheckpoints: self.auditCheckpoints, tokenCache: self.tokenCache).routes)
        return router
    }
}
