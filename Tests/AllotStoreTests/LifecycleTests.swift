import AllotCore
import AllotDatabaseTesting
import AllotTesting
import Foundation
import PostgresNIO
import Testing

@testable import AllotStore

@Suite("Jobs and attempts through the store", databaseTests)
struct LifecycleTests {
    static func running(_ key: RankKey) -> RankStatus { RankStatus(key: key, state: .running) }
    static func exited(_ key: RankKey, _ code: Int) -> RankStatus { RankStatus(key: key, state: .exited, exitCode: code) }

    @Test("accepted launches are recorded together, in one transaction: each attempt starting once all its ranks are; an unknown one leaves the rest")
    func acceptedTogether() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let a = try await f.submit(JobSpec(name: "a", org: "lab", pool: "h200", gpusPerNode: 1, command: "true"))
            let gang = try await f.submit(JobSpec(name: "g", org: "lab", pool: "h200", nodes: 2, gpusPerNode: 2, command: "true"))
            let gone = try await f.submit(JobSpec(name: "c", org: "lab", pool: "h200", gpusPerNode: 1, command: "true"))
            #expect(Set(try await f.schedule()) == [a, gang, gone])
            let store = DispatchStore(database: db)
            _ = try await store.claimLaunches()
            _ = try await JobStore(database: db).cancel(gone, by: Principal(name: "op", role: .operator), scope: .all)
            let results = try await store.markDispatched([
                RankKey(jobID: 987_654, attempt: 1, rank: 0), RankKey(jobID: gone, attempt: 1, rank: 0), RankKey(jobID: a, attempt: 1, rank: 0),
                RankKey(jobID: gang, attempt: 1, rank: 1),
            ])
            #expect(results.count == 4)
            #expect((try? results[0].get()) == nil, "an attempt the database does not hold is refused on its own")
            #expect(results[1...].allSatisfy { (try? $0.get()) != nil })
            #expect(try await f.job(a).state == .starting)
            #expect(try await f.job(gang).state == .placed, "one rank of two accepted")
            #expect(try await f.job(gone).state != .starting)
            _ = try await store.markDispatched([RankKey(jobID: gang, attempt: 1, rank: 0)])
            #expect(try await f.job(gang).state == .starting)
        }
    }

    @Test("a gang goes queued → placed → starting → running → succeeded, holding its GPUs until it ends")
    func happyGang() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let id = try await f.submit(JobSpec(name: "g", org: "lab", pool: "h200", nodes: 2, gpusPerNode: 4, command: "true"))
            #expect(try await f.job(id).state == .queued)
            #expect(try await f.schedule() == [id])
            let placed = try await f.job(id)
            #expect(placed.state == .placed)
            let ranks = try #require(placed.attempts.first?.nodes)
            #expect(Set(ranks.map(\.node)) == ["n1", "n2"])
            #expect(ranks.allSatisfy { $0.gpus.count == 4 })

            let store = DispatchStore(database: db)
            let work = try await store.claimLaunches()
            #expect(work.count == 1 && work[0].ranks.count == 2)
            for r in ranks { try await store.markDispatched(RankKey(jobID: id, attempt: 1, rank: r.rank)) }
            #expect(try await f.job(id).state == .starting)
            #expect(try await store.claimLaunches().isEmpty)

            for r in ranks { try await f.report(r.node, ranks: [Self.running(RankKey(jobID: id, attempt: 1, rank: r.rank))]) }
            #expect(try await f.job(id).state == .running)
            #expect(try await f.scalar("SELECT sum(claimed_milli)::bigint FROM gpus", as: Int64.self) == 8000)

            // Rank 0 finishes first: the job keeps running until every rank has.
            let r0 = try #require(ranks.first { $0.rank == 0 })
            let r1 = try #require(ranks.first { $0.rank == 1 })
            let reply = try await f.report(r0.node, ranks: [Self.exited(RankKey(jobID: id, attempt: 1, rank: 0), 0)])
            #expect(reply.acknowledged == [RankKey(jobID: id, attempt: 1, rank: 0)])
            #expect(try await f.job(id).state == .running)
            try await f.report(r1.node, ranks: [Self.exited(RankKey(jobID: id, attempt: 1, rank: 1), 0)])
            let done = try await f.job(id)
            #expect(done.state == .succeeded && done.exitCode == 0)
            #expect(try await f.scalar("SELECT sum(claimed_milli)::bigint FROM gpus", as: Int64.self) == 0)
            // One closed charge row per rank, on its node, with its GPUs.
            #expect(
                try await f.scalar("SELECT count(*) FROM usage WHERE ended_at IS NOT NULL AND NOT credited AND node IS NOT NULL", as: Int.self) == 2)
            #expect(try await f.scalar("SELECT sum(gpu_milli)::bigint FROM usage", as: Int64.self) == 8000)
        }
    }

    @Test("a rank that exits 3 stops its gang and ends the job failed with exit code 3")
    func failingRank() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let id = try await f.submit(JobSpec(name: "g", org: "lab", pool: "h200", nodes: 2, gpusPerNode: 4, command: "exit 3"))
            try await f.schedule()
            let ranks = try #require(try await f.job(id).attempts.first?.nodes)
            let store = DispatchStore(database: db)
            for r in ranks {
                try await store.markDispatched(RankKey(jobID: id, attempt: 1, rank: r.rank))
                try await f.report(r.node, ranks: [Self.running(RankKey(jobID: id, attempt: 1, rank: r.rank))])
            }
            let failing = ranks[1]
            try await f.report(failing.node, ranks: [Self.exited(RankKey(jobID: id, attempt: 1, rank: failing.rank), 3)])
            // The other rank is asked to stop; the job ends once it has.
            let stops = try await store.claimStops()
            #expect(stops.map(\.key) == [RankKey(jobID: id, attempt: 1, rank: ranks[0].rank)])
            try await f.report(ranks[0].node, ranks: [RankStatus(key: stops[0].key, state: .exited, exitCode: 143, signal: 15)])
            let job = try await f.job(id)
            #expect(job.state == .failed)
            #expect(job.exitCode == 3)
            #expect(job.reason?.contains("exited with code 3") == true)
        }
    }

    @Test("cancelling a queued job ends it at once; a running one once its ranks have stopped")
    func cancel() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1"])
            let jobs = JobStore(database: db)
            let running = try await f.submit(JobSpec(name: "r", org: "lab", pool: "h200", gpusPerNode: 8, command: "sleep 600"))
            let queued = try await f.submit(JobSpec(name: "q", org: "lab", pool: "h200", gpusPerNode: 8, command: "sleep 600"))
            try await f.schedule()
            #expect(try await f.job(queued).reason?.hasPrefix("capacity") == true)
            #expect(try await jobs.cancel(queued, by: f.op, scope: .all).state == .cancelled)

            let key = RankKey(jobID: running, attempt: 1, rank: 0)
            try await DispatchStore(database: db).markDispatched(key)
            try await f.report("n1", ranks: [Self.running(key)])
            #expect(try await jobs.cancel(running, by: f.op, scope: .all).state == .running)
            #expect(try await DispatchStore(database: db).claimStops().map(\.key) == [key])
            // Its start as recorded by a transaction that committed after the closing one began (that one's now()
            // is earlier): the charge ends when it began, never before (seen cancelling arrays while ranks started).
            // The ledger's own trigger forbids moving a start, so it is moved with triggers off.
            try await db.transaction { tx in
                try await tx.query("SET LOCAL session_replication_role = replica")
                try await tx.query("UPDATE usage SET started_at = now() + interval '1 hour' WHERE job_id = \(running)")
            }
            try await f.report("n1", ranks: [RankStatus(key: key, state: .exited, exitCode: 143, signal: 15)])
            #expect(try await f.job(running).state == .cancelled)
            let ordered = try await db.query("SELECT bool_and(ended_at = started_at) FROM usage WHERE job_id = \(running)").decode(Bool.self)
            #expect(try await ordered.first { _ in true } == true)
        }
    }

    @Test("a node without heartbeats is lost; its job is requeued and placed on another node")
    func nodeLost() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let id = try await f.submit(JobSpec(name: "big", org: "lab", pool: "h200", gpusPerNode: 8, command: "sleep 600"))
            try await f.schedule()
            let node = try #require(try await f.job(id).attempts.first?.nodes.first?.node)
            try await db.query("UPDATE nodes SET last_heartbeat = now() - interval '1 minute' WHERE name = \(node)")
            #expect(try await NodeStore(database: db).markLostNodes(timeoutSeconds: 30).lost == [node])
            let requeued = try await f.job(id)
            #expect(requeued.state == .queued)
            #expect(requeued.attempts.first?.state == .lost)
            #expect(requeued.reason?.contains("node \(node) lost") == true)
            #expect(try await f.schedule() == [id])
            let again = try await f.job(id)
            #expect(again.attempts.count == 2)
            #expect(again.attempts[1].nodes.first?.node != node)
            // The lost node's agent comes back still running the old rank: it learns that nothing of it is live, and
            // the node stays out of service until the agent shows the orphan gone.
            let orphan = RankKey(jobID: id, attempt: 1, rank: 0)
            let reply = try await f.report(node, ranks: [Self.running(orphan)])
            #expect(reply.live.isEmpty)
            #expect(try await NodeStore(database: db).list().first { $0.name == node }?.state == .lost)
            _ = try await f.report(node, ranks: [RankStatus(key: orphan, state: .exited, exitCode: 143, signal: 15)])
            #expect(try await NodeStore(database: db).list().first { $0.name == node }?.state == .ready)
        }
    }

    @Test("infrastructure endings spend no attempt: maxAttempts 2, never delivered three times, still queued; --no-requeue fails at the first")
    func infrastructureEndingsAreFree() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1"])
            let id = try await f.submit(JobSpec(name: "x", org: "lab", pool: "h200", gpusPerNode: 1, command: "true", maxAttempts: 2))
            for attempt in 1...3 {
                try await f.schedule()
                let failedOut = try await DispatchStore(database: db).dispatchFailed(
                    jobID: id, attempt: attempt, node: "n1", error: "refused", maxTries: 1)
                #expect(failedOut)
            }
            let job = try await f.job(id)
            #expect(job.state == .queued && job.attempts.count == 3, "\(job.state) \(job.reason ?? "")")
            let once = try await f.submit(JobSpec(name: "y", org: "lab", pool: "h200", gpusPerNode: 1, command: "true", maxAttempts: 1))
            try await f.schedule()
            let attempt = try #require(try await f.job(once).attempts.first?.number)
            #expect(try await DispatchStore(database: db).dispatchFailed(jobID: once, attempt: attempt, node: "n1", error: "refused", maxTries: 1))
            let never = try await f.job(once)
            #expect(never.state == .failed && never.reason?.contains("not requeued (maxAttempts 1, --no-requeue)") == true, "\(never.reason ?? "")")
        }
    }

    @Test("submissions are checked against the database: pool, organisation, restriction, class, size")
    func submitValidation() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            func field(_ spec: JobSpec, as p: Principal? = nil) async -> String? {
                do {
                    _ = try await f.submit(spec, as: p)
                    return nil
                } catch let StoreError.invalid(field, _) {
                    return field
                } catch let StoreError.forbidden(message) {
                    return "forbidden: \(message)"
                } catch {
                    return "\(error)"
                }
            }
            #expect(await field(JobSpec(name: "x", org: "lab", pool: "nope", command: "true")) == "pool")
            #expect(await field(JobSpec(name: "x", org: "nobody", pool: "h200", command: "true")) == "org")
            #expect(await field(JobSpec(name: "x", pool: "h200", command: "true")) == "org")
            #expect(await field(JobSpec(name: "x", org: "lab", pool: "h200", gpusPerNode: 16, command: "true")) == "gpusPerNode")
            #expect(await field(JobSpec(name: "x", org: "lab", pool: "h200", priorityClass: "vip", command: "true")) == "priorityClass")
            #expect(
                await field(JobSpec(name: "x", org: "lab", pool: "h200", priorityClass: "short", timeLimitSeconds: 7200, command: "true"))
                    == "timeLimit")
            #expect(await field(JobSpec(name: "x", org: "lab", pool: "secure", command: "true"))?.hasPrefix("forbidden") == true)
            let member = Principal(name: "alice", role: .member, org: "lab")
            #expect(await field(JobSpec(name: "x", org: "defense", pool: "h200", command: "true"), as: member)?.hasPrefix("forbidden") == true)
            #expect(await field(JobSpec(name: "x", pool: "h200", command: "true"), as: member) == nil)
            // Nothing but the member's job was stored.
            #expect(try await f.scalar("SELECT count(*) FROM jobs", as: Int.self) == 1)
        }
    }
}

