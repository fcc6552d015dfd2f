import AllotCore
import AllotDatabaseTesting
import AllotServer
import AllotStore
import Foundation
import PostgresNIO
import Testing

/// Defragmentation end to end on PostgreSQL: the plan, the stops it asks for, the set-aside nodes, the audit
/// and the policy's limit.
@Suite("Defragmentation: scattered capacity gathered by moving movable work", databaseTests, .serialized)
struct DefragmentationFlowTests {
    static func setUp(_ db: Database, movesPerHour: Int) async throws {
        _ = try await PolicyStore(database: db).apply(
            Policy(
                pools: [Pool(name: "h200")],
                organizations: [
                    Organization(name: "a", allocations: [Allocation(pool: "h200", guaranteedGPUs: 24, limitGPUs: 24, gpuHours: 10_000)])
                ],
                priorityClasses: [PriorityClass(name: "standard", value: 100)],
                defaults: PolicyDefaults(
                    priorityClass: "standard", gracePeriodSeconds: 5, defragmentMovesPerHour: movesPerHour, defragmentMinimumRuntimeSeconds: 0)),
            by: AllocationTests.op, dryRun: false)
        for i in 1...3 {
            _ = try await NodeStore(database: db).add(name: "n\(i)", pool: "h200", block: nil, by: AllocationTests.op)
            _ = try await AllocationTests.report(db, "n\(i)", [], gpus: 8)
        }
    }

    static func submit(_ db: Database, gpus: Int, movable: Bool) async throws -> Int64 {
        try await JobStore(database: db).submit(
            JobSpec(name: "a-\(gpus)", org: "a", pool: "h200", gpusPerNode: gpus, command: "x", movable: movable ? true : nil), by: AllocationTests.op
        ) { _, _ in nil }
    }

    /// Volcano's issue #3948 on three 8-GPU nodes: 24 movable 1-GPU jobs fill them, then one ends on n1, two on
    /// n2 and one on n3, leaving 7, 6 and 7 GPUs used: 4 free in all, no node with 4. Returns the ones still running.
    static func scatter(_ db: Database, _ loop: SchedulerLoop) async throws -> [RunningAttempt] {
        for _ in 0..<24 { _ = try await Self.submit(db, gpus: 1, movable: true) }
        try await loop.cycle()
        try await AllocationTests.startAll(db)
        var running = try await SchedulerStore(database: db).running()
        #expect(running.count == 24)
        for (node, count) in [("n1", 1), ("n2", 2), ("n3", 1)] {
            for a in running.filter({ $0.ranks[0].node == node }).prefix(count) {
                _ = try await AllocationTests.report(
                    db, node, [RankStatus(key: RankKey(jobID: a.jobID, attempt: a.attempt, rank: 0), state: .exited, exitCode: 0)])
            }
        }
        running = try await SchedulerStore(database: db).running()
        #expect(running.count == 20)
        return running
    }

    @Test(
        "7, 6 and 7 of 8 GPUs used: a 4-GPU job gets a plan moving 2 jobs off n2, shown, audited; the moved jobs requeue keeping their submit time and run elsewhere; the job takes n2"
    )
    func volcanoEndToEnd() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(db, movesPerHour: 4)
            let loop = AllocationTests.loop(db)
            let before = try await Self.scatter(db, loop)
            let onN2 = Set(before.filter { $0.ranks[0].node == "n2" }.map(\.jobID))
            let job = try await Self.submit(db, gpus: 4, movable: false)
            try await loop.cycle()

            // The plan: two of n2's jobs, whose stops are asked for; the job says what it waits for.
            let stops = try await DispatchStore(database: db).claimStops()
            #expect(stops.count == 2)
            #expect(stops.allSatisfy { $0.node == "n2" && onN2.contains($0.key.jobID) })
            let waiting = try await AllocationTests.job(db, job)
            let moved = stops.map(\.key.jobID).sorted()
            #expect(waiting.reason == "waiting for defragmentation: moving jobs \(moved.map(String.init).joined(separator: ", ")) from n2")
            #expect(waiting.reasonCode == "defragmentation")
            let audit = try await AuditStore(database: db).list(since: nil)
            #expect(audit.contains { $0.action == "job.defragment" && $0.target == "job/\(job)" })
            let submittedBefore = try await moved.asyncMap { try await AllocationTests.job(db, $0).submittedAt }

