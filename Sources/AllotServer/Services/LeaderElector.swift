public import AllotStore
public import Logging
public import ServiceLifecycle

/// Takes and renews the leader lease every couple of seconds; releases it on shutdown.
public struct LeaderElector: Service {
    public let lease: LeaderLease
    public let leadership: Leadership
    public let logger: Logger

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let leading = try await self.lease.acquireOrRenew()
                if leading != self.leadership.isLeader {
                    self.logger.info(leading ? "this allotd now schedules" : "another allotd schedules", metadata: ["holder": "\(self.lease.holder)"])
                }
                self.leadership.set(leading)
            } catch {
                self.leadership.set(false)
                self.logger.warning("leader lease check failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(2))
        }
        self.leadership.set(false)
        try? await self.lease.release()
    }
}
