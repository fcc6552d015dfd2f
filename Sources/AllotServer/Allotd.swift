public import AllotCore
public import AllotStore
import Foundation
public import Hummingbird
public import Logging
import ServiceLifecycle

/// How `allotd serve` runs.
public struct ServeOptions: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 8080
    public var heartbeatTimeoutSeconds: Int?
    public var schedulerInterval: Duration = .seconds(1)
    public var dispatchInterval: Duration = .milliseconds(250)
    public var dispatchMaxTries: Int = 6
    public var strategy: ScoringStrategy = .fragmentationAware
    /// allotd's secret, from which the nodes' signing keys derive (shared by every allotd of the cluster).
    public var nodeKeys: NodeKeys = .ephemeral()
    /// The identity provider whose JWTs are accepted, if any.
    public var oidc: OIDCConfiguration?
    /// The file the audit log's checkpoints are appended to.
    public var auditCheckpoints: String?
    /// A checkpoint is written when the log has grown by this many records, or this long has passed.
    public var auditCheckpointRecords: Int64 = 1000
    public var auditCheckpointInterval: Duration = .seconds(60)
    public init() {}
}

/// Builds allotd: the HTTP API plus the scheduler loop, dispatcher, node monitor and leader elector, with
/// the PostgreSQL client, all in one ServiceGroup (the application runs them in order; shutdown reverses it).
///
/// ```swift
/// let app = try buildAllotd(database: database, options: options, logger: logger)
/// try await app.runService()
/// ```
public func buildAllotd(database: Database, options: ServeOptions, logger: Logger) -> some ApplicationProtocol {
    let wake = Wakeup()
    let dispatch = Wakeup()
    let leadership = Leadership()
    let metrics = Metrics()
    let tokens = TokenCache()
    let router = API(
        database: database, wake: wake, metrics: metrics, nodeKeys: options.nodeKeys, oidc: options.oidc.map(OIDCVerifier.init),
        auditCheckpoints: options.auditCheckpoints, tokenCache: tokens, logger: logger
    ).router()
    let holder = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier):\(UUID().uuidString.prefix(8))"
    var services: [any Service] = [
        database,
        LeaderElector(lease: LeaderLease(database: database, holder: holder), leadership: leadership, logger: logger),
        NotificationListener.wakeups(database: database, wake: wake, logger: logger),
        NotificationListener.tokens(database: database, cache: tokens, logger: logger),
        SchedulerLoop(
            database: database, placer: Placer(strategy: options.strategy), leadership: leadership, wake: wake, dispatch: dispatch,
            interval: options.schedulerInterval, metrics: metrics, logger: logger),
        Dispatcher(
            database: database, leadership: leadership, wake: dispatch, interval: options.dispatchInterval, maxTries: options.dispatchMaxTries,
            metrics: metrics, nodeKeys: options.nodeKeys, logger: logger),
        NodeMonitor(
            database: database, leadership: leadership, wake: wake, heartbeatTimeoutOverride: options.heartbeatTimeoutSeconds, metrics: metrics,
            logger: logger),
    ]
    if let path = options.auditCheckpoints {
        services.append(
            AuditCheckpointer(
                store: AuditStore(database: database), path: path, leadership: leadership, interval: options.auditCheckpointInterval,
                everyRecords: options.auditCheckpointRecords, logger: logger))
    }
    return Application(
        router: router, configuration: .init(address: .hostname(options.host, port: options.port), serverName: "allotd"),
        services: services, logger: logger)
}

/// Builds allotd and runs it until SIGTERM or SIGINT (then shuts its services down in reverse order).
public func serveAllotd(database: Database, options: ServeOptions, logger: Logger) async throws {
    try await buildAllotd(database: database, options: options, logger: logger).runService()
}
