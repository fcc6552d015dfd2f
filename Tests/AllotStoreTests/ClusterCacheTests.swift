import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import Foundation
import PostgresNIO
import Testing

// Serialized: each case makes a database of its own, and together they crowded the shared server.
@Suite("The scheduler's cluster cache: only changed nodes read again, never a stale node", databaseTests, .serialized)
struct ClusterCacheTests {
    /// Random placements, rank ends, cordons, drains and GPUs that vanish and return, each followed by a read
    /// through the cache that must equal a fresh read of every node.
    @Test("after every kind of change, the cached cluster equals a fresh read (seeded)", arguments: 0..<8)
    func equalsFreshRead(seed: UInt64) async throws {
        try await TestDatabase.with { db in
            let names = ["n1", "n2", "n3", "n4"]
            let f = try await StoreFixture(db, nodes: names)
            let store = SchedulerStore(database: db)
            let lifecycle = NodeLifecycleStore(database: db)
            let cycle = SchedulingCycle(store: store, placer: Placer(), logger: db.logger)
            let cache = ClusterCache()
            var rng = SeededRandom(seed: seed)
            _ = try await store.nodeSnapshots(cache: cache)
            #expect(cache.lastReread == nil, "seed \(seed): the first read reads every node")
            for step in 0..<14 {
                switch Int.random(in: 0..<6, using: &rng) {
                case 0, 1:
                    let milli = [nil, nil, 250, 500].randomElement(using: &rng)!
                    _ = try await f.submit(
                        JobSpec(
                            name: "s\(step)", org: "lab", pool: "h200", gpusPerNode: milli == nil ? Int.random(in: 1...4, using: &rng) : 0,
                            gpuMilli: milli, command: "true"))
                    _ = try await cycle.run()
                case 2:
                    var live: [(Int64, Int, Int, String)] = []
                    for try await row in try await db.query(
                        """
                        SELECT r.job_id, r.attempt, r.rank, r.node FROM attempt_ranks r
                        JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
                        WHERE attempt_is_live(a.state) AND rank_is_active(r.state) ORDER BY 1, 2, 3
                        """
                    ).decode((Int64, Int, Int, String).self) { live.append(row) }
                    if let (job, attempt, rank, node) = live.randomElement(using: &rng) {
                        let key = RankKey(jobID: job, attempt: attempt, rank: rank)
                        try await DispatchStore(database: db).markDispatched(key)
                        try await f.report(node, ranks: [RankStatus(key: key, state: .exited, exitCode: 0)])
                    }
                case 3:
                    let node = names.randomElement(using: &rng)!
                    // Refused where the node's state does not allow it: that changes nothing, which is a case too.
                    if Bool.random(using: &rng) { try? await lifecycle.cordon(node, by: f.op) } else { try? await lifecycle.undrain(node, by: f.op) }
                case 4:
                    _ = try? await lifecycle.drain([names.randomElement(using: &rng)!], reason: "test", deadlineSeconds: nil, by: f.op)
                default:
                    try await f.report(names.randomElement(using: &rng)!, gpus: [6, 8, 8].randomElement(using: &rng)!)
                }
                let cached = try await store.nodeSnapshots(cache: cache)
                let fresh = try await store.nodeSnapshots()
                #expect(cached == fresh, "seed \(seed) step \(step): the cache differs from a fresh read")
                #expect((cache.lastReread ?? names.count) <= names.count)
                _ = try await store.nodeSnapshots(cache: cache)
                #expect(cache.lastReread == 0, "seed \(seed) step \(step): nothing changed, nothing is read again")
            }
        }
    }

    @Test("a change by a transaction open while the cache was read is read once it commits; a change to every node reads them all")
    func openTransaction() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let store = SchedulerStore(database: db)
            let cache = ClusterCache()
            _ = try await store.nodeSnapshots(cache: cache)
            let (opened, openedNow) = AsyncStream.makeStream(of: Void.self)
            let (commit, commitNow) = AsyncStream.makeStream(of: Void.self)
            // Takes its transaction id and changes a GPU before the read below takes its snapshot, commits after it.
            let writer = Task {
                try await db.transaction { tx in
                    try await tx.query("UPDATE gpus SET health = 'quarantined' WHERE node = 'n1' AND idx = 3")
                    openedNow.yield()
                    for await _ in commit { break }
                }
            }
            for await _ in opened { break }
            let during = try await store.nodeSnapshots(cache: cache)
            #expect(during.first { $0.name == "n1" }?.gpus.first { $0.index == 3 }?.health == .healthy)
            commitNow.yield()
            try await writer.value
            let after = try await store.nodeSnapshots(cache: cache)
            #expect(after.first { $0.name == "n1" }?.gpus.first { $0.index == 3 }?.health == .quarantined)
            #expect(after == (try await store.nodeSnapshots()))
            #expect(cache.lastReread == 1)

            try await db.query("INSERT INTO cluster_changes (node) VALUES (NULL)")
            _ = try await store.nodeSnapshots(cache: cache)
            #expect(cache.lastReread == nil)
            // What was read may go; the next read is still right.
            let horizon = try #require(cache.horizon)
            #expect(try await f.scalar("SELECT count(*)::int FROM cluster_changes", as: Int.self) ?? 0 > 0)
            try await store.forgetChanges(readBy: cache)
            let seen: PostgresQuery = "SELECT count(*)::int FROM cluster_changes WHERE pg_visible_in_snapshot(xid, \(horizon)::pg_snapshot)"
            #expect(try await f.scalar(seen, as: Int.self) == 0)
            #expect(try await store.nodeSnapshots(cache: cache) == (try await store.nodeSnapshots()))
        }
    }

    @Test("read whole once its limit has passed, however often read in part; only the last read keeps; another term reads whole")
    func wholeAgain() async throws {
        try await TestDatabase.with { db in
            _ = try await StoreFixture(db)
            let store = SchedulerStore(database: db)
            let cache = ClusterCache(limit: .milliseconds(400))
            _ = try await store.nodeSnapshots(cache: cache)
            var reads: [Int?] = []
            for _ in 0..<8 {
                try await Task.sleep(for: .milliseconds(100))
                _ = try await store.nodeSnapshots(cache: cache)
                reads.append(cache.lastReread)
            }
            #expect(reads.contains(0) && reads.contains(nil), "\(reads): read in part, and whole again once 400 ms had passed")

            // A read given up on that finishes after a later one took the cache keeps nothing.
            let (first, late) = cache.take(epoch: nil)
            let (_, latest) = cache.take(epoch: nil)
            cache.keep([:], horizon: first?.horizon ?? "", epoch: nil, wholeAt: first?.wholeAt, reread: 0, ticket: late)
            #expect(cache.take(epoch: nil).0 == nil)
            cache.keep(first?.nodes ?? [:], horizon: first?.horizon ?? "", epoch: 7, wholeAt: nil, reread: nil, ticket: latest + 1)
            // Kept under term 7: another term does not use it.
            #expect(cache.take(epoch: 8).0 == nil)
        }
    }
}
