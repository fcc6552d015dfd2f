public import AllotStore
public import Logging
public import ServiceLifecycle

/// While this allotd leads, every second: marks nodes `lost` after the heartbeat timeout (their attempts end
/// lost and the jobs requeue), stops attempts past their time limits, and moves maintenance windows and drains on;
/// once a minute, checkpoints the running rows of the usage ledger.
public struct NodeMonitor: Service {
    public let database: Database
    public let leadership: Leadership
    public let wake: Wakeup
    /// Overrides the policy's heartbeat timeout (for tests and `allotd serve --heartbeat-timeout`).
    public let heartbeatTimeoutOverride: Int?
    public let metrics: Metrics
    public let logger: Logger

    public init(database: Database, leadership: Leadership, wake: Wakeup, heartbeatTimeoutOverride: Int?, metrics: Metrics, logger: Logger) {
        self.database = database
        self.leadership = leadership
        self.wake = wake
        self.heartbeatTimeoutOverride = heartbeatTimeoutOverride
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        var checkpointed = ContinuousClock.now
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if let fence = self.leadership.fence {
                // Bounded: a round whose connection died mid-query (a PostgreSQL restart) must not stop the monitor,
                // or silent nodes would be neither lost nor held again.
                switch await SchedulerLoop.within(.seconds(30), { [checkpointed] in try await self.round(fence: fence, checkpointed: checkpointed) })
                {
                case .done(let checkpointedNow): if checkpointedNow { checkpointed = ContinuousClock.now }
                case .failed(let error):
                    if !self.leadership.refused(error) { self.logger.warning("node monitor round failed", metadata: ["error": "\(error)"]) }
                case .timedOut:
                    self.logger.error("a node monitor round took over 30 s (a database call that never returned?): abandoned")
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// One round: lost nodes and held pools, overdue attempts, maintenance, drains, and (each minute) the usage
    /// checkpoint; true when it checkpointed.
    private func round(fence: Fence, checkpointed: ContinuousClock.Instant) async throws -> Bool {
        let database = self.database.fenced(by: fence)
        let nodes = NodeStore(database: database)
        let lifecycle = NodeLifecycleStore(database: database)
        let timeout: Int
        if let heartbeatTimeoutOverride {
            timeout = heartbeatTimeoutOverride
        } else {
            timeout = try await nodes.heartbeatTimeoutSeconds()
        }
        let (lost, held) = try await nodes.markLostNodes(timeoutSeconds: timeout)
        if !lost.isEmpty {
            self.metrics.nodesLost(lost.count)
            self.logger.warning("nodes lost", metadata: ["nodes": "\(lost)", "timeout": "\(timeout)s"])
            self.wake.signal()
        }
        if !held.isEmpty {
            self.logger.error(
                "most of a pool went silent at once: holding instead of requeueing; `allot nodes declare-lost` decides",
                metadata: ["pools": "\(held)"])
        }
        try await SchedulerStore(database: database).stopOverdue()
        try await lifecycle.advanceMaintenance()
        try await lifecycle.advanceDrains()
        guard ContinuousClock.now - checkpointed >= .seconds(60) else { return false }
        try await StatementStore(database: database).checkpoint()
        return true
    }
}
