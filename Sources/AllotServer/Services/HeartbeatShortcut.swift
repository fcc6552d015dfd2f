import AllotCore
import AllotHTTPServer
import AllotStore
import Crypto
import Foundation
import NIOCore
import Synchronization

/// The short path for heartbeats that change nothing: a node with no ranks that sends the very bytes it sent last —
/// the same inventory, the same address — and that the database holds no live work on, has only its time moved,
/// with those of every node reporting meanwhile in one statement, and is answered with the last full report's reply
/// (which was empty: nothing live, nothing to acknowledge — exactly what a full report would answer again). Idle
/// nodes are most of a large pool's reports (10,000 nodes every 5 s is 2,000 a second); a full report is a
/// transaction over the node, its GPUs and its attempts. Any change, any rank, work placed on the node, a lost
/// node, a report naming a faulty GPU (an operator may have restored it in the database: the full path quarantines it
/// again), and every `lifetime` (a bound, not needed for correctness) take the full path.
final class HeartbeatShortcut: Sendable {
    let lifetime: Duration
    private let last = Mutex([String: (digest: Data, at: ContinuousClock.Instant)]())
    /// Whether each node was touched (not lost), every node waiting meanwhile in one statement.
    private let touches: GroupCommit<String, Bool>

    init(agents: AgentStore, lifetime: Duration = .seconds(300)) {
        self.lifetime = lifetime
        self.touches = GroupCommit { nodes in
            let touched = try await agents.touch(nodes)
            return nodes.map { .success(touched.contains($0)) }
        }
    }

    /// The short path's one answer, encoded once.
    static let nothingLive = JSON.encoded(HeartbeatReply(live: [], acknowledged: []))

    /// What identifies a report: its bytes as sent (an agent encodes an unchanged report the same way each time).
    static func digest(_ body: Data) -> Data { Data(SHA256.hash(data: body)) }

    /// The reply (encoded) for a report the last full one already answered, once its time is recorded; nil when it
    /// must take the full path.
    func reply(to node: String, digest: Data) async throws -> ByteBuffer? {
        let known = self.last.withLock { $0[node] }
        guard let known, known.digest == digest, ContinuousClock.now - known.at < self.lifetime else { return nil }
        guard try await self.touches.submit(node) else {
            self.last.withLock { $0[node] = nil }
            return nil
        }
        return Self.nothingLive
    }

    /// Remembers a full report's answer, when it is one the short path may give again (nothing live on the node).
    func answered(_ node: String, digest: Data?, reply: HeartbeatReply) {
        let entry = digest.flatMap { reply.live.isEmpty && reply.acknowledged.isEmpty ? ($0, ContinuousClock.now) : nil }
        self.last.withLock { $0[node] = entry }
    }
}
