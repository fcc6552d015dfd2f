import AllotAgent
import AllotCore
import AllotDatabaseTesting
import AllotServer
import AllotStore
import AllotTesting
import Foundation
import Logging
import PostgresNIO
import Testing

/// Allocations at work: guarantees, borrowing and reclaim, budgets, and the ledger behind `allot quota`.
@Suite("Allocations: borrow, reclaim, budget, ledger", databaseTests, .serialized)
struct AllocationTests {
    static let op = Principal(name: "op", role: .operator)

    static func setUp(_ db: Database, orgs: [Organization], nodes: Int = 2, gpus: Int = 8) async throws {
        _ = try await PolicyStore(database: db).apply(
            Policy(
                pools: [Pool(name: "h200")], organizations: orgs, priorityClasses: [PriorityClass(name: "standard", value: 100)],
                defaults: PolicyDefaults(priorityClass: "standard", gracePeriodSeconds: 5)),
            by: op, dryRun: false)
        for i in stride(from: 1, through: nodes, by: 1) {
            _ = try await NodeStore(database: db).add(name: "n\(i)", pool: "h200", block: nil, by: op)
            _ = try await Self.report(db, "n\(i)", [], gpus: gpus)
        }
    }

    static func report(_ db: Database, _ node: String, _ ranks: [RankStatus], gpus: Int? = nil) async throws -> HeartbeatReply {
        var count = gpus ?? 8
        if gpus == nil, let known = try await db.query("SELECT count(*) FROM gpus WHERE node = \(node)").decode(Int.self).first(where: { _ in true }),
            known > 0
        {
            count = known
        }
        return try await AgentStore(database: db).report(
            AgentReport(
                node: node, agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20,
                gpus: (0..<count).map { GPUInfo(index: $0, uuid: "\(node)-\($0)", model: "H200", memoryMiB: 1) }, ranks: ranks),
            from: Principal(name: "agent:\(node)", role: .agent, node: node))
    }

    static func loop(_ db: Database) -> SchedulerLoop {
        SchedulerLoop(
            database: db, placer: Placer(), leadership: Leadership(), wake: Wakeup(), dispatch: Wakeup(), interval: .seconds(1), metrics: Metrics(),
            logger: db.logger)
    }

    static func submit(_ db: Database, _ org: String, nodes: Int = 1, gpus: Int, limit: Int64? = nil) async throws -> Int64 {
        try await JobStore(database: db).submit(
            JobSpec(name: "\(org)-\(gpus)", org: org, pool: "h200", nodes: nodes, gpusPerNode: gpus, timeLimitSeconds: limit, command: "x"), by: op
        ) { _, _ in nil }
    }

    /// Acts as the agents: every placed rank starts running.
    static func startAll(_ db: Database) async throws {
        let store = DispatchStore(database: db)
        for work in try await store.claimLaunches() {
            for r in work.ranks {
                let key = RankKey(jobID: work.jobID, attempt: work.attempt, rank: r.rank)
                try await store.markDispatched(key)
                _ = try await Self.report(db, r.node, [RankStatus(key: key, state: .running)])
            }
        }
    }

    static func job(_ db: Database, _ id: Int64) async throws -> JobView { try await JobStore(database: db).show(id, scope: .all) }

