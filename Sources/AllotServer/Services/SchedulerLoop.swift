public import AllotCore
public import AllotStore
import Foundation
public import Logging
public import ServiceLifecycle
import Synchronization

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
                switch await Self.within(.seconds(60), { try await self.cycle(fence: fence) }) {
                case .done: break
                case .failed(let error):
                    if !self.leadership.refused(error) { self.logger.warning("scheduling cycle failed", metadata: ["error": "\(error)"]) }
                case .timedOut:
                    self.logger.error("a scheduling cycle took over 60 s (a database call that never returned?): abandoned, scheduling goes on")
                }
            }
            await self.wake.wait(upTo: self.interval)
        }
    }

    enum Finished<T: Sendable>: Sendable {
        case done(T)
        case failed(any Error)
        case timedOut
    }

    /// Runs `work` and returns when it ends or after `limit`, whichever is first — without waiting for work that
    /// ignores cancellation: seen once after a PostgreSQL restart, a cycle whose connection died never returned,
    /// and the loop must not stop with it. The abandoned task is cancelled and left to end by itself. Every
    /// service loop of allotd that talks to the database runs its rounds through this.
    static func within<T: Sendable>(_ limit: Duration, _ work: @escaping @Sendable () async throws -> T) async -> Finished<T> {
        let once = Once()
        return await withCheckedContinuation { (c: CheckedContinuation<Finished<T>, Never>) in
            let task = Task { () -> Bool in
                do {
                    return once.resume(c, .done(try await work()))
                } catch {
                    return once.resume(c, .failed(error))
                }
            }
            let timer = Task {
                try? await Task.sleep(for: limit)
                if once.resume(c, .timedOut) { task.cancel() }
            }
            Task {
                _ = await task.value
                timer.cancel()
            }
        }
    }

    /// One cycle, fenced by `fence` (the loop's; tests call it without); returns the jobs placed.
    @discardableResult
    public func cycle(fence: Fence? = nil) async throws -> [Int64] {
        let outcome = try await self.scheduling.run(fence: fence)
        if outcome.queued > 0 { self.metrics.observeCycle(decision: outcome.decision, placed: outcome.placed.count) }
        if outcome.needsDispatch { self.dispatch.signal() }
        if outcome.deferred > 0 { self.wake.signal() }
        self.logger.debug(
            "cycle",
            metadata: [
                "queued": "\(outcome.queued)", "placed": "\(outcome.placed.count)", "deferred": "\(outcome.deferred)",
                "decide": "\(outcome.decision)",
                "snapshot": "\(outcome.timings.snapshot)", "commit": "\(outcome.timings.commit)", "total": "\(outcome.timings.total)",
                "rejections": "\(outcome.rejections)",
            ])
        return outcome.placed
    }
}

/// Resumes a continuation the first time only.
final class Once: Sendable {
    private let resumed = Mutex(false)
    @discardableResult
    func resume<T>(_ c: CheckedContinuation<T, Never>, _ value: sending T) -> Bool {
        let first = self.resumed.withLock { r in
            defer { r = true }
            return !r
        }
        if first { c.resume(returning: value) }
        return first
    }
}
