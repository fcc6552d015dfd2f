import AllotCore
import AllotDatabaseTesting
import AllotTesting
import Foundation
import PostgresNIO
import Synchronization
import Testing

@testable import AllotStore

@Suite("Fenced leadership, silent pools as a window, rendezvous ports, wake-ups through PostgreSQL", databaseTests)
struct FencingTests {
    /// The lease runs out, as it would for a leader paused past its TTL (moved in the database, not waited for:
    /// a loaded machine must not make a live lease lapse mid-test).
    static func lapse(_ db: Database) async throws {
        try await db.query("UPDATE leader SET expires_at = now() - interval '1 second'")
    }

    @Test("a renewal keeps the epoch; a takeover after expiry takes a higher one; a release lets the other in at once")
    func epochs() async throws {
        try await TestDatabase.with { db in
            let a = LeaderLease(database: db, holder: "a", ttlSeconds: 30)
            let b = LeaderLease(database: db, holder: "b", ttlSeconds: 30)
            let first = try #require(try await a.acquireOrRenew())
            #expect(try await b.acquireOrRenew() == nil)
            #expect(try await a.acquireOrRenew() == first)
            try await Self.lapse(db)
            let second = try #require(try await b.acquireOrRenew())
            #expect(second.holder == "b" && second.epoch > first.epoch)
            // Renewals and a standby's tries take no epoch: terms are numbered one after the other.
            #expect(second.epoch == first.epoch + 1)
            #expect(try await a.acquireOrRenew() == nil)
            try await b.release()
            let third = try #require(try await a.acquireOrRenew())
            #expect(third.epoch > second.epoch)
            #expect(try await a.current()?.epoch == third.epoch)
        }
    }

    @Test("a renewal passes an open fenced transaction at once; a takeover waits until it has ended")
    func renewalNeverWaits() async throws {
        try await TestDatabase.with { db in
            let a = LeaderLease(database: db, holder: "a", ttlSeconds: 30)
            let fence = try #require(try await a.acquireOrRenew())
            let release = Mutex(false)
            let opened = Mutex(false)
            let open = Task {
                try await db.fenced(by: fence).transaction { tx in
                    try await tx.query("SELECT 1")
                    opened.withLock { $0 = true }
                    while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
                }
            }
            while !opened.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
            // Renewals while the transaction holds the lease row: each goes through (it used to wait for the row and,
            // after the renewal's 2 s lock timeout, fail).
            for _ in 0..<3 { #expect(try await a.acquireOrRenew() == fence) }
            // The lease lapses; b's takeover waits for the open transaction of a's term.
            try await Self.lapse(db)
            let takeover = Task { try await LeaderLease(database: db, holder: "b", ttlSeconds: 30).acquireOrRenew() }
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await a.current()?.holder == "a", "the takeover did not wait for the old term's transaction")
            release.withLock { $0 = true }
            try await open.value
            #expect(try #require(try await takeover.value).epoch > fence.epoch)
        }
    }

    @Test("a deposed leader's writes are refused by the database and change nothing: placements, preemptions, node loss, dispatch")
    func staleFenceChangesNothing() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let a = LeaderLease(database: db, holder: "a", ttlSeconds: 30)
            let old = try #require(try await a.acquireOrRenew())
            // The fence works while it is fresh.
            let running = try await f.submit(JobSpec(name: "r", org: "lab", pool: "h200", gpusPerNode: 8, command: "x"))
            let fresh = SchedulingCycle(store: SchedulerStore(database: db), placer: Placer(), logger: db.logger)
            #expect(try await fresh.run(fence: old).placed == [running])

            // a pauses past its lease; b takes over.
            try await Self.lapse(db)
            let new = try #require(try await LeaderLease(database: db, holder: "b", ttlSeconds: 30).acquireOrRenew())
            #expect(new.epoch > old.epoch)
            let queued = try await f.submit(JobSpec(name: "q", org: "lab", pool: "h200", gpusPerNode: 8, command: "x"))
            let attemptsBefore = try await f.scalar("SELECT count(*)::int FROM attempts", as: Int.self)
            let auditBefore = try await f.scalar("SELECT count(*)::int FROM audit", as: Int.self)

