import Synchronization

/// A level-triggered nudge between services: `signal()` from anywhere, `wait(upTo:)` in a loop. Every loop also
/// runs on a fixed interval, so a nudge is only ever an optimisation.
public final class Wakeup: Sendable {
    private let pending = Mutex(false)
    public init() {}
    public func signal() { self.pending.withLock { $0 = true } }

    /// Returns when signalled, or after `interval`, whichever comes first.
    public func wait(upTo interval: Duration) async {
        let deadline = ContinuousClock.now + interval
        while ContinuousClock.now < deadline {
            if self.pending.withLock({ p in
                defer { p = false }; return p
            }) {
                return
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Whether this allotd holds the scheduling lease; shared by the loops that only the leader runs.
public final class Leadership: Sendable {
    private let leading = Mutex(false)
    public init() {}
    public var isLeader: Bool { self.leading.withLock { $0 } }
    func set(_ value: Bool) { self.leading.withLock { $0 = value } }
}