    @Test("A idle, B borrows: when A asks for its guarantee, B's borrowed jobs are preempted and requeued, A runs, B keeps its own")
    func borrowAndReclaim() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(
                db,
                orgs: [
                    Organization(name: "a", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 8, gpuHours: 10_000)]),
                    Organization(name: "b", allocations: [Allocation(pool: "h200", guaranteedGPUs: 4, limitGPUs: 16, gpuHours: 10_000)]),
                ], nodes: 3, gpus: 4)
            let loop = Self.loop(db)
            // B runs 12 GPUs of work: its own 4, and 8 borrowed from A's idle guarantee.
            var bJobs: [Int64] = []
            for _ in 0..<3 {
                bJobs.append(try await Self.submit(db, "b", gpus: 4))
                try await loop.cycle()
                try await Self.startAll(db)
                try await Task.sleep(for: .milliseconds(20))  // distinct start times: youngest first must mean something
            }
            let bAttempts = try await SchedulerStore(database: db).running()
            #expect(bAttempts.filter(\.borrowing).count == 2)
            #expect(!bAttempts.first { $0.jobID == bJobs[0] }!.borrowing)
            var quota = try await QuotaStore(database: db).rows()
            #expect(quota.first { $0.org == "b" }?.borrowedGPUs == 8)
            #expect(quota.first { $0.org == "a" }?.lentGPUs == 8)

            // A asks for 8 (two nodes × 4): nothing is free, so B's two borrowed jobs are asked to stop; its own is not.
            let aJob = try await Self.submit(db, "a", nodes: 2, gpus: 4)
            try await loop.cycle()
            let stops = try await DispatchStore(database: db).claimStops()
            #expect(Set(stops.map(\.key.jobID)) == Set(bJobs[1...]))
            for s in stops {
                _ = try await Self.report(db, s.node, [RankStatus(key: s.key, state: .exited, exitCode: 143, signal: 15)])
            }
            for id in bJobs[1...] {
                let j = try await Self.job(db, id)
                #expect(j.state == .queued)
                #expect(j.attempts.first?.state == .preempted)
                #expect(j.reason?.contains("reclaims its guaranteed GPUs") == true)
            }
            // A runs; B's own job never stopped.
            try await loop.cycle()
            try await Self.startAll(db)
            #expect(try await Self.job(db, aJob).state == .running)
            #expect(try await Self.job(db, bJobs[0]).state == .running)
            let seconds =
                try await db.query(
                    "SELECT extract(epoch FROM satisfied_at - requested_at)::float8 FROM reclaims WHERE job_id = \(aJob)"
                ).decode(Double?.self).first { _ in true } ?? nil
            #expect(seconds != nil && seconds! < 300)  // within the default reclaim deadline
            quota = try await QuotaStore(database: db).rows()
            #expect(quota.first { $0.org == "a" }?.inUseGPUs == 8)
            #expect((quota.first { $0.org == "b" }?.inUseGPUs ?? 0) >= 4)
        }
    }

    @Test("a job whose GPUs × time limit exceed what is left of the entitlement waits with reason budget; a shorter one runs")
    func budget() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(
                db, orgs: [Organization(name: "u", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 8, gpuHours: 10)])])
            let long = try await Self.submit(db, "u", gpus: 4, limit: 4 * 3600)  // 16 GPU-hours > 10
            let short = try await Self.submit(db, "u", gpus: 4, limit: 3600)  // 4 GPU-hours
            try await Self.loop(db).cycle()
            let waiting = try await Self.job(db, long)
            #expect(waiting.state == .queued)
            #expect(waiting.reason?.hasPrefix("budget") == true, "\(waiting.reason ?? "-")")
            #expect(try await Self.job(db, short).state == .placed)
        }
    }

    @Test("a job waiting for capacity gets an estimated start from the running jobs' time limits")
    func estimatedStart() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(
                db, orgs: [Organization(name: "u", allocations: [Allocation(pool: "h200", guaranteedGPUs: 16, limitGPUs: 16, gpuHours: 10_000)])],
                nodes: 1)
            let loop = Self.loop(db)
            _ = try await Self.submit(db, "u", gpus: 8, limit: 7200)
            try await loop.cycle()
            try await Self.startAll(db)
            let waiting = try await Self.submit(db, "u", gpus: 8, limit: 600)
            try await loop.cycle()
            let job = try await Self.job(db, waiting)
            let eta = try #require(job.estimatedStart)
            // The first job's start plus its 2 h limit; a minute's slack for a loaded machine between its start and now.
            #expect(abs(eta.timeIntervalSinceNow - 7200) < 60)
        }
    }

    @Test("a job beyond its organisation's limit waits with reason quota; an organisation without an allocation is refused at submission")
    func limitAndNoAllocation() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(
                db,
                orgs: [
                    Organization(name: "u", allocations: [Allocation(pool: "h200", guaranteedGPUs: 2, limitGPUs: 4, gpuHours: 1000)]),
                    Organization(name: "none"),
                ])
            _ = try await Self.submit(db, "u", gpus: 4)
            let over = try await Self.submit(db, "u", gpus: 1)
            try await Self.loop(db).cycle()
            #expect(try await Self.job(db, over).reason?.hasPrefix("quota") == true)
            await #expect(throws: StoreError.invalid(field: "pool", message: "none has no allocation in force in pool h200")) {
                _ = try await Self.submit(db, "none", gpus: 1)
            }
        }
    }

    @Test("the ledger is exact: GPU-hours are the sum over attempts of GPUs × duration, running ones counted live, lost time credited")
    func ledger() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(
                db, orgs: [Organization(name: "u", allocations: [Allocation(pool: "h200", guaranteedGPUs: 16, limitGPUs: 16, gpuHours: 1000)])])
            let loop = Self.loop(db)
            let ids = [try await Self.submit(db, "u", gpus: 4), try await Self.submit(db, "u", gpus: 2), try await Self.submit(db, "u", gpus: 1)]
            try await loop.cycle()
            try await Self.startAll(db)
            // Give the attempts known histories: 4 GPUs for 90 minutes (ended), 2 GPUs running for 30 minutes,
            // 1 GPU for 2 hours ended by a lost node (credited, not charged). The ledger refuses such rewrites, so
            // the test, as the database's owner, lifts its trigger to forge them.
            try await db.query("ALTER TABLE usage DISABLE TRIGGER usage_append_only")
            try await db.query(
                "UPDATE usage SET started_at = now() - interval '2 hours', ended_at = now() - interval '30 minutes' WHERE job_id = \(ids[0])")
            try await db.query("UPDATE usage SET started_at = now() - interval '30 minutes' WHERE job_id = \(ids[1])")
            try await db.query(
                """
                UPDATE usage SET started_at = now() - interval '3 hours', ended_at = now() - interval '1 hour', credited = true, cause = 'node lost'
                WHERE job_id = \(ids[2])
                """)
            try await db.query("ALTER TABLE usage ENABLE TRIGGER usage_append_only")
            // Nothing is kept in allotd's memory: the rows come from the ledger, so a restart changes nothing.
            let row = try #require(try await QuotaStore(database: db).rows().first)
            #expect(abs(row.gpuHoursUsed - (4 * 1.5 + 2 * 0.5)) < 2.0 / 3600)  // to the second
            #expect(abs(row.creditedGPUHours - 2.0) < 1.0 / 3600)
            let sum =
                try await db.query(
                    "SELECT sum(gpu_milli::float8 / 1000 * extract(epoch FROM coalesce(ended_at, now()) - started_at) / 3600) FROM usage WHERE NOT credited"
                ).decode(Double.self).first { _ in true } ?? -1
            #expect(abs(row.gpuHoursUsed - sum) < 2.0 / 3600)
        }
    }
}

