import AllotCore
import AllotTesting
import Foundation
import Testing

/// Invariants of every plan, over many seeded random clusters and queues. A failure names its seed;
/// `ALLOT_PROPERTY_SEED=N` replays one, `ALLOT_PROPERTY_RUNS=N` runs more (CI runs the default).
@Suite("Placement invariants on random clusters")
struct PlacementPropertyTests {
    static var seeds: [UInt64] {
        let env = ProcessInfo.processInfo.environment
        if let one = env["ALLOT_PROPERTY_SEED"].flatMap(UInt64.init) { return [one] }
        let runs = env["ALLOT_PROPERTY_RUNS"].flatMap(Int.init) ?? 10_000
        return (0..<UInt64(runs)).map { $0 &* 7919 &+ 17 }
    }

    @Test(
        "no GPU over 1000 milli, no node over its CPU or memory; gangs whole on distinct nodes; only ready nodes of the pool, acceptable models and healthy GPUs"
    )
    func invariants() async {
        for strategy in ScoringStrategy.allCases {
            for seed in Self.seeds {
                await Task.yield()  // long and CPU-bound: let the timing-sensitive tests have the pool's threads too
                let (nodes, queue) = RandomCluster.make(seed: seed)
                let plan = Placer(strategy: strategy).place(queue, on: nodes)
                if let problem = Self.violation(plan, nodes: nodes, queue: queue) {
                    Issue.record("seed \(seed), strategy \(strategy.rawValue): \(problem) (replay: ALLOT_PROPERTY_SEED=\(seed))")
                    return
                }
            }
        }
    }

    @Test(
        "MIG devices mixed with whole GPUs and shares, GPUs of one model with different memory, pools keeping organisations apart: MIG devices only to their profile, once each; never a GPU to a MIG job; memory as asked; no share beside another organisation's"
    )
    func migAndShares() async {
        var placedMIG = 0
        var placedShares = 0
        for strategy in ScoringStrategy.allCases {
            for seed in Self.seeds.prefix(2_000) {
                await Task.yield()
                let (nodes, queue) = Self.migCluster(seed: seed)
                let plan = Placer(strategy: strategy).place(queue, on: nodes)
                if let problem = Self.violation(plan, nodes: nodes, queue: queue) {
                    Issue.record("seed \(seed), strategy \(strategy.rawValue): \(problem) (replay: ALLOT_PROPERTY_SEED=\(seed))")
                    return
                }
                let jobs = Dictionary(uniqueKeysWithValues: queue.map { ($0.id, $0) })
                placedMIG += plan.placements.filter { jobs[$0.jobID]?.migProfile != nil }.count
                placedShares +=
                    plan.placements.filter { jobs[$0.jobID]?.isolatedShares == true && jobs[$0.jobID]?.perNode.fractionMilli != nil }
                    .count
            }
        }
        // The cases are not empty: MIG jobs and isolated shares do get placed.
        #expect(placedMIG > 100 && placedShares > 100, "placed \(placedMIG) MIG jobs and \(placedShares) isolated shares")
    }

    /// MIG layouts an operator might cut an 80 GB A100 or H100 into (NVIDIA's MIG user guide).
    static let layouts: [[String]] = [
        Array(repeating: "1g.10gb", count: 7), ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"], ["4g.40gb", "3g.40gb"],
        ["1g.20gb", "1g.20gb", "1g.20gb", "1g.20gb"], ["7g.80gb"], ["2g.20gb", "2g.20gb", "3g.40gb"],
    ]