            let stale = db.fenced(by: old)
            await #expect(throws: StoreError.self) {
                try await SchedulingCycle(store: SchedulerStore(database: db), placer: Placer(), logger: db.logger).run(fence: old)
            }
            let reader = SchedulerStore(database: db)
            let plan = Placer().place(try await reader.queue(), on: try await reader.nodeSnapshots())
            await #expect(throws: StoreError.self) { try await SchedulerStore(database: stale).commit(plan) }
            let victims = try await SchedulerStore(database: db).running()
            await #expect(throws: StoreError.self) {
                try await SchedulerStore(database: stale).preempt(victims, for: try #require(try await SchedulerStore(database: db).queue().first))
            }
            try await db.query("UPDATE nodes SET last_heartbeat = now() - interval '5 minutes' WHERE name = 'n1'")
            await #expect(throws: StoreError.self) { try await NodeStore(database: stale).markLostNodes(timeoutSeconds: 30) }
            await #expect(throws: StoreError.self) { try await DispatchStore(database: stale).claimLaunches() }
            do {
                try await SchedulerStore(database: stale).stopOverdue()
                Issue.record("a stale fence was accepted")
            } catch StoreError.fenced(let message) {
                #expect(message.contains("epoch \(old.epoch)") && message.contains("epoch \(new.epoch)"))
            }

            #expect(try await f.scalar("SELECT count(*)::int FROM attempts", as: Int.self) == attemptsBefore)
            #expect(try await f.scalar("SELECT count(*)::int FROM audit", as: Int.self) == auditBefore)
            #expect(try await f.scalar("SELECT state::text FROM nodes WHERE name = 'n1'", as: String.self) == "ready")
            #expect(try await f.job(queued).state == .queued)
            // Each attempt says which term placed it, and each term when it began.
            #expect(try await f.scalar("SELECT epoch FROM attempts WHERE job_id = \(running)", as: Int64.self) == old.epoch)
            #expect(try await db.query("SELECT epoch FROM leader_terms ORDER BY epoch").decode(Int64.self).array() == [old.epoch, new.epoch])
            // The new leader's fence works.
            #expect(try await NodeStore(database: db.fenced(by: new)).markLostNodes(timeoutSeconds: 30).lost == ["n1"])
        }
    }

    @Test("a lease that lapsed with nobody taking over is refused too: the leader must renew before it writes again")
    func lapsedLease() async throws {
        try await TestDatabase.with { db in
            _ = try await StoreFixture(db)
            let a = LeaderLease(database: db, holder: "a", ttlSeconds: 30)
            let fence = try #require(try await a.acquireOrRenew())
            try await Self.lapse(db)
            await #expect(throws: StoreError.self) { try await SchedulerStore(database: db.fenced(by: fence)).stopOverdue() }
            // Renewing a lapsed lease of one's own is a new term: a new epoch, and the old fence stays refused.
            let renewed = try #require(try await a.acquireOrRenew())
            #expect(renewed.epoch > fence.epoch)
            try await SchedulerStore(database: db.fenced(by: renewed)).stopOverdue()
            await #expect(throws: StoreError.self) { try await SchedulerStore(database: db.fenced(by: fence)).stopOverdue() }
        }
    }

    @Test("held nodes take no placements; the hold ends by itself when they report again")
    func heldNodesTakeNothing() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1", "n2", "n3"])
            try await db.query("UPDATE nodes SET last_heartbeat = now() - interval '20 seconds' WHERE name IN ('n1', 'n2')")
            let (lost, held) = try await NodeStore(database: db).markLostNodes(timeoutSeconds: 30)
            #expect(lost.isEmpty && held == ["h200"])
            let ids = [
                try await f.submit(JobSpec(name: "a", org: "lab", pool: "h200", gpusPerNode: 8, command: "x")),
                try await f.submit(JobSpec(name: "b", org: "lab", pool: "h200", gpusPerNode: 8, command: "x")),
            ]
            #expect(try await f.schedule() == [ids[0]])
            #expect(try await f.job(ids[0]).attempts.first?.nodes.first?.node == "n3")
            try await f.report("n1")
            try await f.report("n2")
            _ = try await NodeStore(database: db).markLostNodes(timeoutSeconds: 30)
            #expect(try await f.scalar("SELECT count(*)::int FROM pool_holds", as: Int.self) == 0)
            #expect(try await f.schedule() == [ids[1]])
        }
    }

    @Test("every live attempt holds its own rendezvous port on its rank-0 node, below the ephemeral range; the schema refuses a shared one")
    func rendezvousPorts() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1"])
            var ids: [Int64] = []
            for i in 0..<8 { ids.append(try await f.submit(JobSpec(name: "j\(i)", org: "lab", pool: "h200", gpusPerNode: 1, command: "x"))) }
            try await f.schedule()
            let ports = try await db.query("SELECT rendezvous_port FROM attempts WHERE rendezvous_node = 'n1'").decode(Int.self).array()
            #expect(ports.count == 8 && Set(ports).count == 8)
            #expect(ports.allSatisfy { (29500..<32768).contains($0) })
            let work = try await DispatchStore(database: db).claimLaunches()
            #expect(Set(work.compactMap(\.rendezvousPort)) == Set(ports))
            // A port is a reservation: the database refuses a second live attempt on it.
            await #expect(throws: StoreError.self) {
                try await db.query("UPDATE attempts SET rendezvous_port = \(ports[0]) WHERE job_id = \(ids[1])")
            }
        }
    }

    @Test("a notification from one allotd's database client wakes a listener on another's")
    func wakeUpsThroughPostgreSQL() async throws {
        try await TestDatabase.with { db in
            let heard = Counter()
            let listening = Task { try await db.listen("allot_wake") { heard.add() } }
            defer { listening.cancel() }
            try await Task.sleep(for: .milliseconds(300))
            try await db.notify("allot_wake")
            let deadline = ContinuousClock.now + .seconds(5)
            while heard.value == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            #expect(heard.value >= 1)
        }
    }
}

