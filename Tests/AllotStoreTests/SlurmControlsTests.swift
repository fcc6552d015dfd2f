import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import Foundation
import Testing

/// Job arrays, dependencies and the everyday controls (hold, release, requeue, update), against PostgreSQL
/// and the real scheduling cycle.
@Suite("Arrays, dependencies and job controls", databaseTests)
struct SlurmControlsTests {
    static let alice = Principal(name: "alice", role: .member, org: "lab")

    static func cycle(_ db: Database) async throws {
        _ = try await SchedulingCycle(store: SchedulerStore(database: db), placer: Placer(), logger: db.logger).run()
    }

    /// Ends the job's live attempt with `code` as its agents would report it.
    static func end(_ f: StoreFixture, _ id: Int64, code: Int = 0) async throws {
        let job = try await JobStore(database: f.db).show(id, scope: .all)
        guard let attempt = job.attempts.last else { return }
        for rank in attempt.nodes {
            _ = try await f.report(
                rank.node, ranks: [RankStatus(key: RankKey(jobID: id, attempt: attempt.number, rank: rank.rank), state: .exited, exitCode: code)])
        }
    }

    static func live(_ jobs: [JobView]) -> [JobView] { jobs.filter { [.placed, .starting, .running].contains($0.state) } }

    @Test("an array with a %2 limit never runs more than 2 tasks at once, lowest indices first, until every task ran")
    func arrayLimit() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let store = JobStore(database: db)
            let first = try await f.submit(
                JobSpec(name: "sweep", pool: nil, gpusPerNode: 1, command: "true", array: try JobArray.parse("0-10:2%2").get()), as: Self.alice)
            var order: [Int] = []
            for round in 0..<10 {
                try await Self.cycle(db)
                let tasks = try await store.list(state: nil, org: "lab", scope: .all).filter { $0.arrayJobID == first }
                #expect(tasks.count == 6 && Set(tasks.compactMap(\.arrayTaskID)) == [0, 2, 4, 6, 8, 10])
                let running = Self.live(tasks)
                #expect(running.count <= 2, "round \(round): \(running.map(\.arrayTaskID))")
                for t in tasks where t.state == .queued && running.count == 2 {
                    #expect(t.reasonCode == "array_limit" && t.reason?.contains("at most 2 tasks of array \(first)") == true, "\(t.reason ?? "-")")
                }
                if running.isEmpty { break }
                order += running.compactMap(\.arrayTaskID).sorted()
                for t in running { try await Self.end(f, t.id) }
            }
            #expect(order == [0, 2, 4, 6, 8, 10])
            let all = try await store.list(state: nil, org: "lab", scope: .all).filter { $0.arrayJobID == first }
            #expect(all.allSatisfy { $0.state == .succeeded })
        }
    }

    @Test("afterok on a failed job never starts and says why (DependencyNeverSatisfied); afterok on a success starts; afterany waits for the end")
    func dependencies() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let store = JobStore(database: db)
            let a = try await f.submit(JobSpec(name: "a", pool: "h200", gpusPerNode: 1, command: "x"), as: Self.alice)
            let b = try await f.submit(JobSpec(name: "b", pool: "h200", gpusPerNode: 1, command: "x"), as: Self.alice)
            let afterOK = try await f.submit(
                JobSpec(name: "c", pool: "h200", gpusPerNode: 1, command: "x", dependency: try JobDependency.parse("afterok:\(a)").get()),
                as: Self.alice)
            let afterFail = try await f.submit(
                JobSpec(name: "d", pool: "h200", gpusPerNode: 1, command: "x", dependency: try JobDependency.parse("afterok:\(b)").get()),
                as: Self.alice)
            let afterAny = try await f.submit(
                JobSpec(name: "e", pool: "h200", gpusPerNode: 1, command: "x", dependency: try JobDependency.parse("afterany:\(a):\(b)").get()),
                as: Self.alice)
            try await Self.cycle(db)
            for id in [afterOK, afterFail, afterAny] {
                let j = try await store.show(id, scope: .all)
                #expect(j.state == .queued && j.reasonCode == "dependency", "\(j.reason ?? "-")")
            }
            try await Self.end(f, a, code: 0)
            try await Self.end(f, b, code: 3)
            try await Self.cycle(db)
            #expect(try await store.show(afterOK, scope: .all).state == .placed)
            #expect(try await store.show(afterAny, scope: .all).state == .placed)
            let never = try await store.show(afterFail, scope: .all)
            #expect(never.state == .cancelled, "\(never)")
            #expect(
                never.reason?.contains("DependencyNeverSatisfied") == true && never.reason?.contains("job \(b) ended failed") == true,
                "\(never.reason ?? "-")")

            // A job another organisation cannot see is not a dependency it may name.
            let mallory = Principal(name: "mallory", role: .member, org: "defense")
            await #expect(throws: StoreError.self) {
                _ = try await f.submit(
                    JobSpec(name: "x", pool: "secure", gpusPerNode: 1, command: "x", dependency: try JobDependency.parse("afterok:\(a)").get()),
                    as: mallory)
            }
        }
    }

    @Test("singleton: one job of a name and user at a time")
    func singleton() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let store = JobStore(database: db)
            let singleton = try JobDependency.parse("singleton").get()
            let one = try await f.submit(JobSpec(name: "nightly", pool: "h200", gpusPerNode: 1, command: "x", dependency: singleton), as: Self.alice)
            let two = try await f.submit(JobSpec(name: "nightly", pool: "h200", gpusPerNode: 1, command: "x", dependency: singleton), as: Self.alice)
            try await Self.cycle(db)
            #expect(try await store.show(one, scope: .all).state == .placed)
            #expect(try await store.show(two, scope: .all).reasonCode == "dependency")
            try await Self.end(f, one)
            try await Self.cycle(db)
            #expect(try await store.show(two, scope: .all).state == .placed)
        }
    }

    @Test("hold and release; an operator's hold only an operator releases; requeue; update within the rules")
    func controls() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let store = JobStore(database: db)
            let scope = Scope.organization("lab")
            let id = try await f.submit(JobSpec(name: "j", pool: "h200", gpusPerNode: 1, timeLimitSeconds: 3600, command: "x"), as: Self.alice)
            var held = try await store.hold(id, by: Self.alice, scope: scope)
            #expect(held.heldBy == "alice" && held.reasonCode == "held_user")
            try await Self.cycle(db)
            #expect(try await store.show(id, scope: .all).state == .queued, "a held job is not placed")
            // Update while queued: a member shortens the limit, may not lengthen it; the name is free text.
            let renamed = try await store.update(id, JobUpdate(name: "run two", timeLimitSeconds: 1800), by: Self.alice, scope: scope)
            #expect(renamed.name == "run two" && renamed.timeLimitSeconds == 1800)
            await #expect(throws: StoreError.self) { _ = try await store.update(id, JobUpdate(timeLimitSeconds: 7200), by: Self.alice, scope: scope) }
            await #expect(throws: StoreError.self) {
                _ = try await store.update(id, JobUpdate(timeLimitSeconds: 7200, priorityClass: "short"), by: f.op, scope: .all)
            }

            held = try await store.hold(id, by: f.op, scope: .all)
            #expect(held.reasonCode == "held_admin")
            await #expect(throws: StoreError.self) { _ = try await store.release(id, by: Self.alice, scope: scope) }
            #expect(try await store.release(id, by: f.op, scope: .all).heldBy == nil)
            try await Self.cycle(db)
            #expect(try await store.show(id, scope: .all).state == .placed)
            await #expect(throws: StoreError.self) { _ = try await store.hold(id, by: Self.alice, scope: scope) }
            await #expect(throws: StoreError.self) { _ = try await store.update(id, JobUpdate(name: "late"), by: Self.alice, scope: scope) }

            // Requeue: the attempt is stopped, and once its rank ended the job waits again.
            _ = try await store.requeue(id, by: Self.alice, scope: scope)
            try await Self.end(f, id, code: 143)
            let again = try await store.show(id, scope: .all)
            #expect(again.state == .queued && again.reason?.contains("requeued by alice") == true, "\(again.reason ?? "-")")
            await #expect(throws: StoreError.self) { _ = try await store.requeue(id, by: Self.alice, scope: scope) }
            // Another organisation's job is not found, whatever the control.
            let mallory = Principal(name: "mallory", role: .member, org: "defense")
            await #expect(throws: StoreError.self) { _ = try await store.hold(id, by: mallory, scope: .organization("defense")) }
        }
    }

    @Test("--begin: not placed before its time, saying so (BeginTime); placed once it has come")
    func beginTime() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let store = JobStore(database: db)
            let later = try await f.submit(
                JobSpec(name: "later", pool: "h200", gpusPerNode: 1, command: "x", beginAt: Date().addingTimeInterval(3600)), as: Self.alice)
            let soon = try await f.submit(
                JobSpec(name: "soon", pool: "h200", gpusPerNode: 1, command: "x", beginAt: Date().addingTimeInterval(1)), as: Self.alice)
            try await Self.cycle(db)
            let waiting = try await store.show(later, scope: .all)
            #expect(waiting.state == .queued && waiting.reasonCode == "begin_time" && WaitReason.slurmName(code: "begin_time") == "BeginTime")
            #expect(waiting.reason?.hasPrefix("begin time: not before ") == true, "\(waiting.reason ?? "-")")
            try await Task.sleep(for: .milliseconds(1500))
            try await Self.cycle(db)
            #expect(try await store.show(soon, scope: .all).state == .placed)
            #expect(try await store.show(later, scope: .all).state == .queued)
        }
    }

    @Test("a reclaim's, drain's or requeue's stop asks the agent to warn first (--signal); a cancel does not")
    func warnFirst() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let store = JobStore(database: db)
            let dispatch = DispatchStore(database: db)
            var stops: [Int64: Bool] = [:]
            for (name, requeue) in [("requeued", true), ("cancelled", false)] {
                let id = try await f.submit(
                    JobSpec(name: name, pool: "h200", gpusPerNode: 1, command: "x", signal: JobSignal(slurm: "USR1@30")), as: Self.alice)
                try await Self.cycle(db)
                try await dispatch.markDispatched(RankKey(jobID: id, attempt: 1, rank: 0))
                if requeue {
                    _ = try await store.requeue(id, by: Self.alice, scope: .organization("lab"))
                } else {
                    _ = try await store.cancel(id, by: Self.alice, scope: .organization("lab"))
                }
                for stop in try await dispatch.claimStops() where stop.key.jobID == id { stops[id] = stop.warnFirst }
                #expect(stops[id] == requeue, "\(name)")
            }
        }
    }
}
