import AllotCore
import AllotTesting
import Foundation
import Testing

/// MIG devices, memory requests, full product names and pools that keep organisations apart, on hand-built nodes.
@Suite("Placement by kind of GPU: MIG profile, memory, product name, isolated shares")
struct GPUKindTests {
    /// An H100 node whose GPU 0 is cut into 3g.40gb + 2g.20gb + 1g.10gb ×2 (slots 100–103) and GPU 1 is whole.
    static var migNode: NodeSnapshot {
        var gpus: [GPUSlot] = []
        for (k, profile) in ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"].enumerated() {
            gpus.append(
                GPUSlot(
                    index: 100 + k, model: "H100", productName: "NVIDIA H100 80GB HBM3",
                    memoryMiB: GPUMemory.forMatching(reportedMiB: 0, productName: nil, migProfile: profile), migProfile: profile,
                    chargeMilli: MIGProfile.shareMilli(profile: profile, gpuMemoryMiB: 81_559)))
        }
        gpus.append(GPUSlot(index: 1, model: "H100", productName: "NVIDIA H100 80GB HBM3", memoryMiB: 81_559))
        return NodeSnapshot(name: "mig", pool: "p", cpuMilli: 64_000, memoryMiB: 512 * 1024, gpus: gpus)
    }

    static func job(
        _ id: Int64, gpus: Int = 1, milli: Int? = nil, profile: String? = nil, memoryGiB: Int? = nil, models: [String] = []
    )
        -> PendingJob
    {
        var job = PendingJob.job(id, pool: "p", gpus: gpus, milli: milli, models: models)
        job.migProfile = profile
        job.gpuMemoryMiB = memoryGiB.map { $0 * 1024 }
        return job
    }

    @Test("memory slices of eight: 1g.10gb of an 80 GB part is 125, 1g.20gb 250, 3g.40gb and 4g.40gb 500, 7g.80gb 1000; H200's 1g.18gb 125")
    func shares() {
        #expect(MIGProfile.shareMilli(profile: "1g.10gb", gpuMemoryMiB: 81_559) == 125)
        #expect(MIGProfile.shareMilli(profile: "1g.20gb", gpuMemoryMiB: 81_920) == 250)
        #expect(MIGProfile.shareMilli(profile: "3g.40gb", gpuMemoryMiB: 81_559) == 500)
        #expect(MIGProfile.shareMilli(profile: "4g.40gb", gpuMemoryMiB: 81_559) == 500)
        #expect(MIGProfile.shareMilli(profile: "7g.80gb", gpuMemoryMiB: 81_559) == 1000)
        #expect(MIGProfile.shareMilli(profile: "1g.18gb", gpuMemoryMiB: 143_771) == 125)
        #expect(MIGProfile.shareMilli(profile: "3g.71gb", gpuMemoryMiB: 143_771) == 500)
        #expect(MIGProfile.shareMilli(profile: "1g.5gb", gpuMemoryMiB: 40_960) == 125)
        #expect(MIGProfile.shareMilli(profile: "1g.10gb+me", gpuMemoryMiB: 81_559) == 125)
        // Compute instances sharing a 3g.40gb: each charges its part, 1c of 3 → a third of 500.
        #expect(MIGProfile.shareMilli(profile: "1c.3g.40gb", gpuMemoryMiB: 81_559) == 166)
        #expect(MIGProfile.shareMilli(profile: "2c.3g.40gb", gpuMemoryMiB: 81_559) == 333)
        #expect(MIGProfile.isProfile("1g.10gb") && MIGProfile.isProfile("3G.40GB") && MIGProfile.isProfile("1g.10gb+me"))
        #expect(MIGProfile.isProfile("1c.3g.40gb") && !MIGProfile.isProfile("x.3g.40gb"))
        #expect(!MIGProfile.isProfile("a100") && !MIGProfile.isProfile("h100-80gb") && !MIGProfile.isProfile("1g") && !MIGProfile.isProfile("g.10gb"))
    }

    @Test("a MIG job takes devices of its profile, whole, charged their share; whole-GPU and shared work never takes a device")
    func migDevices() throws {
        let plan = Placer(strategy: .bestFit).place(
            [Self.job(1, gpus: 2, profile: "1g.10gb"), Self.job(2, gpus: 1), Self.job(3, milli: 500), Self.job(4, profile: "2g.20gb")],
            on: [Self.migNode])
        let byJob = Dictionary(uniqueKeysWithValues: plan.placements.map { ($0.jobID, $0.ranks[0]) })
        #expect(byJob[1]?.gpuIndices.sorted() == [102, 103])
        #expect(byJob[1]?.milliPerGPU == 125)
        #expect(byJob[4]?.gpuIndices == [101] && byJob[4]?.milliPerGPU == 250)
        // The whole GPU goes to job 2; the share finds no GPU of its own (MIG devices are not shared).
        #expect(byJob[2]?.gpuIndices == [1])
        #expect(byJob[3] == nil)
        let third = Placer(strategy: .bestFit).place([Self.job(5, gpus: 3, profile: "1g.10gb")], on: [Self.migNode])
        #expect(third.placements.isEmpty)
        #expect(Placer.neverFitsReason(Self.job(5, gpus: 3, profile: "1g.10gb"), nodes: [Self.migNode]) != nil)
        #expect(Placer.neverFitsReason(Self.job(6, profile: "1g.18gb"), nodes: [Self.migNode]) != nil)
    }

    @Test("a MIG job is admitted and charged its devices' shares, not whole GPUs")
    func migQuota() throws {
        // An organisation with a quarter of a GPU left may start a 1g.10gb (125) but not a 3g.40gb (500).
        var book = QuotaBook()
        book["org", "p"] = QuotaEntry(guaranteedMilli: 0, limitMilli: 250)
        let plan = Placer(strategy: .bestFit).place(
            [Self.job(1, profile: "3g.40gb"), Self.job(2, profile: "1g.10gb")], on: [Self.migNode], quota: book)
        #expect(plan.placements.map(\.jobID) == [2])
        if case .quota? = plan.waiting[1] {} else { Issue.record("job 1 waits for \(String(describing: plan.waiting[1]))") }
    }

    @Test("gpuMemory and product names: 80G goes to the 80 GB A100s, not the 40 GB ones; a full name picks that part")
    func memoryAndNames() {
        let a40 = NodeSnapshot(
            name: "a40", pool: "p", cpuMilli: 64_000, memoryMiB: 1 << 19,
            gpus: (0..<8).map { GPUSlot(index: $0, model: "A100", productName: "NVIDIA A100-SXM4-40GB", memoryMiB: 40_960) })
        let a80 = NodeSnapshot(
            name: "b80", pool: "p", cpuMilli: 64_000, memoryMiB: 1 << 19,
            gpus: (0..<8).map { GPUSlot(index: $0, model: "A100", productName: "NVIDIA A100-SXM4-80GB", memoryMiB: 81_920) })
        let h100 = NodeSnapshot(
            name: "c-h100", pool: "p", cpuMilli: 64_000, memoryMiB: 1 << 19,
            gpus: (0..<8).map {
                GPUSlot(
                    index: $0, model: "H100", productName: "NVIDIA H100 80GB HBM3",
                    memoryMiB: GPUMemory.forMatching(reportedMiB: 81_559, productName: "NVIDIA H100 80GB HBM3", migProfile: nil))
            })
        let nodes = [a40, a80, h100]
        let placer = Placer(strategy: .firstFit)
        #expect(placer.place([Self.job(1, memoryGiB: 80, models: ["A100"])], on: nodes).placements.first?.ranks[0].node == "b80")
        #expect(placer.place([Self.job(1, models: ["NVIDIA A100-SXM4-80GB"])], on: nodes).placements.first?.ranks[0].node == "b80")
        #expect(placer.place([Self.job(1, models: ["a100-sxm4-80gb"])], on: nodes).placements.first?.ranks[0].node == "b80")
        #expect(placer.place([Self.job(1, models: ["A100"])], on: nodes).placements.first?.ranks[0].node == "a40")
        // The H100 reports 81,559 MiB, under 80 GiB: its name's 80GB counts.
        #expect(placer.place([Self.job(1, memoryGiB: 80, models: ["H100"])], on: nodes).placements.first?.ranks[0].node == "c-h100")
        #expect(placer.place([Self.job(1, memoryGiB: 96)], on: nodes).placements.isEmpty)
        #expect(Placer.neverFitsReason(Self.job(1, memoryGiB: 96), nodes: nodes) != nil)
        #expect(GPUMemory.satisfies(143_771, asked: 141 * 1024))
        #expect(!GPUMemory.satisfies(40_960, asked: 80 * 1024))
    }

    @Test("a pool that keeps organisations apart puts a share beside its own organisation's shares only; another pool packs them together")
    func isolatedShares() {
        var node = NodeSnapshot.node("n", pool: "p", gpus: 2, model: "H100")
        node.gpus[0].usedMilli = 500
        node.gpus[0].shareOrg = "defence"
        for (isolated, org, expected) in [(true, "startup", 1), (true, "defence", 0), (false, "startup", 0)] {
            var job = PendingJob.job(1, pool: "p", milli: 250, org: org)
            job.isolatedShares = isolated
            let plan = Placer(strategy: .bestFit).place([job], on: [node])
            #expect(plan.placements.first?.ranks[0].gpuIndices == [expected], "isolated \(isolated), \(org)")
        }
        // Under MPS (one Linux account per GPU at a time) a share goes only beside its own account's, whatever the pool.
        var mps = node
        mps.enforcesShares = true
        mps.gpus[0].shareAccount = "allot-defense"
        for (account, expected) in [("allot-startups", 1), ("allot-defense", 0)] {
            var job = PendingJob.job(1, pool: "p", milli: 250, org: "defence")
            job.account = account
            #expect(Placer(strategy: .bestFit).place([job], on: [mps]).placements.first?.ranks[0].gpuIndices == [expected], "\(account)")
        }
        // Two shares of two organisations placed in one call do not meet on one GPU either.
        var a = PendingJob.job(1, pool: "p", milli: 250, org: "defence")
        var b = PendingJob.job(2, pool: "p", milli: 250, org: "startup")
        a.isolatedShares = true
        b.isolatedShares = true
        let plan = Placer(strategy: .bestFit).place([a, b], on: [NodeSnapshot.node("m", pool: "p", gpus: 2, model: "H100")])
        #expect(Set(plan.placements.map { $0.ranks[0].gpuIndices[0] }).count == 2)
    }
}