            // While the moved work stops, another cycle makes no second plan and puts nothing on n2, though a
            // 1-GPU job would fit on its 2 free GPUs: it takes the one free on n1 or n3, then ends.
            let other = try await Self.submit(db, gpus: 1, movable: false)
            try await loop.cycle()
            // (The moved attempts' stops are sent again after 5 s until their agents report: those are not new.)
            #expect(try await DispatchStore(database: db).claimStops().filter { !moved.contains($0.key.jobID) }.isEmpty)
            try await AllocationTests.startAll(db)
            let during = try await SchedulerStore(database: db).running()
            let otherAttempt = try #require(during.first { $0.jobID == other })
            #expect(["n1", "n3"].contains(otherAttempt.ranks[0].node))
            _ = try await AllocationTests.report(
                db, otherAttempt.ranks[0].node,
                [RankStatus(key: RankKey(jobID: other, attempt: otherAttempt.attempt, rank: 0), state: .exited, exitCode: 0)])

            for s in stops {
                _ = try await AllocationTests.report(db, s.node, [RankStatus(key: s.key, state: .exited, exitCode: 143, signal: 15)])
            }
            for id in moved {
                let j = try await AllocationTests.job(db, id)
                #expect(j.state == .queued)
                #expect(j.attempts.first?.state == .preempted)
                #expect(j.attempts.first?.reason?.contains("moved by defragmentation: making room for job \(job) on n2") == true)
            }
            #expect(try await moved.asyncMap { try await AllocationTests.job(db, $0).submittedAt } == submittedBefore)

            // The next cycle: the job on n2, the moved jobs on the one GPU left free on n1 and n3; the plan done,
            // and audited so.
            try await loop.cycle()
            try await AllocationTests.startAll(db)
            let placed = try await SchedulerStore(database: db).running()
            #expect(placed.first { $0.jobID == job }?.ranks.first?.node == "n2")
            #expect(Set(moved.compactMap { id in placed.first { $0.jobID == id }?.ranks.first?.node }) == ["n1", "n3"])
            #expect(
                try await AuditStore(database: db).list(since: nil).contains { $0.action == "job.defragment.placed" && $0.target == "job/\(job)" })
            let outcome = try await db.query("SELECT outcome FROM defragmentations WHERE job_id = \(job)").decode(String?.self).array()
            #expect(outcome == ["placed"])
        }
    }

    @Test("the policy's moves per hour bound every plan: with one move allowed, a job needing two gets none and waits for capacity")
    func limitPerHour() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(db, movesPerHour: 1)
            let loop = AllocationTests.loop(db)
            _ = try await Self.scatter(db, loop)
            let job = try await Self.submit(db, gpus: 4, movable: false)
            try await loop.cycle()
            #expect(try await DispatchStore(database: db).claimStops().isEmpty)
            #expect(try await AllocationTests.job(db, job).reasonCode == "capacity")
            #expect(try await db.query("SELECT count(*) FROM defragmentations").decode(Int.self).array() == [0])
        }
    }

    @Test("work that did not say it may be moved, of a class that is not preemptible, is never moved")
    func unmovableStays() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(db, movesPerHour: 10)
            let loop = AllocationTests.loop(db)
            _ = try await Self.scatter(db, loop)
            try await db.query("UPDATE jobs SET movable = false")
            let job = try await Self.submit(db, gpus: 4, movable: false)
            try await loop.cycle()
            #expect(try await DispatchStore(database: db).claimStops().isEmpty)
            #expect(try await AllocationTests.job(db, job).reasonCode == "capacity")
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await transform(e)) }
        return out
    }
}

extension AsyncSequence {
    func array() async throws -> [Element] { try await self.reduce(into: []) { $0.append($1) } }
}
