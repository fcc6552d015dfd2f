import AllotCore
import AllotStore
import Foundation
import Hummingbird
import Logging
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
    let router = Router(context: BasicRequestContext.self)
    API(database: database, wake: wake, metrics: metrics, logger: logger).addRoutes(to: router)
    let holder = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier):\(UUID().uuidString.prefix(8))"
    let services: [any Service] = [
        database.client,
        LeaderElector(lease: LeaderLease(database: database, holder: holder), leadership: leadership, logger: logger),
        SchedulerLoop(
            database: database, placer: Placer(strategy: options.strategy), leadership: leadership, wake: wake, dispatch: dispatch,
            interval: options.schedulerInterval, metrics: metrics, logger: logger),
        Dispatcher(
            database: database, leadership: leadership, wake: dispatch, interval: options.dispatchInterval, maxTries: options.dispatchMaxTries,
            metrics: metrics, logger: logger),
        NodeMonitor(
            database: database, leadership: leadership, wake: wake, heartbeatTimeoutOverride: options.heartbeatTimeoutSeconds, metrics: metrics,
            logger: logger),
    ]
    return Application(
        router: router, configuration: .init(address: .hostname(options.host, port: options.port), serverName: "allotd"),
        services: services, logger: logger)
}