final class Counter: Sendable {
    private let count = Mutex(0)
    func add() { self.count.withLock { $0 += 1 } }
    var value: Int { self.count.withLock { $0 } }
}

@Suite("Silence: which silent nodes are lost and which pools held")
struct SilenceTests {
    static let now = Date(timeIntervalSince1970: 1_000_000)
    static func nodes(_ ages: [Double], pool: String = "p") -> [(pool: String, node: String, lastHeartbeat: Date)] {
        ages.enumerated().map { (pool, "n\($0.offset)", now.addingTimeInterval(-$0.element)) }
    }

    @Test("half a pool partitioned, heartbeats spread over 2 s: at the first node past the timeout, the pool is held, nothing is lost")
    func staggeredPartition() {
        // Four of eight nodes stopped beating between 30.9 and 29.1 s ago; the other four beat within the last 2 s.
        // At this instant only two are past 30 s: the brake used to count those, found 2 of 8 and lost them.
        let ages = [30.9, 30.3, 29.7, 29.1, 1.9, 1.3, 0.7, 0.1]
        #expect(
            Silence.judge(Self.nodes(ages), now: Self.now, timeoutSeconds: 30).first?.action
                == .hold(silent: ["n0", "n1", "n2", "n3"], why: "4 of 8 nodes silent"))
        // Two dead nodes of eight are lost, and a node merely late (16 s) is not.
        #expect(Silence.judge(Self.nodes([45, 32, 16, 1, 1, 1, 1, 1]), now: Self.now, timeoutSeconds: 30).first?.action == .lose(["n0", "n1"]))
    }

    @Test("a stall on the scheduler's side (every heartbeat old) holds the pool; silence counts from the pool's newest heartbeat")
    func schedulerStall() {
        // allotd (or PostgreSQL) was away for a minute: nobody's heartbeat got through.
        #expect(
            Silence.judge(Self.nodes([61, 60, 59.5]), now: Self.now, timeoutSeconds: 30).first?.action
                == .hold(silent: ["n0", "n1", "n2"], why: "all 3 nodes silent"))
        // The first agents are back: the others' silence is measured from them, 2 s, not from a minute ago.
        #expect(
            Silence.judge(Self.nodes([62, 61, 0.5]), now: Self.now, timeoutSeconds: 30).first?.action
                == .hold(silent: ["n0", "n1"], why: "2 of 3 nodes silent"))
        #expect(Silence.judge(Self.nodes([2.5, 1, 0.5]), now: Self.now, timeoutSeconds: 30).first?.action == Silence.Action.none)
    }

    @Test("the database's summary of each pool (count, newest, the nodes that lag) gives the verdicts of judging every node (seeded)")
    func summaryEqualsEveryNode() async throws {
        try await TestDatabase.with { db in
            let names = (0..<12).map { "n\($0)" }
            _ = try await StoreFixture(db, nodes: names)
            var rng = SeededRandom(seed: 17)
            for round in 0..<40 {
                // Random pools (of one node too), ages around the timeout's half and whole, some nodes lost or silent.
                for name in names {
                    let pool = ["h200", "h200", "secure", "solo-\(name)"].randomElement(using: &rng)!
                    let age = [0, 1, 14, 16, 29, 31, 45, 70].randomElement(using: &rng)! + Double.random(in: 0..<1, using: &rng)
                    let state = Int.random(in: 0..<10, using: &rng) == 0 ? "lost" : "ready"
                    try await db.query("INSERT INTO pools (name, gpu_model) VALUES (\(pool), 'H200') ON CONFLICT DO NOTHING")
                    try await db.query(
                        """
                        UPDATE nodes SET pool = \(pool), state = \(state)::node_state, last_heartbeat = now() - make_interval(secs => \(age))
                        WHERE name = \(name)
                        """)
                }
                let (summed, every) = try await db.transaction { tx in
                    let (now, pools) = try await tx.nodes.livenessByPool(timeoutSeconds: 30)
                    let (_, nodes) = try await tx.nodes.liveness(locked: false)
                    return (
                        Silence.judge(pools: pools, now: now, timeoutSeconds: 30),
                        Silence.judge(nodes.map { ($0.pool, $0.node, $0.lastHeartbeat) }, now: now, timeoutSeconds: 30)
                    )
                }
                #expect(summed == every, "seed 17 round \(round): the per-pool summary judged otherwise than every node")
            }
        }
    }

    @Test("one dead node of many is lost; a pool of one loses its node past the timeout; pools are judged apart")
    func oneDeadNode() {
        let nodes = Self.nodes([45, 1, 1, 1]) + Self.nodes([31], pool: "q") + Self.nodes([29], pool: "r")
        let verdicts = Silence.judge(nodes, now: Self.now, timeoutSeconds: 30)
        #expect(
            verdicts == [
                Silence.Verdict(pool: "p", action: .lose(["n0"])), Silence.Verdict(pool: "q", action: .lose(["n0"])),
                Silence.Verdict(pool: "r", action: .none),
            ])
    }
}
