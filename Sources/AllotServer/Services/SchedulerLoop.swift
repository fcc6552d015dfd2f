public import AllotCore
public import AllotStore
import Foundation
public import Logging
public import ServiceLifecycle

/// Runs the scheduling cycle while this allotd leads: on a wake-up (a submission, a node change), and at least
/// every `interval`; wakes the dispatcher when the cycle placed or preempted anything.
public struct SchedulerLoop: Service {
    public let scheduling: SchedulingCycle
    public let leadership: Leadership
    public let wake: Wakeup
    public let dispatch: Wakeup
    public let interval: Duration
    public let metrics: Metrics
    public let logger: Logger

    public init(
        database: Database, placer: Placer, leadership: Leadership, wake: Wakeup, dispatch: Wakeup, interval: Duration, metrics: Metrics,
        logger: Logger
    ) {
        self.scheduling = SchedulingCycle(store: SchedulerStore(database: database), placer: placer, logger: logger)
        self.leadership = leadership
        self.wake = wake
        self.dispatch = dispatch
        self.interval = interval
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if let fence = self.leadership.fence {
                do {
                    try await self.cycle(fence: fence)
                } catch {
                    if !self.leadership.refused(error) { self.logger.warning("scheduling cycle failed", metadata: ["error": "\(error)"]) }
                }
            }
            await self.wake.wait(upTo: self.interval)
        }
    }

    /// One cycle, fenced by `fence` (the loop's; tests call it without); returns the jobs placed.
    @discardableResult
    public func cycle(fence: Fence? = nil) async throws -> [Int64] {
        let outcome = try await self.scheduling.run(fence: fence)
        if outcome.queued > 0 { self.metrics.observeCycle(decision: outcome.decision, placed: outcome.placed.count) }
        if outcome.needsDispatch { self.dispatch.signal() }
        self.logger.debug(
            "cycle",
            metadata: [
                "queued": "\(outcome.queued)", "placed": "\(outcome.placed.count)", "decide": "\(outcome.decision)",
                "rejections": "\(outcome.rejections)",
            ])
        return outcome.placed
    }
}