@Suite("Draining inference", databaseTests)
struct DrainInferenceTests {
    @Test("an inference replica on a draining node is started elsewhere before it is stopped; the job never leaves running")
    func startedElsewhereFirst() async throws {
        try await TestDatabase.with { db in
            try await AllocationTests.setUp(
                db, orgs: [Organization(name: "u", allocations: [Allocation(pool: "h200", guaranteedGPUs: 16, limitGPUs: 16, gpuHours: 10_000)])],
                nodes: 2)
            let loop = AllocationTests.loop(db)
            let id = try await JobStore(database: db).submit(
                JobSpec(name: "serve", org: "u", kind: .inference, pool: "h200", gpusPerNode: 2, command: "serve"), by: AllocationTests.op
            ) { _, _ in nil }
            try await loop.cycle()
            try await AllocationTests.startAll(db)
            let first = try #require(try await AllocationTests.job(db, id).attempts.first?.nodes.first?.node)
            let lifecycle = NodeLifecycleStore(database: db)
            _ = try await lifecycle.drain([first], reason: "firmware", deadlineSeconds: 3600, by: AllocationTests.op)
            try await loop.cycle()
            var job = try await AllocationTests.job(db, id)
            #expect(job.state == .running)
            #expect(job.attempts.count == 2)
            #expect(job.attempts[1].nodes.first?.node != first)
            // Before the replacement runs, the old one is not touched.
            #expect(try await DispatchStore(database: db).claimStops().isEmpty)
            try await AllocationTests.startAll(db)
            let stops = try await DispatchStore(database: db).claimStops()
            #expect(stops.map(\.key.attempt) == [1])
            _ = try await AllocationTests.report(db, first, [RankStatus(key: stops[0].key, state: .exited, exitCode: 0)])
            job = try await AllocationTests.job(db, id)
            #expect(job.state == .running)
            #expect(job.attempts.map(\.state) == [.drained, .running])
            try await lifecycle.advanceDrains()
            #expect(try await NodeStore(database: db).list().first { $0.name == first }?.state == .drained)
            // The replacement is now the job's attempt: cancelling ends the job.
            _ = try await JobStore(database: db).cancel(id, by: AllocationTests.op, scope: .all)
            for s in try await DispatchStore(database: db).claimStops() {
                _ = try await AllocationTests.report(db, s.node, [RankStatus(key: s.key, state: .exited, exitCode: 143, signal: 15)])
            }
            #expect(try await AllocationTests.job(db, id).state == .cancelled)
        }
    }
}

@Suite("Faults from nvidia-smi reach placement", databaseTests)
struct FaultFixtureTests {
    @Test("the H200 fault fixture, reported by an agent, quarantines its faulty GPUs and placement skips them")
    func fixtureQuarantines() async throws {
        let xml = try Data(contentsOf: URL(fileURLWithPath: Repository.root + "/Tests/AllotAgentTests/Fixtures/h200-faults.xml"))
        let gpus = try GPUDiscovery.parse(xml: xml)
        try await TestDatabase.with { db in
            try await AllocationTests.setUp(
                db, orgs: [Organization(name: "u", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 8, gpuHours: 1000)])],
                nodes: 0)
            _ = try await NodeStore(database: db).add(name: "f1", pool: "h200", block: nil, by: AllocationTests.op)
            _ = try await AgentStore(database: db).report(
                AgentReport(node: "f1", agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20, gpus: gpus, ranks: []),
                from: Principal(name: "agent:f1", role: .agent, node: "f1"))
            let detail = try await NodeStore(database: db).detail("f1")
            #expect(detail.node.gpus.map(\.health) == [.healthy, .quarantined, .quarantined])
            #expect(detail.healthEvents.map(\.gpuIndex) == [1, 2])  // recorded from the agent's first report
            let one = try await AllocationTests.submit(db, "u", gpus: 1)
            let two = try await AllocationTests.submit(db, "u", gpus: 1)
            try await AllocationTests.loop(db).cycle()
            #expect(try await AllocationTests.job(db, one).attempts.first?.nodes.first?.gpus == [0])
            #expect(try await AllocationTests.job(db, two).state == .queued)
        }
    }
}
