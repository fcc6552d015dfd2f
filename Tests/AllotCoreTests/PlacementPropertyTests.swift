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
                if r.milliPerGPU != (job.perNode.fractionMilli ?? 1000) { return "job \(job.id) milli \(r.milliPerGPU)" }
                for idx in r.gpuIndices {
                    guard let g = node.gpus.firstIndex(where: { $0.index == idx }) else { return "job \(job.id) on missing GPU \(idx)" }
                    if node.gpus[g].health == .quarantined { return "job \(job.id) on quarantined GPU \(node.name)/\(idx)" }
                    if !job.accepts(model: node.gpus[g].model) { return "job \(job.id) on model \(node.gpus[g].model)" }
                    node.gpus[g].usedMilli += r.milliPerGPU
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
