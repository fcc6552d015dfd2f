import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import PostgresNIO
import Testing

/// Replica healing through the store: a replica that exits restarts on its node, keeping its GPU and its charge;
/// one whose node is lost is given another node by the scheduler, charged anew there, its lost time credited.
@Suite("Replica healing in the store", databaseTests)
struct ReplicaHealingStoreTests {
    static func running(_ key: RankKey, launch: Int = 0, state: RankStatus.State = .running, code: Int? = nil) -> RankStatus {
        var s = RankStatus(key: key, state: state, exitCode: code)
        s.launch = launch > 0 ? launch : nil
        return s
    }

    @Test("exit → restart on its node after the back-off, the other replica untouched; node lost → moved by the scheduler; the ledger follows")
    func heal() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1", "n2", "n3"])
            let (id, nodeOf) = try await Self.runningService(f, replicas: 2)
            let store = DispatchStore(database: db)
            let k0 = RankKey(jobID: id, attempt: 1, rank: 0)
            let k1 = RankKey(jobID: id, attempt: 1, rank: 1)

            // Replica 0 exits 1: it restarts on its node (back-off first); replica 1 runs on.
            try await f.report(nodeOf[0]!, ranks: [Self.running(k0, state: .exited, code: 1)])
            var job = try await f.job(id)
            #expect(job.state == .running && job.degraded == true)
            #expect(job.attempts[0].nodes[0].state == .pending && job.attempts[0].nodes[0].restarts == 1 && job.attempts[0].nodes[0].restartAt != nil)
            #expect(job.attempts[0].nodes[1].state == .running)
            #expect(try await f.scalar("SELECT count(*)::int FROM gpu_claims WHERE job_id = \(id) AND released_at IS NULL", as: Int.self) == 2)
            // Its back-off is a second (the first restart's), counted from its end.
            let wait = try await f.scalar(
                "SELECT extract(epoch FROM next_dispatch_at - ended_at)::float8 FROM attempt_ranks WHERE job_id = \(id) AND rank = 0", as: Double.self
            )
            #expect(wait.map { abs($0 - 1) < 0.01 } == true, "\(String(describing: wait))")
            try await db.query("UPDATE attempt_ranks SET next_dispatch_at = now() + interval '1 hour' WHERE job_id = \(id) AND rank = 0")
            #expect(try await store.claimLaunches().isEmpty, "dispatched before its back-off")
            try await db.query("UPDATE attempt_ranks SET next_dispatch_at = now() WHERE job_id = \(id) AND rank = 0")
            let again = try #require(try await store.claimLaunches().first { $0.jobID == id })
            let relaunch = try #require(again.ranks.first { $0.rank == 0 })
            #expect(!relaunch.dispatched && relaunch.launch == 1 && relaunch.node == nodeOf[0])
            try await store.markDispatched(k0)
            try await f.report(nodeOf[0]!, ranks: [Self.running(k0, launch: 1)])
            job = try await f.job(id)
            #expect(job.degraded == nil && job.attempts.count == 1)
            // It kept its GPU all along: one charge per replica, still open.
            #expect(try await f.scalar("SELECT count(*)::int FROM usage WHERE job_id = \(id) AND ended_at IS NULL", as: Int.self) == 2)

