import AllotCore
import AllotDatabaseTesting
import AllotStore
import Foundation
import PostgresNIO
import Testing

@Suite("A scheduling cycle commits a bounded number of placements", databaseTests)
struct SchedulingCycleTests {
    @Test("over the bound, the plan's first placements in queue order are committed and the rest left to the next cycle")
    func placementsPerCycle() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            var ids: [Int64] = []
            for i in 0..<5 { ids.append(try await f.submit(JobSpec(name: "j\(i)", org: "lab", pool: "h200", gpusPerNode: 1, command: "true"))) }
            let cycle = SchedulingCycle(store: SchedulerStore(database: db), placer: Placer(), logger: db.logger, placementsPerCycle: 2)
            var placed: [[Int64]] = []
            var deferred: [Int] = []
            for _ in 0..<3 {
                let outcome = try await cycle.run()
                placed.append(outcome.placed)
                deferred.append(outcome.deferred)
            }
            #expect(placed == [Array(ids[0..<2]), Array(ids[2..<4]), [ids[4]]])
            #expect(deferred == [3, 1, 0])
            for id in ids { #expect(try await f.job(id).state == .placed) }
        }
    }

    @Test(
        "a cycle's placements are stored together: every job, attempt, rank, claim and audit record as one by one; a job cancelled meanwhile is skipped alone"
    )
    func storedTogether() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let store = SchedulerStore(database: db)
            var ids: [Int64] = []
            for i in 0..<4 {
                ids.append(
                    try await f.submit(
                        JobSpec(name: "t\(i)", org: "lab", pool: "h200", gpusPerNode: i == 3 ? 0 : 2, gpuMilli: i == 3 ? 500 : nil, command: "true")))
            }
            // Together: all four placed, each with its attempt, ranks, claims and audit record, in plan order.
            let snapshot = try await store.snapshot()
            let plan = Placer().place(snapshot.queue, on: snapshot.nodes)
            #expect(plan.placements.count == 4)
            #expect(try await store.commit(plan).placed == plan.placements.map(\.jobID))
            for id in ids { #expect(try await f.job(id).state == .placed) }
            #expect(try await f.scalar("SELECT count(*)::int FROM attempt_ranks WHERE job_id = ANY(\(ids))", as: Int.self) == 4)
            #expect(try await f.scalar("SELECT sum(milli)::int FROM gpu_claims WHERE job_id = ANY(\(ids))", as: Int.self) == 6500)
            #expect(try await f.scalar("SELECT count(*)::int FROM attempts WHERE job_id = ANY(\(ids)) AND number = 1", as: Int.self) == 4)
            var placedTargets: [String] = []
            for try await target in try await db.query("SELECT target FROM audit WHERE action = 'job.place' ORDER BY id").decode(String.self) {
                placedTargets.append(target)
            }
            #expect(placedTargets == plan.placements.map { "job/\($0.jobID)" })
            #expect(try await AuditStore(database: db).verify().intact)

            // Apart: a job cancelled between the snapshot and the commit is skipped, the others stand.
            var more: [Int64] = []
            for i in 0..<3 { more.append(try await f.submit(JobSpec(name: "u\(i)", org: "lab", pool: "h200", gpusPerNode: 1, command: "true"))) }
            let next = try await store.snapshot()
            let plan2 = Placer().place(next.queue, on: next.nodes)
            #expect(plan2.placements.count == 3)
            _ = try await JobStore(database: db).cancel(more[1], by: f.op, scope: .all)
            #expect(try await store.commit(plan2).placed == [more[0], more[2]])
            #expect(try await f.job(more[1]).state == .cancelled)
            #expect(try await f.scalar("SELECT count(*)::int FROM attempts WHERE job_id = \(more[1])", as: Int.self) == 0)
            #expect(try await f.job(more[2]).state == .placed)
        }
    }
}
