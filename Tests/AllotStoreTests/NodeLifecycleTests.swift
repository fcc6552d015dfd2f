import AllotCore
import AllotDatabaseTesting
import AllotTesting
import Foundation
import PostgresNIO
import Testing

@testable import AllotStore

@Suite("Node lifecycle: drains, maintenance, GPU health, silent pools", databaseTests)
struct NodeLifecycleTests {
    static func start(_ f: StoreFixture, _ id: Int64) async throws {
        let job = try await f.job(id)
        for r in try #require(job.attempts.last?.nodes) {
            let key = RankKey(jobID: id, attempt: job.attempts.count, rank: r.rank)
            try await DispatchStore(database: f.db).markDispatched(key)
            try await f.report(r.node, ranks: [RankStatus(key: key, state: .running)])
        }
    }

    @Test("a window starting in one hour keeps a 2 h job off the node; a 30 min job goes there")
    func maintenanceWindow() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let lifecycle = NodeLifecycleStore(database: db)
            _ = try await lifecycle.addMaintenance(
                MaintenanceRequest(
                    nodes: ["n1"], startsAt: Date().addingTimeInterval(3600), endsAt: Date().addingTimeInterval(7200), reason: "firmware"),
                by: f.op)
            // n2 busy, so n1 is the only place with room.
            let filler = try await f.submit(JobSpec(name: "fill", org: "lab", pool: "h200", gpusPerNode: 8, timeLimitSeconds: 600, command: "x"))
            try await db.query("UPDATE nodes SET state = 'cordoned' WHERE name = 'n1'")
            try await f.schedule()
            try await db.query("UPDATE nodes SET state = 'ready' WHERE name = 'n1'")
            #expect(try await f.job(filler).attempts.first?.nodes.first?.node == "n2")

            let long = try await f.submit(JobSpec(name: "long", org: "lab", pool: "h200", gpusPerNode: 1, timeLimitSeconds: 7200, command: "x"))
            let unbounded = try await f.submit(JobSpec(name: "unbounded", org: "lab", pool: "h200", gpusPerNode: 1, command: "x"))
            let short = try await f.submit(JobSpec(name: "short", org: "lab", pool: "h200", gpusPerNode: 1, timeLimitSeconds: 1800, command: "x"))
            #expect(try await f.schedule() == [short])
            #expect(try await f.job(short).attempts.first?.nodes.first?.node == "n1")
            #expect(try await f.job(long).reason?.contains("maintenance") == true)
            #expect(try await f.job(unbounded).state == .queued)
        }
    }

    @Test("a window drains its nodes at its start and returns them at its end, as planned downtime")
    func windowStartsAndEnds() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let lifecycle = NodeLifecycleStore(database: db)
            let w = try await lifecycle.addMaintenance(
                MaintenanceRequest(
                    nodes: ["n1"], startsAt: Date().addingTimeInterval(3600), endsAt: Date().addingTimeInterval(7200), reason: "cables"),
                by: f.op)
            try await lifecycle.advanceMaintenance()
            #expect(try await NodeStore(database: db).list().first { $0.name == "n1" }?.state == .ready)
            // Time passes: the window starts (moved in the database rather than waited for).
            try await db.query("UPDATE maintenance_windows SET starts_at = now() - interval '1 second' WHERE id = \(w.id)")
            try await lifecycle.advanceMaintenance()
            try await lifecycle.advanceDrains()
            #expect(try await NodeStore(database: db).list().first { $0.name == "n1" }?.state == .drained)
            // And it ends.
            try await db.query("UPDATE maintenance_windows SET ends_at = now() WHERE id = \(w.id)")
            try await lifecycle.advanceMaintenance()
            #expect(try await NodeStore(database: db).list().first { $0.name == "n1" }?.state == .ready)
            #expect(try await lifecycle.listMaintenance(includeEnded: true).first { $0.id == w.id }?.endedAt != nil)
            #expect(
                try await f.scalar("SELECT count(*) FROM node_downtime WHERE node = 'n1' AND kind = 'planned' AND ended_at IS NOT NULL", as: Int.self)
                    == 1)
        }
    }

    @Test("drain: no new work at once; at the deadline the whole gang is stopped and requeued; the node ends drained; undrain returns it")
    func drainDeadline() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1", "n2", "n3"])
            let gang = try await f.submit(JobSpec(name: "gang", org: "lab", pool: "h200", nodes: 2, gpusPerNode: 8, command: "x"))
            try await f.schedule()
            try await Self.start(f, gang)
            let nodes = try #require(try await f.job(gang).attempts.first?.nodes.map(\.node))
            let lifecycle = NodeLifecycleStore(database: db)
            let drain = try await lifecycle.drain([nodes[0]], reason: "firmware", deadlineSeconds: 0, by: f.op)
            try await lifecycle.advanceDrains()
            // Both ranks are asked to stop, not only the one on the drained node.
            let stops = try await DispatchStore(database: db).claimStops()
            #expect(Set(stops.map(\.key.rank)) == [0, 1])
            for s in stops { try await f.report(s.node, ranks: [RankStatus(key: s.key, state: .exited, exitCode: 143, signal: 15)]) }
            let requeued = try await f.job(gang)
            #expect(requeued.state == .queued)
            #expect(requeued.attempts[0].state == .drained)
            try await lifecycle.advanceDrains()
            #expect(try await lifecycle.drainView(drain).nodes.map(\.state) == [.drained])
            #expect(try await lifecycle.drainView(drain).finishedAt != nil)
            // Requeued keeping its submit time, it runs again on the two nodes not drained.
            #expect(try await f.schedule() == [gang])
            #expect(try await f.job(gang).attempts[1].nodes.allSatisfy { $0.node != nodes[0] })
            #expect(try await f.job(gang).submittedAt == requeued.submittedAt)
            try await lifecycle.undrain(nodes[0], by: f.op)
            #expect(try await NodeStore(database: db).list().first { $0.name == nodes[0] }?.state == .ready)
            // Each rank's time from the drain deadline on is credited, with the cause; the time before it is charged.
            #expect(try await f.scalar("SELECT count(*) FROM usage WHERE job_id = \(gang) AND attempt = 1 AND credited", as: Int.self) == 2)
            #expect(
                try await f.scalar(
                    """
                    SELECT count(*) FROM usage u JOIN drains d ON d.id = \(drain)
                    WHERE u.job_id = \(gang) AND u.attempt = 1 AND NOT u.credited AND u.ended_at = greatest(u.started_at, d.deadline)
                    """, as: Int.self) == 2)
            #expect(
                try await f.scalar(
                    "SELECT count(*) FROM usage WHERE job_id = \(gang) AND credited AND cause LIKE '%drained at its deadline%' AND fault_at IS NOT NULL",
                    as: Int.self) == 2)
        }
    }

    @Test("work that ends before the deadline just finishes")
    func drainWithoutDeadline() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1"])
            let id = try await f.submit(JobSpec(name: "j", org: "lab", pool: "h200", gpusPerNode: 1, command: "x"))
            try await f.schedule()
            try await Self.start(f, id)
            let lifecycle = NodeLifecycleStore(database: db)
            // Members cannot drain: the API's access rule refuses them (APITests.authorization), before any store.
            _ = try await lifecycle.drain(["n1"], reason: "x", deadlineSeconds: 3600, by: f.op)
            let other = try await f.submit(JobSpec(name: "k", org: "lab", pool: "h200", gpusPerNode: 1, command: "x"))
            #expect(try await f.schedule().isEmpty)  // no new placements on a draining node
            try await lifecycle.advanceDrains()
            #expect(try await DispatchStore(database: db).claimStops().isEmpty)  // before the deadline nothing is stopped
            try await f.report("n1", ranks: [RankStatus(key: RankKey(jobID: id, attempt: 1, rank: 0), state: .exited, exitCode: 0)])
            #expect(try await f.job(id).state == .succeeded)
            try await lifecycle.advanceDrains()
            #expect(try await NodeStore(database: db).list().first?.state == .drained)
            #expect(try await f.job(other).state == .queued)
        }
    }

    @Test("a fatal fault reported by the agent quarantines the GPU, with the job that was on it; placement skips it; an operator restores it")
    func quarantine() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1"], gpus: 2)
            let id = try await f.submit(JobSpec(name: "j", org: "lab", pool: "h200", gpusPerNode: 1, command: "x"))
            try await f.schedule()
            let gpu = try #require(try await f.job(id).attempts.first?.nodes.first?.gpus.first)
            var inventory = (0..<2).map { GPUInfo(index: $0, uuid: "GPU-n1-\($0)", model: "H200", memoryMiB: 1) }
            inventory[gpu].health = .quarantined
            inventory[gpu].healthDetail = "3 uncorrectable ECC errors since boot"
            _ = try await AgentStore(database: db).report(
                AgentReport(node: "n1", agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20, gpus: inventory, ranks: []),
                from: f.agent("n1"))
            let detail = try await NodeStore(database: db).detail("n1")
            #expect(detail.node.gpus[gpu].health == .quarantined)
            #expect(detail.healthEvents.map(\.jobID) == [id])
            #expect(detail.healthEvents.first?.cause.contains("uncorrectable ECC") == true)
            // The fault is the infrastructure's, not the job's: its attempt ends lost and the job is requeued.
            let requeued = try await f.job(id)
            #expect(requeued.state == .queued && requeued.attempts.first?.state == .lost)
            #expect(requeued.attempts.first?.reason?.contains("GPU \(gpu) of n1 was quarantined") == true, "\(requeued.attempts)")
            // It goes again on the other GPU only; then nothing fits.
            let b = try await f.submit(JobSpec(name: "b", org: "lab", pool: "h200", gpusPerNode: 1, command: "x"))
            #expect(try await f.schedule() == [id])
            #expect(try await f.job(id).attempts.last?.nodes.first?.gpus == [1 - gpu])
            #expect(try await f.job(b).reason?.hasPrefix("capacity") == true)
            // A healthy report does not undo a quarantine; an operator does.
            _ = try await f.report("n1", gpus: 2)
            #expect(try await NodeStore(database: db).detail("n1").node.gpus[gpu].health == .quarantined)
            try await NodeLifecycleStore(database: db).restoreGPU(node: "n1", index: gpu, reason: "reseated, diag passed", by: f.op)
            #expect(try await NodeStore(database: db).detail("n1").node.gpus[gpu].health == .healthy)
            #expect(try await f.schedule() == [b])
        }
    }

    @Test("XIDs: an application error makes a GPU suspect, a hardware error quarantines it; a line read twice counts once")
    func xids() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1"], gpus: 2)
            func report(_ xids: [XidEvent]) async throws {
                var inventory = (0..<2).map { GPUInfo(index: $0, uuid: "GPU-n1-\($0)", model: "H200", memoryMiB: 1) }
                inventory[0].xids = xids
                _ = try await AgentStore(database: db).report(
                    AgentReport(
                        node: "n1", agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20, gpus: inventory, ranks: []),
                    from: f.agent("n1"))
            }
            let app = XidEvent(xid: 13, at: "100.5", message: "Graphics SM Warp Exception")
            try await report([app])
            try await report([app])
            var detail = try await NodeStore(database: db).detail("n1")
            #expect(detail.node.gpus[0].health == .suspect)
            #expect(detail.healthEvents.count == 1)
            try await report([app, XidEvent(xid: 79, at: "200.1", message: "GPU has fallen off the bus.")])
            detail = try await NodeStore(database: db).detail("n1")
            #expect(detail.node.gpus[0].health == .quarantined)
            #expect(detail.healthEvents.map(\.to) == [.suspect, .quarantined])
            #expect(detail.healthEvents.last?.xid == 79)
        }
    }

    @Test(
        "GPUs by UUID: one falls off the bus and nvidia-smi renumbers the rest; claims and health stay with each GPU; the missing one is quarantined and its job requeued, credited"
    )
    func gpuFallsOffTheBus() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1"])
            let a = try await f.submit(JobSpec(name: "a", org: "lab", pool: "h200", gpusPerNode: 1, command: "x"))
            let b = try await f.submit(JobSpec(name: "b", org: "lab", pool: "h200", gpusPerNode: 1, command: "x"))
            try await f.schedule()
            try await Self.start(f, a)
            try await Self.start(f, b)
            let gone = try #require(try await f.job(a).attempts.first?.nodes.first?.gpus.first)
            let kept = try #require(try await f.job(b).attempts.first?.nodes.first?.gpus.first)
            let all = (0..<8).map { GPUInfo(index: $0, uuid: "GPU-n1-\($0)", model: "H200", memoryMiB: 1) }
            // GPU 7 turns suspect first, so its history has something to keep.
            var before = all
            before[7].xids = [XidEvent(xid: 13, at: "10.0", message: "Graphics SM Warp Exception")]
            func report(_ gpus: [GPUInfo], a aState: RankStatus.State = .running) async throws {
                let ranks = [
                    RankStatus(key: RankKey(jobID: a, attempt: 1, rank: 0), state: aState, exitCode: aState == .exited ? 137 : nil),
                    RankStatus(key: RankKey(jobID: b, attempt: 1, rank: 0), state: .running),
                ]
                _ = try await AgentStore(database: db).report(
                    AgentReport(node: "n1", agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20, gpus: gpus, ranks: ranks),
                    from: f.agent("n1"))
            }
            try await report(before)
            // GPU `gone` drops out; nvidia-smi numbers the others 0 to 6.
            var shifted = all.filter { $0.index != gone }
            for k in shifted.indices { shifted[k].index = k }
            try await report(shifted)
            var detail = try await NodeStore(database: db).detail("n1")
            #expect(detail.node.gpus.map(\.index) == Array(0..<8))
            #expect(detail.node.gpus.allSatisfy { $0.uuid == "GPU-n1-\($0.index)" }, "\(detail.node.gpus)")
            let missing = try #require(detail.node.gpus.first { $0.index == gone })
            #expect(missing.missingSince != nil && missing.health == .quarantined)
            #expect(detail.node.gpus.filter { $0.missingSince != nil }.count == 1)
            #expect(detail.node.gpus.first { $0.index == 7 }?.health == (gone == 7 ? .quarantined : .suspect))
            #expect(detail.healthEvents.last?.gpuIndex == gone && detail.healthEvents.last?.jobID == a)
            // The job on it is stopped as the infrastructure's loss (its rank dies: the CUDA context is gone); the
            // other keeps its GPU and runs on.
            let stopping = try await f.job(a).attempts
            #expect(stopping.first?.reason?.contains("missing from nvidia-smi") == true, "\(stopping)")
            try await report(shifted, a: .exited)
            let requeued = try await f.job(a)
            #expect(requeued.state == .queued && requeued.attempts.first?.state == .lost, "\(requeued.attempts)")
            #expect(try await f.job(b).state == .running)
            #expect(try await f.job(b).attempts.first?.nodes.first?.gpus == [kept])
            // It goes again, on neither the missing GPU nor b's.
            #expect(try await f.schedule() == [a])
            let again = try #require(try await f.job(a).attempts.last?.nodes.first?.gpus.first)
            #expect(again != gone && again != kept)
            // Back on the bus: listed again, still quarantined until an operator restores it.
            try await report(all)
            detail = try await NodeStore(database: db).detail("n1")
            #expect(detail.node.gpus.allSatisfy { $0.missingSince == nil } && detail.node.gpus[gone].health == .quarantined)
        }
    }

    @Test("GPU slots: a known UUID keeps its slot, a new one never takes a slot another UUID owns, no slot is given twice (seeded random reports)")
    func gpuSlotsProperty() {
        for seed in UInt64(1)...2000 {
            var rng = SeededRandom(seed: seed)
            var owners: [Int: String] = [:]
            for slot in 0..<Int(rng.next() % 10) where rng.next() % 4 != 0 { owners[slot] = rng.next() % 5 == 0 ? "" : "G\(slot)" }
            let pool = (0..<14).map { "G\($0)" }.shuffled(using: &rng)
            let reported = pool.prefix(Int(rng.next() % 10)).enumerated().map { k, uuid in
                GPUInfo(index: k, uuid: rng.next() % 6 == 0 ? "" : uuid, model: "H200", memoryMiB: 1)
            }
            let slots = NodesTable.slots(for: reported, owners: owners)
            var problem: String?
            if Set(slots).count != slots.count { problem = "a slot given twice: \(slots)" }
            for (gpu, slot) in zip(reported, slots) {
                if !gpu.uuid.isEmpty, let own = owners.first(where: { $0.value == gpu.uuid })?.key, own != slot {
                    problem = "\(gpu.uuid) owns slot \(own) but got \(slot)"
                }
                if let owner = owners[slot], !owner.isEmpty, owner != gpu.uuid { problem = "slot \(slot) of \(owner) given to '\(gpu.uuid)'" }
            }
            if let problem { Issue.record("seed \(seed): \(problem) (owners \(owners), reported \(reported.map(\.uuid)))") }
        }
    }

    @Test("when more than half of a pool goes silent at once, nothing is requeued: the pool is held and the hold audited")
    func silentPool() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1", "n2", "n3"])
            let id = try await f.submit(JobSpec(name: "j", org: "lab", pool: "h200", gpusPerNode: 8, command: "x"))
            try await f.schedule()
            let node = try #require(try await f.job(id).attempts.first?.nodes.first?.node)
            let silent = [node] + ["n1", "n2", "n3"].filter { $0 != node }.prefix(1)
            try await db.query("UPDATE nodes SET last_heartbeat = now() - interval '5 minutes' WHERE name = ANY(\(Array(silent)))")
            let (lost, held) = try await NodeStore(database: db).markLostNodes(timeoutSeconds: 30)
            #expect(lost.isEmpty && held == ["h200"])
            #expect(try await f.job(id).state == .placed)
            #expect(try await AuditStore(database: db).list(since: nil).contains { $0.action == "pool.hold" })
            // Held, not forgotten: the next round changes nothing and records nothing new.
            #expect(try await NodeStore(database: db).markLostNodes(timeoutSeconds: 30).held.isEmpty)
            // An operator decides: the node with the job is declared lost, and the job requeues.
            try await NodeStore(database: db).declareLost(node, by: f.op)
            #expect(try await f.job(id).state == .queued)
        }
    }
}
