public import AllotStore
public import Logging
public import ServiceLifecycle

/// Listens for `ClusterWake` notifications from every allotd and wakes this one's scheduler loop; reconnects
/// (after a second, then up to 5 s apart) when the database goes away, and wakes the loop once it is back, since
/// notifications sent meanwhile are lost.
public struct WakeupListener: Service {
    public let database: Database
    public let wake: Wakeup
    public let logger: Logger

    public init(database: Database, wake: Wakeup, logger: Logger) {
        self.database = database
        self.wake = wake
        self.logger = logger
    }

    public func run() async throws {
        var pause = Duration.seconds(1)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                self.wake.signal()
                // LISTEN waits for ever: cancelled on graceful shutdown, or allotd would not exit on SIGTERM.
                try await cancelWhenGracefulShutdown { [database, wake] in
                    try await database.listen(ClusterWake.channel) { wake.signal() }
                }
                pause = .seconds(1)
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { return }
                self.logger.info("wake-up listener lost its connection; listening again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(5))
            }
        }
    }
}