@Suite("Time limits", databaseTests)
struct TimeLimitTests {
    @Test("an attempt past its time limit is stopped and the job ends failed, saying timeout")
    func timeout() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1"])
            let id = try await f.submit(JobSpec(name: "t", org: "lab", pool: "h200", gpusPerNode: 1, timeLimitSeconds: 60, command: "sleep 600"))
            try await f.schedule()
            let key = RankKey(jobID: id, attempt: 1, rank: 0)
            try await DispatchStore(database: db).markDispatched(key)
            try await f.report("n1", ranks: [RankStatus(key: key, state: .running)])
            try await SchedulerStore(database: db).stopOverdue()
            #expect(try await DispatchStore(database: db).claimStops().isEmpty)  // not yet
            try await db.query("UPDATE attempts SET started_at = now() - interval '61 seconds' WHERE job_id = \(id)")
            try await SchedulerStore(database: db).stopOverdue()
            #expect(try await DispatchStore(database: db).claimStops().map(\.key) == [key])
            try await f.report("n1", ranks: [RankStatus(key: key, state: .exited, exitCode: 143, signal: 15)])
            let job = try await f.job(id)
            #expect(job.state == .failed)
            #expect(job.reason?.hasPrefix("timeout") == true)
        }
    }

    @Test("the shapes of the attempts placed lately are the history the fragmentation-aware strategy learns from")
    func recentShapes() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            _ = try await f.submit(JobSpec(name: "g", org: "lab", pool: "h200", nodes: 2, gpusPerNode: 4, cpuMilliPerNode: 8000, command: "true"))
            _ = try await f.submit(JobSpec(name: "s", org: "lab", pool: "h200", gpuModel: ["H200"], gpuMilli: 500, command: "true"))
            _ = try await f.submit(JobSpec(name: "q", org: "lab", pool: "h200", gpusPerNode: 8, command: "true"))  // no room left
            #expect(try await f.schedule().count == 2)
            let mix = try await SchedulerStore(database: db).recentShapes()
            // The gang counts once per node; the job still queued is not history; the models a job accepts are kept.
            #expect(mix.weights == [TaskShape(gpus: 4, cpuMilli: 8000): 2, TaskShape(gpus: 0, milli: 500, models: ["H200"]): 1])
            // Attempts older than the look-back are forgotten.
            _ = try await db.query("UPDATE attempts SET placed_at = now() - interval '2 days'")
            #expect(try await SchedulerStore(database: db).recentShapes().isEmpty)
        }
    }
}
