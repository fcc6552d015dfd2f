public import AllotStore
public import Logging
public import ServiceLifecycle

/// Listens on a PostgreSQL notification channel on a connection of its own, calling `received` for each notice;
/// reconnects (after a second, then up to 5 s apart) when the database goes away. `listening` says when notices
/// are being received and when they stopped (those sent meanwhile are lost).
public struct NotificationListener: Service {
    public let database: Database
    public let channel: String
    public let logger: Logger
    let listening: @Sendable (Bool) -> Void
    let received: @Sendable () -> Void

    public init(
        database: Database, channel: String, logger: Logger, listening: @escaping @Sendable (Bool) -> Void, received: @escaping @Sendable () -> Void
    ) {
        self.database = database
        self.channel = channel
        self.logger = logger
        self.listening = listening
        self.received = received
    }

    /// `ClusterWake` notifications from every allotd wake this one's scheduler loop; so does each (re)connection,
    /// since notifications sent while not listening are lost.
    public static func wakeups(database: Database, wake: Wakeup, logger: Logger) -> Self {
        Self(database: database, channel: ClusterWake.channel, logger: logger, listening: { if $0 { wake.signal() } }, received: { wake.signal() })
    }

    /// A change to tokens anywhere makes this allotd forget the principals it kept; it keeps none while not listening.
    public static func tokens(database: Database, cache: TokenCache, logger: Logger) -> Self {
        Self(database: database, channel: TokenCache.channel, logger: logger, listening: { cache.listening($0) }, received: { cache.forget() })
    }

    public func run() async throws {
        var pause = Duration.seconds(1)
        defer { self.listening(false) }
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                // LISTEN waits for ever: cancelled on graceful shutdown, or allotd would not exit on SIGTERM.
                try await cancelWhenGracefulShutdown { [database, channel, listening, received] in
                    try await database.listen(channel, listening: { listening(true) }, received: received)
                }
                self.listening(false)
                pause = .seconds(1)
            } catch {
                self.listening(false)
                if Task.isCancelled || Task.isShuttingDownGracefully { return }
                self.logger.info(
                    "notification listener lost its connection; listening again", metadata: ["channel": "\(self.channel)", "error": "\(error)"])
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(5))
            }
        }
    }
}
