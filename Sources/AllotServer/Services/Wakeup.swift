public import AllotStore
import Synchronization

/// A level-triggered nudge between services: `signal()` from anywhere, `wait(upTo:)` in one loop. The waiter
/// sleeps until signalled (no polling); every loop also runs on a fixed interval, so a nudge is only ever an
/// optimisation. Submissions made through other allotds arrive as PostgreSQL notifications (`NotificationListener.wakeups`).
public final class Wakeup: Sendable {
    private struct State {
        var pending = false
        var waiter: (id: UInt64, continuation: CheckedContinuation<Void, Never>)?
        var lastID: UInt64 = 0
    }
    private let state = Mutex(State())
    public init() {}

    public func signal() {
        let waiter = self.state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard let w = s.waiter else {
                s.pending = true
                return nil
            }
            s.waiter = nil
            return w.continuation
        }
        waiter?.resume()
    }

    /// Returns when signalled (or if a signal came since the last wait), or after `interval`, whichever is first.
    public func wait(upTo interval: Duration) async {
        if self.state.withLock({ s in
            defer { s.pending = false }
            return s.pending
        }) {
            return
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.signalled() }
            group.addTask { try? await Task.sleep(for: interval) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Suspends until `signal()` or until the task is cancelled.
    private func signalled() async {
        let id = self.state.withLock { s in
            s.lastID += 1
            return s.lastID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = self.state.withLock { s -> Bool in
                    // Checked under the lock: a cancellation before this point finds no waiter to resume.
                    if s.pending || Task.isCancelled {
                        s.pending = false
                        return true
                    }
                    s.waiter = (id, c)
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            let waiter = self.state.withLock { s -> CheckedContinuation<Void, Never>? in
                guard let w = s.waiter, w.id == id else { return nil }
                s.waiter = nil
                return w.continuation
            }
            waiter?.resume()
        }
    }
}

/// Whether this allotd holds the scheduling lease, and the fence that proves it; shared by the loops that only
/// the leader runs. The fence is also dropped by this process's own clock once the lease it renewed must have
/// lapsed, and at once when the database refuses it.
public final class Leadership: Sendable {
    private struct Held {
        var fence: Fence
        var until: ContinuousClock.Instant
    }
    private let held = Mutex<Held?>(nil)
    public init() {}

    /// The fence to write with, while the lease is held.
    public var fence: Fence? {
        self.held.withLock { h in
            guard let current = h, ContinuousClock.now < current.until else { return nil }
            return current.fence
        }
    }
    public var isLeader: Bool { self.fence != nil }

    /// A renewal that the database confirmed; `asked` is when it was sent, so the local deadline errs early.
    func renewed(_ fence: Fence, asked: ContinuousClock.Instant, ttl: Duration) {
        self.held.withLock { $0 = Held(fence: fence, until: asked + ttl * 0.8) }
    }

    /// The lease is someone else's (or the database refused this fence).
    func lost() { self.held.withLock { $0 = nil } }

    /// Drops the fence if it is the one the database refused; true when it was held.
    @discardableResult
    func refused(_ error: any Error) -> Bool {
        guard case StoreError.fenced = error else { return false }
        self.lost()
        return true
    }
}

/// A wake-up for the scheduler wherever it runs: this process's loop at once, and every allotd's through
/// PostgreSQL (NOTIFY on `channel`, after the change committed). Notifications are sent off the request's path
/// and coalesced: while one is on its way, further signals make one more, not one each.
public final class ClusterWake: Sendable {
    public static let channel = "allot_wake"
    let database: Database
    let local: Wakeup
    private let sending = Mutex<(busy: Bool, again: Bool)>((false, false))

    public init(database: Database, local: Wakeup) {
        self.database = database
        self.local = local
    }

    public func signal() {
        self.local.signal()
        let start = self.sending.withLock { s -> Bool in
            if s.busy {
                s.again = true
                return false
            }
            s.busy = true
            return true
        }
        guard start else { return }
        Task {
            while true {
                // Lost only if PostgreSQL is unreachable: the leader's periodic cycle picks the change up anyway.
                try? await self.database.notify(Self.channel)
                let more = self.sending.withLock { s -> Bool in
                    if s.again {
                        s.again = false
                        return true
                    }
                    s.busy = false
                    return false
                }
                if !more { return }
            }
        }
    }
}
