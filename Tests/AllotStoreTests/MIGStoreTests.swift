import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import PostgresNIO
import Testing

/// MIG devices as the store keeps them: slots of their own, held whole, charged by memory slices; the GPU they
/// are cut from never held; a layout the operator changes picked up at the next report, with its work checked.
extension AsyncSequence {
    func collect() async throws -> [Element] { try await self.reduce(into: []) { $0.append($1) } }
}

@Suite("MIG devices in the store", databaseTests)
struct MIGStoreTests {
    static let profiles = ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]

    /// An H100 node: GPU 0 cut into `profiles` (devices named MIG-n1-K), GPU 1 whole.
    static func inventory(_ node: String, devices: [Int] = [0, 1, 2, 3]) -> [GPUInfo] {
        var cut = GPUInfo(index: 0, uuid: "GPU-\(node)-0", model: "H100", memoryMiB: 81_559, nvlinkDomain: 0, migMode: "Enabled", minorNumber: 0)
        cut.productName = "NVIDIA H100 80GB HBM3"
        cut.migDevices = devices.map { k in
            MIGDevice(
                index: k, uuid: "MIG-\(node)-\(k)", profile: Self.profiles[k], gpuInstance: [2, 3, 9, 10][k], computeInstance: 0, memoryMiB: 9_856)
        }
        var whole = GPUInfo(index: 1, uuid: "GPU-\(node)-1", model: "H100", memoryMiB: 81_559, nvlinkDomain: 0, migMode: "Disabled", minorNumber: 1)
        whole.productName = "NVIDIA H100 80GB HBM3"
        return [cut, whole]
    }

    static func report(_ f: StoreFixture, _ node: String, devices: [Int] = [0, 1, 2, 3], ranks: [RankStatus] = []) async throws {
        var report = AgentReport(
            node: node, agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20, gpus: Self.inventory(node, devices: devices),
            ranks: ranks)
        report.gpuSharing = .soft
        _ = try await AgentStore(database: f.db).report(report, from: f.agent(node))
    }

    static func submit(_ f: StoreFixture, profile: String, count: Int) async throws -> Int64 {
        try await f.submit(JobSpec(name: "mig", org: "lab", pool: "h200", gpusPerNode: count, command: "true", migProfile: profile))
    }

    @Test(
        "a report's MIG devices become slots 100 and up with their profile, GPU and charge; the node lists them with the product name and soft sharing"
    )
    func inventory() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: [])
            _ = try await NodeStore(database: db).add(name: "m1", pool: "h200", block: nil, by: f.op)
            try await Self.report(f, "m1")
            let rows = try await db.query(
                "SELECT idx, uuid, mig_profile, mig_parent, charge_milli, mig_gpu_instance FROM gpus WHERE node = 'm1' AND mig_profile IS NOT NULL ORDER BY idx"
            ).decode((Int, String, String, Int, Int, Int).self).collect()
            #expect(rows.map(\.0) == [100, 101, 102, 103])
            #expect(rows.map(\.1) == ["MIG-m1-0", "MIG-m1-1", "MIG-m1-2", "MIG-m1-3"])
            #expect(rows.map(\.2) == Self.profiles)
            #expect(rows.allSatisfy { $0.3 == 0 })
            #expect(rows.map(\.4) == [500, 250, 125, 125])
            #expect(rows.map(\.5) == [2, 3, 9, 10])
            let node = try #require(try await NodeStore(database: db).list().first { $0.name == "m1" })
            #expect(node.gpuSharing == .soft)
            #expect(node.gpus.first { $0.index == 1 }?.productName == "NVIDIA H100 80GB HBM3")
            #expect(node.gpus.first { $0.index == 102 }?.migProfile == "1g.10gb" && node.gpus.first { $0.index == 102 }?.chargeMilli == 125)
            // The same report again keeps every device on its slot.
            try await Self.report(f, "m1")
            #expect(try await f.scalar("SELECT count(*)::int FROM gpus WHERE node = 'm1'", as: Int.self) == 6)
        }
    }

    @Test("the database refuses a claim on a GPU with MIG on, and a second claim on one MIG device")
    func constraints() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: [])
            _ = try await NodeStore(database: db).add(name: "m1", pool: "h200", block: nil, by: f.op)
            try await Self.report(f, "m1")
            #expect(await ClaimConstraintTests.sqlState { try await ClaimConstraintTests.claim(f, node: "m1", gpus: [0]) } == "23514")
            #expect(await ClaimConstraintTests.sqlState { try await ClaimConstraintTests.claim(f, node: "m1", gpus: [0], milli: 250) } == "23514")
            try await ClaimConstraintTests.claim(f, node: "m1", gpus: [102], milli: 125)
            #expect(await ClaimConstraintTests.sqlState { try await ClaimConstraintTests.claim(f, node: "m1", gpus: [102], milli: 125) } == "23514")
            // A claim of other than the device's charge is refused too: a device is held whole, at its share.
            #expect(await ClaimConstraintTests.sqlState { try await ClaimConstraintTests.claim(f, node: "m1", gpus: [103], milli: 500) } == "23514")
            try await ClaimConstraintTests.claim(f, node: "m1", gpus: [1])
        }
    }

    @Test(
        "a MIG job is placed on devices of its profile, launched with their MIG UUIDs and charged their share; a device gone from the layout requeues its work, one unheld just goes"
    )
    func placeLaunchCharge() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: [])
            _ = try await NodeStore(database: db).add(name: "m1", pool: "h200", block: nil, agentURL: "http://127.0.0.1:1", by: f.op)
            try await Self.report(f, "m1")
            let id = try await Self.submit(f, profile: "1g.10gb", count: 2)
            #expect(try await f.schedule() == [id])
            let ranks = try await db.query("SELECT gpu_indices, milli_per_gpu FROM attempt_ranks WHERE job_id = \(id)").decode(([Int], Int).self)
                .collect()
            #expect(ranks.count == 1 && ranks[0].0.sorted() == [102, 103] && ranks[0].1 == 125)
            let store = DispatchStore(database: db)
            let work = try #require(try await store.claimLaunches().first { $0.jobID == id })
            #expect(Set(work.ranks[0].gpuUUIDs) == ["MIG-m1-2", "MIG-m1-3"])
            #expect(work.ranks[0].shareMilli == nil)
            try await store.markDispatched(RankKey(jobID: id, attempt: 1, rank: 0))
            try await Self.report(f, "m1", ranks: [RankStatus(key: RankKey(jobID: id, attempt: 1, rank: 0), state: .running)])
            #expect(try await f.job(id).state == .running)
            #expect(try await f.scalar("SELECT gpu_milli FROM usage WHERE job_id = \(id)", as: Int.self) == 250)
            // A second job of that profile never fits while both are held; a 3g.40gb one does.
            let big = try await Self.submit(f, profile: "3g.40gb", count: 1)
            #expect(try await f.schedule() == [big])
            // The operator re-cuts GPU 0: devices 1 (unheld) and 3 (the job's) are gone.
            try await Self.report(
                f, "m1", devices: [0, 2], ranks: [RankStatus(key: RankKey(jobID: id, attempt: 1, rank: 0), state: .running)])
            // Its attempt is stopped as the infrastructure's loss; once the rank is reported ended, the job waits again.
            let stopping = try await f.job(id).attempts
            #expect(stopping.first?.reason?.contains("gone from the GPU's layout") == true, "\(stopping)")
            try await Self.report(
                f, "m1", devices: [0, 2], ranks: [RankStatus(key: RankKey(jobID: id, attempt: 1, rank: 0), state: .exited, exitCode: 137)])
            let job = try await f.job(id)
            #expect(job.state == .queued && job.attempts.first?.state == .lost, "\(job.state): \(job.attempts)")
            #expect(try await f.scalar("SELECT present FROM gpus WHERE node = 'm1' AND idx = 101", as: Bool.self) == false)
            #expect(try await f.scalar("SELECT health::text FROM gpus WHERE node = 'm1' AND idx = 101", as: String.self) == "healthy")
            #expect(try await f.scalar("SELECT health::text FROM gpus WHERE node = 'm1' AND idx = 103", as: String.self) == "quarantined")
            // Its time from the fault on is credited (the infrastructure's), as for a GPU that fell off the bus.
            #expect(try await f.scalar("SELECT count(*)::int FROM usage WHERE job_id = \(id) AND credited", as: Int.self) == 1)
        }
    }

    @Test("isolateSharedGPUs follows restrictedTo unless the policy says otherwise")
    func isolationDefault() async throws {
        try await TestDatabase.with { db in
            _ = try await StoreFixture(db, nodes: [])
            let rows = try await db.query("SELECT name, isolate_shared_gpus FROM pools ORDER BY name").decode((String, Bool).self).collect()
            #expect(rows.map(\.0) == ["h200", "secure"] && rows.map(\.1) == [false, true])
            #expect(Pool(name: "x", restrictedTo: ["a"], isolateSharedGPUs: false).isolateSharedGPUs == false)
            #expect(Pool(name: "x").isolateSharedGPUs == false && Pool(name: "x", restrictedTo: ["a"]).isolateSharedGPUs)
        }
    }

    @Test("a report that could not name a GPU's MIG devices (nvidia-smi -L failed) changes nothing of its layout: held devices and their work stay")
    func unnamedLayout() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: [])
            _ = try await NodeStore(database: db).add(name: "m1", pool: "h200", block: nil, agentURL: "http://127.0.0.1:1", by: f.op)
            try await Self.report(f, "m1")
            try await ClaimConstraintTests.claim(f, node: "m1", gpus: [102], milli: 125)
            var gpus = Self.inventory("m1")
            gpus[0].migDevices = gpus[0].migDevices?.map { d in
                var d = d
                d.uuid = ""
                d.profile = nil
                return d
            }
            _ = try await AgentStore(database: db).report(
                AgentReport(node: "m1", agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20, gpus: gpus, ranks: []),
                from: f.agent("m1"))
            let rows = try await db.query("SELECT idx, present, health::text FROM gpus WHERE node = 'm1' AND mig_profile IS NOT NULL ORDER BY idx")
                .decode((Int, Bool, String).self).collect()
            #expect(rows.map(\.0) == [100, 101, 102, 103] && rows.allSatisfy { $0.1 && $0.2 == "healthy" }, "\(rows)")
        }
    }
}