            // Replica 1's node is lost: it moves to the one node the service does not hold; its time is credited.
            try await NodeStore(database: db).declareLost(nodeOf[1]!, by: f.op)
            job = try await f.job(id)
            #expect(job.state == .running && job.degraded == true && job.attempts[0].state == .running, "\(job.attempts)")
            #expect(try await f.scalar("SELECT count(*)::int FROM usage WHERE job_id = \(id) AND rank = 1 AND credited", as: Int.self) == 1)
            _ = try await f.schedule()
            let third: String = try #require(["n1", "n2", "n3"].first { $0 != nodeOf[0] && $0 != nodeOf[1] })
            job = try await f.job(id)
            #expect(job.attempts[0].nodes[1].node == third, "\(job.attempts[0].nodes)")
            let moved = try #require(try await store.claimLaunches().first { $0.jobID == id }?.ranks.first { $0.rank == 1 })
            #expect(moved.node == third && moved.launch == 1 && moved.gpuIndices.count == 1)
            try await store.markDispatched(k1)
            try await f.report(third, ranks: [Self.running(k1, launch: 1)])
            job = try await f.job(id)
            #expect(job.degraded == nil && job.state == .running)
            // Charged anew on its new node, for its new launch.
            #expect(
                try await f.scalar(
                    "SELECT node FROM usage WHERE job_id = \(id) AND rank = 1 AND launch = 1 AND ended_at IS NULL AND NOT credited", as: String.self)
                    == third)
            #expect(try await f.scalar("SELECT count(*)::int FROM gpu_claims WHERE job_id = \(id) AND released_at IS NULL", as: Int.self) == 2)
        }
    }

    /// A running service of `replicas` on fresh nodes, every replica dispatched and running; its nodes by rank.
    static func runningService(_ f: StoreFixture, replicas: Int) async throws -> (Int64, [Int: String]) {
        let id = try await f.submit(
            JobSpec(name: "svc", org: "lab", kind: .inference, pool: "h200", nodes: replicas, gpusPerNode: 1, command: "serve"))
        #expect(try await f.schedule() == [id])
        let store = DispatchStore(database: f.db)
        let work = try #require(try await store.claimLaunches().first { $0.jobID == id })
        for r in work.ranks { try await store.markDispatched(RankKey(jobID: id, attempt: 1, rank: r.rank)) }
        for r in work.ranks { try await f.report(r.node, ranks: [Self.running(RankKey(jobID: id, attempt: 1, rank: r.rank))]) }
        #expect(try await f.job(id).state == .running)
        return (id, Dictionary(uniqueKeysWithValues: work.ranks.map { ($0.rank, $0.node) }))
    }

    @Test("only a replica whose back-off has passed is sent; a replica past its limit gives its GPUs back and its charge is closed")
    func dueOnlyAndGivenUp() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1", "n2", "n3"])
            let (id, nodeOf) = try await Self.runningService(f, replicas: 3)
            try await f.report(nodeOf[0]!, ranks: [Self.running(RankKey(jobID: id, attempt: 1, rank: 0), state: .exited, code: 1)])
            try await f.report(nodeOf[1]!, ranks: [Self.running(RankKey(jobID: id, attempt: 1, rank: 1), state: .exited, code: 1)])
            try await db.query("UPDATE attempt_ranks SET next_dispatch_at = now() + interval '1 hour' WHERE job_id = \(id) AND rank = 1")
            try await db.query("UPDATE attempt_ranks SET next_dispatch_at = now() WHERE job_id = \(id) AND rank = 0")
            let work = try #require(try await DispatchStore(database: db).claimLaunches().first { $0.jobID == id })
            #expect(work.ranks.filter { !$0.dispatched }.map(\.rank) == [0], "\(work.ranks.map { ($0.rank, $0.dispatched) })")
            // No more restarts allowed: replica 2 ends and is left down, its GPU released, its charge closed.
            try await db.query("UPDATE policy_defaults SET replica_restart_limit = 0")
            try await f.report(nodeOf[2]!, ranks: [Self.running(RankKey(jobID: id, attempt: 1, rank: 2), state: .exited, code: 9)])
            let job = try await f.job(id)
            #expect(job.state == .running && job.attempts[0].nodes[2].state == .exited)
            #expect(
                try await f.scalar(
                    "SELECT count(*)::int FROM gpu_claims WHERE job_id = \(id) AND rank = 2 AND released_at IS NULL", as: Int.self) == 0)
            #expect(
                try await f.scalar("SELECT count(*)::int FROM usage WHERE job_id = \(id) AND rank = 2 AND ended_at IS NULL", as: Int.self) == 0)
            #expect(try await f.scalar("SELECT count(*)::int FROM audit WHERE action = 'replica.given-up'", as: Int.self) == 1)
        }
    }

    @Test("two replicas moved in one cycle get a node each, never one together; a move the service was cancelled before claims nothing")
    func twoMovesAndCancel() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1", "n2", "n3", "n4", "n5"])
            let (id, nodeOf) = try await Self.runningService(f, replicas: 3)
            try await NodeStore(database: db).declareLost(nodeOf[1]!, by: f.op)
            try await NodeStore(database: db).declareLost(nodeOf[2]!, by: f.op)
            let snapshot = try await SchedulerStore(database: db).snapshot()
            #expect(snapshot.relocations.count == 2)
            _ = try await f.schedule()
            let nodes = try await f.job(id).attempts[0].nodes.map(\.node)
            #expect(Set(nodes).count == 3 && !nodes.contains(nodeOf[1]!) && !nodes.contains(nodeOf[2]!), "\(nodes)")
            // Another service loses a node; it is cancelled before the cycle's move commits.
            let (other, otherNodes) = try await Self.runningService(f, replicas: 2)
            try await NodeStore(database: db).declareLost(otherNodes[0]!, by: f.op)
            let stale = try #require(try await SchedulerStore(database: db).snapshot().relocations.first { $0.job.id == other })
            _ = try await JobStore(database: db).cancel(other, by: f.op, scope: .all)
            let moved = try await SchedulerStore(database: db).relocate(
                stale, to: RankAssignment(rank: stale.rank, node: "n5", gpuIndices: [7], milliPerGPU: 1000))
            #expect(!moved)
            #expect(
                try await f.scalar(
                    "SELECT count(*)::int FROM gpu_claims WHERE job_id = \(other) AND node = 'n5' AND gpu_index = 7", as: Int.self) == 0)
        }
    }
}