    /// A cluster where some GPUs are cut into MIG devices (slots 100 + 10 × GPU + device, as the store gives
    /// them), A100s come in 40 and 80 GB, shares are held by several organisations; jobs ask profiles, memory,
    /// full product names and shares in pools that keep organisations apart or not.
    static func migCluster(seed: UInt64) -> ([NodeSnapshot], [PendingJob]) {
        var rng = SeededRandom(seed: seed)
        let orgs = ["defence", "lab", "startup"]
        let isolated = ["a": true, "b": false]
        let products = [
            ("A100", "NVIDIA A100-SXM4-40GB", 40_960), ("A100", "NVIDIA A100-SXM4-80GB", 81_920), ("H100", "NVIDIA H100 80GB HBM3", 81_559),
        ]
        var nodes: [NodeSnapshot] = []
        for i in 0..<Int.random(in: 1...12, using: &rng) {
            let (model, product, memory) = products.randomElement(using: &rng)!
            var gpus: [GPUSlot] = []
            for g in 0..<[1, 2, 4, 8].randomElement(using: &rng)! {
                let health: GPUHealth = Int.random(in: 0..<12, using: &rng) == 0 ? .quarantined : .healthy
                if memory > 40_960 && Int.random(in: 0..<3, using: &rng) == 0 {
                    // MIG on: the GPU is its devices (the store leaves the GPU itself out of the snapshot).
                    for (k, profile) in Self.layouts.randomElement(using: &rng)!.enumerated() {
                        let charge = MIGProfile.shareMilli(profile: profile, gpuMemoryMiB: memory)
                        gpus.append(
                            GPUSlot(
                                index: 100 + g * 10 + k, model: model, nvlinkDomain: 0, health: health,
                                usedMilli: Int.random(in: 0..<4, using: &rng) == 0 ? charge : 0, productName: product,
                                memoryMiB: GPUMemory.forMatching(reportedMiB: 0, productName: product, migProfile: profile), migProfile: profile,
                                chargeMilli: charge))
                    }
                } else {
                    var slot = GPUSlot(index: g, model: model, nvlinkDomain: 0, health: health, productName: product, memoryMiB: memory)
                    switch Int.random(in: 0..<6, using: &rng) {
                    case 0: slot.usedMilli = 1000
                    case 1:
                        slot.usedMilli = [250, 500].randomElement(using: &rng)!
                        slot.shareOrg = orgs.randomElement(using: &rng)!
                        slot.shareAccount = "allot-\(slot.shareOrg!)" + (Bool.random(using: &rng) ? "-bob" : "")
                    default: break
                    }
                    gpus.append(slot)
                }
            }
            var node = NodeSnapshot(name: "n\(i)", pool: ["a", "b"].randomElement(using: &rng)!, cpuMilli: 64_000, memoryMiB: 512 * 1024, gpus: gpus)
            node.enforcesShares = Bool.random(using: &rng)
            nodes.append(node)
        }
        var queue: [PendingJob] = []
        for id in 0..<Int.random(in: 1...40, using: &rng) {
            var job = PendingJob.job(
                Int64(id), pool: ["a", "b"].randomElement(using: &rng)!, org: orgs.randomElement(using: &rng)!)
            job.isolatedShares = isolated[job.pool]!
            // The organisation's account, or a user's own (Policies/ userAccounts).
            job.account = "allot-\(job.org)" + (Bool.random(using: &rng) ? "-bob" : "")
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: job.perNode.gpus = [1, 2, 4].randomElement(using: &rng)!
            case 1:
                job.perNode.gpus = 0
                job.perNode.fractionMilli = [100, 250, 500].randomElement(using: &rng)!
            default:
                job.migProfile = ["1g.10gb", "1g.20gb", "3g.40gb", "2g.20gb", "7g.80gb", "1g.18gb"].randomElement(using: &rng)!
                job.perNode.gpus = [1, 1, 2, 3].randomElement(using: &rng)!
            }
            if Int.random(in: 0..<3, using: &rng) == 0 { job.gpuMemoryMiB = [10, 20, 40, 80].randomElement(using: &rng)! * 1024 }
            if Int.random(in: 0..<4, using: &rng) == 0 {
                job.gpuModels = [["NVIDIA A100-SXM4-80GB"], ["A100"], ["H100"], ["A100-SXM4-40GB"]].randomElement(using: &rng)!
            }
            if Int.random(in: 0..<4, using: &rng) == 0 { job.nodes = 2 }
            queue.append(job)
        }
        return (nodes, queue)
    }

    /// Checks one plan; returns what is wrong, if anything.
    static func violation(_ plan: Plan, nodes: [NodeSnapshot], queue: [PendingJob]) -> String? {
        var byName: [String: NodeSnapshot] = [:]
        for n in nodes { byName[n.name] = n }
        let jobs = Dictionary(uniqueKeysWithValues: queue.map { ($0.id, $0) })
        var placedIDs = Set<Int64>()
        for p in plan.placements {
            guard let job = jobs[p.jobID] else { return "placed unknown job \(p.jobID)" }
            guard placedIDs.insert(p.jobID).inserted else { return "job \(p.jobID) placed twice" }
            if plan.waiting[p.jobID] != nil { return "job \(p.jobID) both placed and waiting" }
            if p.ranks.count != job.nodes { return "gang \(job.id) got \(p.ranks.count) of \(job.nodes) nodes" }
            if Set(p.ranks.map(\.node)).count != p.ranks.count { return "gang \(job.id) has two ranks on one node" }
            if p.ranks.map(\.rank).sorted() != Array(0..<job.nodes) { return "job \(job.id) ranks are not 0..<\(job.nodes)" }
            for r in p.ranks {
                guard var node = byName[r.node] else { return "job \(job.id) on unknown node \(r.node)" }
                if node.pool != job.pool { return "job \(job.id) outside its pool on \(node.name)" }
                if node.state != .ready { return "job \(job.id) on \(node.state) node \(node.name)" }
                if let window = node.maintenanceInSeconds, (job.timeLimitSeconds ?? .max) > window {
                    return "job \(job.id) would run into the maintenance window of \(node.name)"
                }
                let expectedCount = job.perNode.fractionMilli != nil ? 1 : job.perNode.gpus
                let countOK = job.perNode.exclusive ? r.gpuIndices.count >= expectedCount : r.gpuIndices.count == expectedCount
                if !countOK || Set(r.gpuIndices).count != r.gpuIndices.count {
                    return "job \(job.id) got GPUs \(r.gpuIndices), wanted \(expectedCount)"
                }
                if job.perNode.exclusive && (node.usedCPUMilli > 0 || node.usedMemoryMiB > 0 || node.gpus.contains { $0.usedMilli > 0 }) {
                    return "exclusive job \(job.id) on busy node \(node.name)"
                }
                if r.cpuMilli < job.perNode.cpuMilli || r.memoryMiB < job.perNode.memoryMiB {
                    return "job \(job.id) reserved less than it asked on \(node.name)"
                }
                if job.migProfile == nil, r.milliPerGPU != (job.perNode.fractionMilli ?? 1000) { return "job \(job.id) milli \(r.milliPerGPU)" }
                for idx in r.gpuIndices {
                    guard let g = node.gpus.firstIndex(where: { $0.index == idx }) else { return "job \(job.id) on missing GPU \(idx)" }
                    let gpu = node.gpus[g]
                    if gpu.health == .quarantined { return "job \(job.id) on quarantined GPU \(node.name)/\(idx)" }
                    // MIG devices only to jobs of their profile, whole, charged their share; no GPU to a MIG job.
                    if (gpu.migProfile == nil) != (job.migProfile == nil) || !job.accepts(gpu) {
                        return "job \(job.id) (MIG \(job.migProfile ?? "-"), memory \(job.gpuMemoryMiB ?? 0)) on \(node.name)/\(idx) "
                            + "(MIG \(gpu.migProfile ?? "-"), \(gpu.memoryMiB) MiB)"
                    }
                    if gpu.migProfile != nil && (gpu.usedMilli > 0 || r.milliPerGPU != gpu.chargeMilli) {
                        return "MIG device \(node.name)/\(idx) held twice or charged \(r.milliPerGPU) of \(gpu.chargeMilli)"
                    }
                    // Where organisations keep apart, a share never joins another organisation's.
                    if job.perNode.fractionMilli != nil && job.isolatedShares && gpu.usedMilli > 0, let other = gpu.shareOrg, other != job.org {
                        return "job \(job.id) of \(job.org) shares \(node.name)/\(idx) with \(other)"
                    }
                    // Under MPS, one account's shares per GPU.
                    if job.perNode.fractionMilli != nil && node.enforcesShares && gpu.usedMilli > 0, let other = gpu.shareAccount,
                        other != job.account
                    {
                        return "job \(job.id) of account \(job.account ?? "-") shares MPS GPU \(node.name)/\(idx) with \(other)"
                    }
                    node.gpus[g].usedMilli += r.milliPerGPU
                    if job.perNode.fractionMilli != nil && node.gpus[g].shareOrg == nil { node.gpus[g].shareOrg = job.org }
                    if job.perNode.fractionMilli != nil && node.gpus[g].shareAccount == nil { node.gpus[g].shareAccount = job.account }
                    if node.gpus[g].usedMilli > 1000 { return "GPU \(node.name)/\(idx) booked to \(node.gpus[g].usedMilli) milli" }
                }
                node.usedCPUMilli += r.cpuMilli
                node.usedMemoryMiB += r.memoryMiB
                if node.usedCPUMilli > node.cpuMilli { return "node \(node.name) CPU over capacity" }
                if node.usedMemoryMiB > node.memoryMiB { return "node \(node.name) memory over capacity" }
                byName[r.node] = node
            }
        }
        for job in queue where !placedIDs.contains(job.id) && plan.waiting[job.id] == nil {
            return "job \(job.id) neither placed nor given a reason"
        }
        return nil
    }
}
