public import AllotStore
public import Logging
public import ServiceLifecycle

/// Takes and renews the leader lease every `every`; releases it on shutdown. A failed renewal does not drop
/// the fence at once — the lease may still be ours — but `Leadership` drops it by its own clock before the lease
/// can have lapsed, and the database refuses it from then on in any case.
public struct LeaderElector: Service {
    public let lease: LeaderLease
    public let leadership: Leadership
    public let every: Duration
    public let logger: Logger

    public init(lease: LeaderLease, leadership: Leadership, every: Duration = .seconds(2), logger: Logger) {
        self.lease = lease
        self.leadership = leadership
        self.every = every
        self.logger = logger
    }

    public func run() async throws {
        let ttl = Duration.milliseconds(Int64(self.lease.ttlSeconds * 1000))
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let asked = ContinuousClock.now
            let before = self.leadership.fence
            // Bounded: a renewal stuck on a dead connection lets this allotd's leadership lapse by its TTL, and the
            // next try goes on.
            switch await SchedulerLoop.within(ttl, { try await self.lease.acquireOrRenew() }) {
            case .done(let fence?):
                self.leadership.renewed(fence, asked: asked, ttl: ttl)
                if before != fence { self.logger.info("this allotd now schedules", metadata: ["fence": "\(fence)"]) }
            case .done(nil):
                self.leadership.lost()
                if before != nil { self.logger.warning("another allotd schedules now", metadata: ["was": "\(before!)"]) }
            case .failed(let error):
                self.logger.warning("leader lease check failed", metadata: ["error": "\(error)"])
            case .timedOut:
                self.logger.warning("leader lease check took longer than the lease: abandoned")
            }
            try? await Task.sleep(for: self.every)
        }
        self.leadership.lost()
        try? await self.lease.release()
    }
}
