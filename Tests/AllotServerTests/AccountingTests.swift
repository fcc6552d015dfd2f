import AllotAgent
import AllotCore
import AllotDatabaseTesting
import AllotServer
import AllotStore
import AllotTesting
import Foundation
import PostgresNIO
import Testing

/// Accounting an auditor accepts: reservations held by running attempts, an append-only ledger, versioned
/// grants, and statements computed from the ledger alone that never change after the fact.
@Suite("Accounting: reservations, the append-only ledger, versioned grants, statements", databaseTests, .serialized)
struct AccountingTests {
    typealias A = AllocationTests

    static func grant(_ hours: Int64) -> [Organization] {
        [Organization(name: "u", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 8, gpuHours: hours)])]
    }

    @Test("a running attempt keeps its reservation across cycles: 10 GPU-hours, 4 GPUs × 2 h running, a 4 GPU × 1 h job waits until it ends")
    func runningReservation() async throws {
        try await TestDatabase.with { db in
            try await A.setUp(db, orgs: Self.grant(10))
            let loop = A.loop(db)
            let first = try await A.submit(db, "u", gpus: 4, limit: 7200)
            try await loop.cycle()
            try await A.startAll(db)
            // 4 GPUs × 2 h = 8 GPU-h reserved (less the second or so it has run): 10 - 8 = 2 left; the next needs 4 × 1 = 4.
            let row = try #require(try await QuotaStore(database: db).rows().first)
            #expect(abs(row.reservedGPUHours + row.gpuHoursUsed - 8) < 0.01, "\(row)")
            let second = try await A.submit(db, "u", gpus: 4, limit: 3600)
            try await loop.cycle()
            let waiting = try await A.job(db, second)
            #expect(waiting.state == .queued && waiting.reason?.hasPrefix("budget") == true, "\(waiting.reason ?? "-")")

            // What the first does not use is released when it ends.
            let node = try #require(try await A.job(db, first).attempts.first?.nodes.first?.node)
            _ = try await A.report(db, node, [RankStatus(key: RankKey(jobID: first, attempt: 1, rank: 0), state: .exited, exitCode: 0)])
            #expect(try #require(try await QuotaStore(database: db).rows().first).reservedGPUHours == 0)
            try await loop.cycle()
            #expect(try await A.job(db, second).state == .placed)
        }
    }

    @Test("the ledger is append-only: closed rows cannot be updated, no row deleted, the table not truncated; adjustments never change")
    func appendOnly() async throws {
        try await TestDatabase.with { db in
            try await A.setUp(db, orgs: Self.grant(1000))
            let id = try await A.submit(db, "u", gpus: 2, limit: 3600)
            try await A.loop(db).cycle()
            try await A.startAll(db)
            let node = try #require(try await A.job(db, id).attempts.first?.nodes.first?.node)
            // An open row may be checkpointed, nothing else.
            #expect(try await StatementStore(database: db).checkpoint() == 1)
            await #expect(throws: (any Error).self) { try await db.query("UPDATE usage SET gpu_milli = 1 WHERE job_id = \(id)") }
            _ = try await A.report(db, node, [RankStatus(key: RankKey(jobID: id, attempt: 1, rank: 0), state: .exited, exitCode: 0)])
            for statement in [
                "UPDATE usage SET ended_at = ended_at - interval '1 minute'", "UPDATE usage SET credited = true, cause = 'x'", "DELETE FROM usage",
                "TRUNCATE usage", "UPDATE allocations SET gpu_hours = 1", "DELETE FROM allocations",
            ] {
                await #expect(throws: (any Error).self, "\(statement)") { try await db.query(PostgresQuery(unsafeSQL: statement)) }
            }
            let adjustment = try await StatementStore(database: db).adjust(
                org: "u", pool: "h200", gpuSeconds: -1800, appliesAt: Date(), reason: "rank 0 misreported", by: A.op)
            await #expect(throws: (any Error).self) { try await db.query("UPDATE usage_adjustments SET gpu_seconds = 1 WHERE id = \(adjustment)") }
            await #expect(throws: (any Error).self) { try await db.query("DELETE FROM usage_adjustments") }
            await #expect(throws: StoreError.invalid(field: "reason", message: "is required, at most 500 characters")) {
                _ = try await StatementStore(database: db).adjust(org: "u", pool: "h200", gpuSeconds: 60, appliesAt: Date(), reason: " ", by: A.op)
            }
            // A closed month's statement never changes: no correction lands in it.
            await #expect(throws: StoreError.invalid(field: "appliesAt", message: "is in a month already closed: final statements never change")) {
                _ = try await StatementStore(database: db).adjust(
                    org: "u", pool: "h200", gpuSeconds: 60, appliesAt: Date(timeIntervalSince1970: 1_700_000_000), reason: "late", by: A.op)
            }
            // The correction is audited and counts against the entitlement.
            #expect(try await db.query("SELECT count(*) FROM audit WHERE action = 'usage.adjust'").decode(Int.self).first { _ in true } == 1)
            let row = try #require(try await QuotaStore(database: db).rows().first)
            #expect(row.gpuHoursUsed < 0, "\(row.gpuHoursUsed): -0.5 GPU-h adjusted against a few GPU-seconds used")
        }
    }

    /// Closed rows for a past month, as the ledger would hold them: (rank, node, GPU thousandths, start, end, credit cause).
    static func forgeNovember(_ db: Database, job: Int64) async throws {
        for (rank, node, milli, start, end, cause) in [
            (10, "n1", 4000, "2026-11-03 10:00", "2026-11-03 14:30", nil),  // 4 GPUs × 4.5 h = 18
            (11, "n2", 2000, "2026-10-31 22:00", "2026-11-01 02:00", nil),  // 2 × 2 h in November (4 in all) = 4
            (12, "n1", 8000, "2026-11-20 00:00", "2026-11-20 06:00", nil),  // 8 × 6 h = 48
            (12, "n1", 8000, "2026-11-20 06:00", "2026-11-20 07:00", "node n1 lost (heartbeat timeout)"),  // credited: 8 × 1 = 8
            (13, "n2", 1000, "2026-11-30 23:00", "2026-12-01 01:00", nil),  // 1 × 1 h in November = 1
        ] as [(Int, String, Int, String, String, String?)] {
            try await db.query(
                """
                INSERT INTO usage (job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, started_at, ended_at, checkpointed_at,
                                   allocation_id, credited, cause, fault_at)
                SELECT \(job), 1, \(rank), \(node), 'u', \(rank == 13 ? "vision" : "llm"), 'op', 'h200', \(milli), \(start)::timestamptz,
                       \(end)::timestamptz, \(end)::timestamptz, (SELECT id FROM allocations WHERE org = 'u'), \(cause != nil), \(cause),
                       CASE WHEN \(cause != nil) THEN \(start)::timestamptz END
                """)
        }
    }

    @Test(
        "a past month's statement comes from the ledger alone (one plain SQL query agrees), itemises credits, and is byte-identical after a policy change"
    )
    func statementStable() async throws {
        try await TestDatabase.with { db in
            try await A.setUp(db, orgs: Self.grant(1000))
            let id = try await A.submit(db, "u", gpus: 1, limit: 3600)
            try await A.loop(db).cycle()
            try await A.startAll(db)
            try await Self.forgeNovember(db, job: id)
            try await db.query("SET TIME ZONE 'UTC'")
            let store = StatementStore(database: db)
            let before = try await store.statement(org: "u", period: "2026-11", by: .pool)
            // 18 + 4 + 48 + 1 = 71 charged, 8 credited.
            #expect(before.final && before.lines.map(\.key) == ["h200"])
            #expect(abs(before.total.chargedGPUHours - 71) < 1e-9 && abs(before.total.creditedGPUHours - 8) < 1e-9, "\(before.total)")
            #expect(before.credits.count == 1 && before.credits[0].cause.contains("lost") && abs(before.credits[0].gpuHours - 8) < 1e-9)
            // The same from the raw rows, in one query an auditor can run.
            let plain = try #require(
                try await db.query(
                    """
                    SELECT (sum(gpu_milli / 1000.0 * extract(epoch FROM least(ended_at, '2026-12-01'::timestamptz) - greatest(started_at, '2026-11-01'::timestamptz)))
                           / 3600)::float8 FROM usage
                    WHERE org = 'u' AND NOT credited AND started_at < '2026-12-01' AND ended_at > '2026-11-01'
                    """
                ).decode(Double.self).first { _ in true })
            #expect(abs(plain - before.total.chargedGPUHours) < 1e-6)
            let byProject = try await store.statement(org: "u", period: "2026-11", by: .project)
            #expect(byProject.lines.map(\.key) == ["llm", "vision"] && abs(byProject.lines[1].chargedGPUHours - 1) < 1e-9)
            #expect(try await store.statement(org: "u", period: "2026-11", by: .grant).lines.map(\.key) == ["h200 monthly v1"])

            // This month's grant changes: a new version; November's statement and its quota stay as they were.
            // A grant made today is not retroactive: November had none.
            let novemberQuota = try await QuotaStore(database: db).rows(period: "2026-11")
            #expect(novemberQuota.isEmpty)
            _ = try await PolicyStore(database: db).apply(
                Policy(
                    pools: [Pool(name: "h200")], organizations: Self.grant(500), priorityClasses: [PriorityClass(name: "standard", value: 100)],
                    defaults: PolicyDefaults(priorityClass: "standard", gracePeriodSeconds: 5)),
                by: A.op, dryRun: false)
            var versions: [(Int, Int64, Bool)] = []
            for try await v in try await db.query(
                "SELECT version, gpu_hours, superseded_at IS NOT NULL FROM allocations WHERE org = 'u' ORDER BY version"
            ).decode((Int, Int64, Bool).self) { versions.append(v) }
            #expect(versions.map(\.0) == [1, 2] && versions.map(\.1) == [1000, 500] && versions.map(\.2) == [true, false])
            let after = try await store.statement(org: "u", period: "2026-11", by: .pool)
            #expect(after.canonicalJSON == before.canonicalJSON && after.digest == before.digest && before.digest.hasPrefix("sha256:"))
            #expect(try await QuotaStore(database: db).rows(period: "2026-11") == novemberQuota)
            #expect(try await QuotaStore(database: db).rows().first?.gpuHours == 500)
        }
    }

    @Test("a reclaim keeps its deadline though the victims ignore SIGTERM: their grace fits inside it, the agent kills them, the owner runs")
    func reclaimDeadlineKept() async throws {
        try await TestDatabase.with { db in
            // Grace 600 s, reclaim deadline 40 s: victims get 40 - 30 = 10 s of grace (30 s spare for placing the owner).
            _ = try await PolicyStore(database: db).apply(
                Policy(
                    pools: [Pool(name: "h200")],
                    organizations: [
                        Organization(name: "a", allocations: [Allocation(pool: "h200", guaranteedGPUs: 4, limitGPUs: 4, gpuHours: 10_000)]),
                        Organization(name: "b", allocations: [Allocation(pool: "h200", guaranteedGPUs: 0, limitGPUs: 4, gpuHours: 10_000)]),
                    ], priorityClasses: [PriorityClass(name: "standard", value: 100)],
                    defaults: PolicyDefaults(priorityClass: "standard", gracePeriodSeconds: 600, reclaimDeadlineSeconds: 40)),
                by: A.op, dryRun: false)
            _ = try await NodeStore(database: db).add(name: "n1", pool: "h200", block: nil, by: A.op)
            _ = try await A.report(db, "n1", [], gpus: 4)
            let loop = A.loop(db)
            // B borrows all four GPUs, running a real process that ignores SIGTERM.
            let victim = try await A.submit(db, "b", gpus: 4)
            try await loop.cycle()
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-reclaim-\(UUID().uuidString.prefix(8))")
            let agent = try Supervisor(stateDir: dir, node: "n1")
            let key = RankKey(jobID: victim, attempt: 1, rank: 0)
            _ = try await agent.launch(
                LaunchRequest(
                    key: key, command: "trap '' TERM; echo ready; while true; do sleep 1; done", env: [:], workingDir: nil, gpuIndices: [0, 1, 2, 3],
                    gang: GangInfo(masterAddr: "127.0.0.1", masterPort: 29511, nnodes: 1, nodeRank: 0, nprocPerNode: 4), gracePeriodSeconds: 600,
                    tenant: RankTenant(org: "b", owner: "op", account: "nobody")))
            while !((try? String(contentsOfFile: await agent.logPath(for: key), encoding: .utf8))?.contains("ready") ?? false) {
                try await Task.sleep(for: .milliseconds(50))
            }
            _ = try await DispatchStore(database: db).claimLaunches()
            try await DispatchStore(database: db).markDispatched(key)
            _ = try await A.report(db, "n1", [RankStatus(key: key, state: .running)])

            let owner = try await A.submit(db, "a", gpus: 4)
            let asked = Date()
            try await loop.cycle()
            let stops = try await DispatchStore(database: db).claimStops()
            #expect(stops.map(\.key) == [key] && stops.first?.gracePeriodSeconds == 10)
            _ = try await agent.stop(key, gracePeriodSeconds: try #require(stops.first).gracePeriodSeconds)
            var end = RankStatus(key: key, state: .running)
            while end.state == .running && Date().timeIntervalSince(asked) < 35 {
                try await Task.sleep(for: .milliseconds(100))
                await agent.poll()
                end = await agent.all().first { $0.key == key } ?? end
            }
            #expect(end.signal == 9, "SIGTERM was ignored: the agent killed it when its grace ended")
            _ = try await A.report(db, "n1", [end])
            try await loop.cycle()
            #expect(try await A.job(db, owner).state == .placed)
            #expect(Date().timeIntervalSince(asked) < 40)

            let statement = try await StatementStore(database: db).statement(org: "a", period: nil, by: .pool)
            let reclaim = try #require(statement.reclaims.first)
            #expect(reclaim.jobID == owner && reclaim.victims == [victim] && reclaim.requestedGPUs == 4 && reclaim.outcome == .kept)
            #expect(abs(reclaim.deadlineAt.timeIntervalSince(reclaim.requestedAt) - 40) < 1)
            let gauges = try await StatusStore(database: db).gauges()
            #expect(gauges.reclaims[QuotaBook.Key(org: "a", pool: "h200")]?[.kept] == 1 && gauges.reclaimPendingSeconds.isEmpty)
        }
    }

    @Test("usage decays with the half-life (decayed_gpu_seconds): an hour of 8 GPUs that ended an hour ago, half-life 1 h, counts 2.885 GPU-hours")
    func decay() async throws {
        try await TestDatabase.with { db in
            func decayed(_ gpus: Double, startAgo: Double, endAgo: Double, halfLife: Double) async throws -> Double {
                try #require(
                    try await db.query(
                        """
                        SELECT decayed_gpu_seconds(\(gpus), now() - make_interval(secs => \(startAgo)), now() - make_interval(secs => \(endAgo)),
                                                   \(halfLife))
                        """
                    ).decode(Double.self).first { _ in true })
            }
            // ∫ from 2 h ago to 1 h ago of 8 × 2^(−age/1 h) = 8 × (1/ln 2) × (2^−1 − 2^−2) h = 8 × 0.25 / 0.693147 = 2.8854 GPU-h.
            let hour = try await decayed(8, startAgo: 7200, endAgo: 3600, halfLife: 3600)
            #expect(abs(hour / 3600 - 2.885_390_081_777_927) < 1e-9)
            // Usage now counts in full over a short interval: 1 GPU for 1 s ≈ 1 GPU-second.
            let now = try await decayed(1, startAgo: 1, endAgo: 0, halfLife: 7 * 86400)
            #expect(abs(now - 1) < 1e-5)
            // A half-life ago it counts half.
            let halfLifeAgo = try await decayed(1, startAgo: 86400 * 7 + 1, endAgo: 86400 * 7, halfLife: 7 * 86400)
            #expect(abs(halfLifeAgo - 0.5) < 1e-5)
        }
    }

    @Test("fair share orders by decayed usage: x used 2.885 decayed GPU-hours (factor 0.25), y nothing (1): y's later job goes first")
    func decayedFairShare() async throws {
        try await TestDatabase.with { db in
            _ = try await PolicyStore(database: db).apply(
                Policy(
                    pools: [Pool(name: "h200")],
                    organizations: [
                        Organization(name: "x", allocations: [Allocation(pool: "h200", guaranteedGPUs: 4, limitGPUs: 4, gpuHours: 10_000)]),
                        Organization(name: "y", allocations: [Allocation(pool: "h200", guaranteedGPUs: 4, limitGPUs: 4, gpuHours: 10_000)]),
                    ], priorityClasses: [PriorityClass(name: "standard", value: 100)],
                    defaults: PolicyDefaults(priorityClass: "standard", fairShareHalfLifeSeconds: 3600)),
                by: A.op, dryRun: false)
            _ = try await NodeStore(database: db).add(name: "n1", pool: "h200", block: nil, by: A.op)
            _ = try await A.report(db, "n1", [], gpus: 4)
            let loop = A.loop(db)
            let old = try await A.submit(db, "x", gpus: 4)
            try await loop.cycle()
            try await A.startAll(db)
            _ = try await A.report(db, "n1", [RankStatus(key: RankKey(jobID: old, attempt: 1, rank: 0), state: .exited, exitCode: 0)])
            // x's history: 8 GPUs from 2 h to 1 h ago. Decayed with a 1 h half-life: 8 × (2^-1 − 2^-2) / ln 2 = 2.885 GPU-h.
            try await db.query(
                """
                INSERT INTO usage (job_id, attempt, rank, node, org, owner, pool, gpu_milli, started_at, ended_at, checkpointed_at)
                VALUES (\(old), 1, 5, 'n1', 'x', 'op', 'h200', 8000, now() - interval '2 hours', now() - interval '1 hour', now() - interval '1 hour')
                """)
            let rows = try await QuotaStore(database: db).rows()
            let x = try #require(rows.first { $0.org == "x" })
            let y = try #require(rows.first { $0.org == "y" })
            #expect(abs(x.decayedGPUHours - 2.885) < 0.01, "\(x.decayedGPUHours)")
            // x holds all the pool's decayed usage on half its guarantees: 2^-(1 / 0.5) = 0.25; y used none: 1.
            #expect(abs(x.usageShare - 1) < 1e-9 && x.guaranteeShare == 0.5 && abs(x.fairShareFactor - 0.25) < 1e-6)
            #expect(y.fairShareFactor == 1)
            let xJob = try await A.submit(db, "x", gpus: 4)
            try await Task.sleep(for: .milliseconds(20))
            let yJob = try await A.submit(db, "y", gpus: 4)
            try await loop.cycle()
            #expect(try await A.job(db, yJob).state == .placed)
            #expect(try await A.job(db, xJob).state == .queued)
        }
    }

    @Test("projects and users inside an organisation: admission checks the user's limit, then the project's, then the organisation's")
    func projectLimits() async throws {
        try await TestDatabase.with { db in
            let llm = ProjectLimit(name: "llm", limitGPUs: 4, gpuHours: 100, share: 3, users: ["alice": UserLimit(limitGPUs: 2)])
            try await A.setUp(
                db,
                orgs: [
                    Organization(
                        name: "u",
                        allocations: [
                            Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 8, gpuHours: 1000, projects: [llm, ProjectLimit(name: "vision")])
                        ])
                ], nodes: 2, gpus: 8)
            let loop = A.loop(db)
            func submit(_ user: String, _ project: String?, gpus: Int) async throws -> Int64 {
                try await JobStore(database: db).submit(
                    JobSpec(name: "j", project: project, pool: "h200", gpusPerNode: gpus, timeLimitSeconds: 3600, command: "x"),
                    by: Principal(name: user, role: .member, org: "u")
                ) { _, _ in nil }
            }
            // alice may hold 2 GPUs of llm: her second job waits on her own limit.
            let a1 = try await submit("alice", "llm", gpus: 2)
            try await loop.cycle()
            let a2 = try await submit("alice", "llm", gpus: 1)
            try await loop.cycle()
            #expect(try await A.job(db, a1).state == .placed)
            let waitingUser = try await A.job(db, a2)
            #expect(
                waitingUser.state == .queued && waitingUser.reason?.contains("alice in u/llm holds 2 GPUs of its limit of 2") == true,
                "\(waitingUser.reason ?? "-")")
            // bob's 3 GPUs would take llm to 5 of its 4.
            let b1 = try await submit("bob", "llm", gpus: 3)
            try await loop.cycle()
            #expect(try await A.job(db, b1).reason?.contains("u/llm holds 2 GPUs of its limit of 4") == true)
            // llm's 100 GPU-hours: 2 GPUs × 60 h = 120 > 100 - 2 reserved... the budget, project first.
            let long = try await JobStore(database: db).submit(
                JobSpec(name: "long", project: "llm", pool: "h200", gpusPerNode: 2, timeLimitSeconds: 60 * 3600, command: "x"),
                by: Principal(name: "carol", role: .member, org: "u")
            ) { _, _ in nil }
            try await loop.cycle()
            #expect(try await A.job(db, long).reason?.hasPrefix("budget") == true)
            #expect(try await A.job(db, long).reason?.contains("u/llm has") == true)
            // vision has no limits of its own: only the organisation's 8 apply.
            let v1 = try await submit("dave", "vision", gpus: 6)
            try await loop.cycle()
            #expect(try await A.job(db, v1).state == .placed)
            // An undeclared project is refused at submission, naming the ones there are.
            await #expect(throws: StoreError.invalid(field: "project", message: "'nope' is not one of u's projects in pool h200 (llm, vision)")) {
                _ = try await submit("alice", "nope", gpus: 1)
            }
            let row = try #require(try await QuotaStore(database: db).rows().first)
            #expect(row.projects.map(\.name) == ["llm", "vision"])
            #expect(row.projects[0].inUseGPUs == 2 && row.projects[1].inUseGPUs == 6 && row.projects[0].users.first?.inUseGPUs == 2)
            #expect(abs(row.projects[0].reservedGPUHours - 2) < 0.01 && row.projects[0].share == 3)
        }
    }

    @Test("a hardware XID on a running job's GPU: the job is requeued, not failed, and credited from the report that told of the fault")
    func gpuFaultCredited() async throws {
        try await TestDatabase.with { db in
            try await A.setUp(db, orgs: Self.grant(1000), nodes: 1, gpus: 2)
            let id = try await A.submit(db, "u", gpus: 1, limit: 3600)
            try await A.loop(db).cycle()
            try await A.startAll(db)
            let gpu = try #require(try await A.job(db, id).attempts.first?.nodes.first?.gpus.first)
            try await Task.sleep(for: .milliseconds(300))
            // One heartbeat tells of XID 79 on its GPU while the rank still runs; the next, of the rank it killed.
            var inventory = (0..<2).map { GPUInfo(index: $0, uuid: "n1-\($0)", model: "H200", memoryMiB: 1) }
            inventory[gpu].xids = [XidEvent(xid: 79, at: "300.2", message: "GPU has fallen off the bus.")]
            let key = RankKey(jobID: id, attempt: 1, rank: 0)
            let fault = Date()
            for ranks in [[RankStatus(key: key, state: .running)], [RankStatus(key: key, state: .exited, exitCode: 137, signal: 9)]] {
                _ = try await AgentStore(database: db).report(
                    AgentReport(node: "n1", agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20, gpus: inventory, ranks: ranks),
                    from: Principal(name: "agent:n1", role: .agent, node: "n1"))
                try await Task.sleep(for: .milliseconds(300))
            }
            let job = try await A.job(db, id)
            #expect(job.state == .queued && job.attempts.first?.state == .lost, "\(job.state) \(job.attempts)")
            let statement = try await StatementStore(database: db).statement(org: "u", period: nil, by: .pool)
            let credit = try #require(statement.credits.first)
            #expect(credit.cause.contains("quarantined") && abs(credit.from.timeIntervalSince(fault)) < 5)
            #expect(statement.total.chargedGPUHours > 0)  // the time before the fault is charged
        }
    }

    @Test("over random histories, every statement's lines equal one plain SQL query over the raw rows, and its total their sum")
    func statementsEqualLedger() async throws {
        try await TestDatabase.with { db in
            try await A.setUp(db, orgs: Self.grant(100_000))
            let id = try await A.submit(db, "u", gpus: 1, limit: 3600)
            try await A.loop(db).cycle()
            try await A.startAll(db)
            // Seeded: a failure names its seed; ALLOT_PROPERTY_SEED=N replays one.
            let seeds: [UInt64] =
                ProcessInfo.processInfo.environment["ALLOT_PROPERTY_SEED"].flatMap(UInt64.init).map { [$0] } ?? (0..<8).map { $0 &* 7919 &+ 17 }
            let store = StatementStore(database: db)
            let sept = Date(timeIntervalSince1970: 1_788_220_800)  // 2026-09-01T00:00:00Z
            for seed in seeds {
                var rng = SeededRandom(seed: seed)
                for k in 0..<Int.random(in: 5...25, using: &rng) {
                    // A row anywhere in September to November 2026, up to 3 days long, sometimes a credit.
                    let start = sept.addingTimeInterval(Double.random(in: 0..<(91 * 86400), using: &rng))
                    let end = start.addingTimeInterval(Double.random(in: 1...(3 * 86400), using: &rng))
                    let credited = Int.random(in: 0..<5, using: &rng) == 0
                    let project = ["llm", "vision", nil].randomElement(using: &rng)!
                    let owner = ["ada", "bo"].randomElement(using: &rng)!
                    try await db.query(
                        """
                        INSERT INTO usage (job_id, attempt, rank, node, org, project, owner, pool, gpu_milli, started_at, ended_at, checkpointed_at,
                                           credited, cause, fault_at)
                        VALUES (\(id), 1, \(Int(seed % 100_000) * 100 + k + 1000), 'n1', 'u', \(project), \(owner), 'h200',
                                \(Int.random(in: 1...8000, using: &rng)), \(start), \(end), \(end), \(credited), \(credited ? "node lost" : nil),
                                \(credited ? start : nil))
                        """)
                }
                for month in ["2026-09", "2026-10", "2026-11"] {
                    let (from, to) = (
                        try #require(WireJSON.date("\(month)-01T00:00:00Z")),
                        try #require(
                            WireJSON.date(month == "2026-11" ? "2026-12-01T00:00:00Z" : "2026-\(month == "2026-09" ? "10" : "11")-01T00:00:00Z"))
                    )
                    for (by, column) in [(Statement.Grouping.pool, "pool"), (.project, "coalesce(project, '-')"), (.user, "coalesce(owner, '-')")] {
                        let statement = try await store.statement(org: "u", period: month, by: by)
                        var plain: [String: (Double, Double)] = [:]
                        for try await (key, charged, credited) in try await db.query(
                            PostgresQuery(
                                unsafeSQL: """
                                    SELECT \(column),
                                           coalesce(sum(gpu_milli / 1000.0 * extract(epoch FROM least(ended_at, $2) - greatest(started_at, $1))) FILTER (WHERE NOT credited), 0)::float8 / 3600,
                                           coalesce(sum(gpu_milli / 1000.0 * extract(epoch FROM least(ended_at, $2) - greatest(started_at, $1))) FILTER (WHERE credited), 0)::float8 / 3600
                                    FROM usage WHERE org = 'u' AND started_at < $2 AND ended_at > $1 AND rank >= 1000 GROUP BY 1
                                    """, binds: try Self.binds(from, to))
                        ).decode((String, Double, Double).self) { plain[key] = (charged, credited) }
                        for line in statement.lines {
                            let want = plain[line.key] ?? (0, 0)
                            if abs(line.chargedGPUHours - want.0) > 1e-6 || abs(line.creditedGPUHours - want.1) > 1e-6 {
                                Issue.record(
                                    "seed \(seed), \(month) by \(by) \(line.key): \(line) ≠ SQL \(want) (replay: ALLOT_PROPERTY_SEED=\(seed))")
                                return
                            }
                        }
                        #expect(
                            Set(plain.keys).isSubset(of: Set(statement.lines.map(\.key))),
                            "seed \(seed): \(plain.keys) vs \(statement.lines.map(\.key))")
                        #expect(abs(statement.total.chargedGPUHours - statement.lines.reduce(0) { $0 + $1.chargedGPUHours }) < 1e-9)
                    }
                }
            }
        }
    }

    static func binds(_ from: Date, _ to: Date) throws -> PostgresBindings {
        var b = PostgresBindings()
        b.append(from)
        b.append(to)
        return b
    }
}
