public import AllotCore
import Synchronization

/// The cluster as the scheduler last read it, kept from one cycle to the next with the snapshot it was read in, so
/// that a cycle reads again only the nodes changed since (`cluster_changes`, `ClusterReader.nodeSnapshots(cache:)`).
/// Read whole again at least every `limit` (whatever the log says), and under a new leader's term (the leader
/// deletes the log it has read, so one that led before and leads again cannot trust what it kept).
public final class ClusterCache: Sendable {
    package struct Kept {
        package var nodes: [String: NodeSnapshot]
        /// The snapshot `nodes` was read in (a pg_snapshot, as text): every change visible in it is in `nodes`.
        package var horizon: String
        /// The leader's term it was read under (nil: unfenced, the tests' store).
        package var epoch: Int64?
        /// When it was last read whole.
        package var wholeAt: ContinuousClock.Instant
    }

    private struct State {
        var kept: Kept?
        /// Counts takes: only the read that took last may keep (a cycle given up on may finish late).
        var ticket = 0
        var reread: Int?
    }

    private let state = Mutex(State())
    let limit: Duration

    public init(limit: Duration = .seconds(60)) { self.limit = limit }

    /// What is kept, taken out (a read that fails leaves the cache empty: the next one reads every node), and the
    /// ticket to keep its result with; nil when nothing is, it was read whole more than `limit` ago, or under
    /// another term than `epoch`.
    package func take(epoch: Int64?) -> (Kept?, Int) {
        self.state.withLock { s in
            defer { s.kept = nil }
            s.ticket += 1
            guard let k = s.kept, k.epoch == epoch, ContinuousClock.now - k.wholeAt < self.limit else { return (nil, s.ticket) }
            return (k, s.ticket)
        }
    }

    /// Keeps a read's result, unless another read took the cache since. `wholeAt`: when what it started from
    /// was read whole (nil: this read was).
    package func keep(
        _ nodes: [String: NodeSnapshot], horizon: String, epoch: Int64?, wholeAt: ContinuousClock.Instant?, reread: Int?, ticket: Int
    ) {
        self.state.withLock { s in
            guard ticket == s.ticket else { return }
            s.kept = Kept(nodes: nodes, horizon: horizon, epoch: epoch, wholeAt: wholeAt ?? .now)
            s.reread = reread
        }
    }

    /// The snapshot of the last read, while what it read may still be used: the changes visible in it have been
    /// read (and may be deleted). Nil otherwise: the next read is whole.
    package var horizon: String? {
        self.state.withLock { s in
            guard let k = s.kept, ContinuousClock.now - k.wholeAt < self.limit else { return nil }
            return k.horizon
        }
    }

    /// How many nodes the last read read again; nil when it read them all.
    public var lastReread: Int? { self.state.withLock { $0.reread } }
}
