public import AllotCore
import Synchronization

/// The cluster as the scheduler last read it, kept from one cycle to the next with the horizon up to which it has
/// seen every change, so that a cycle reads again only the nodes changed since (`cluster_changes`,
/// `ClusterReader.nodeSnapshots(cache:)`). Read whole again at least every `limit`, whatever the log says.
public final class ClusterCache: Sendable {
    struct Kept {
        var nodes: [String: NodeSnapshot]
        /// The snapshot `nodes` was read in (a pg_snapshot, as text): every change visible in it is in `nodes`.
        var horizon: String
        var at: ContinuousClock.Instant
    }

    private let state = Mutex<(kept: Kept?, horizon: String?, reread: Int?)>((nil, nil, nil))
    let limit: Duration

    public init(limit: Duration = .seconds(60)) { self.limit = limit }

    /// What is kept, taken out (a read that fails leaves the cache empty: the next one reads every node); nil
    /// when nothing is, or it is older than `limit`.
    func take() -> Kept? {
        self.state.withLock { s in
            defer { s.kept = nil }
            guard let k = s.kept, ContinuousClock.now - k.at < self.limit else { return nil }
            return k
        }
    }

    func keep(_ nodes: [String: NodeSnapshot], horizon: String, reread: Int?) {
        self.state.withLock { $0 = (Kept(nodes: nodes, horizon: horizon, at: .now), horizon, reread) }
    }

    /// The snapshot of the last read: the changes visible in it have been read (and may be deleted).
    package var horizon: String? { self.state.withLock { $0.horizon } }

    /// How many nodes the last read read again; nil when it read them all.
    public var lastReread: Int? { self.state.withLock { $0.reread } }
}
