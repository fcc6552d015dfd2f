import AllotCore
import AllotDatabaseTesting
import AllotStore
import Foundation
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
}
