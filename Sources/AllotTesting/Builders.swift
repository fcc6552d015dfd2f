public import AllotCore

/// Builders for the placement core's inputs, so a test reads as the cluster it describes:
/// `.node("n1", gpus: 8, model: "H200")`.
extension NodeSnapshot {
    public static func node(
        _ name: String, pool: String = "h200", block: String? = nil, gpus: Int = 8, model: String = "H200", domains: Int = 1,
        cpus: Int = 64, memoryGiB: Int = 1024, state: NodeState = .ready
    ) -> NodeSnapshot {
        NodeSnapshot(
            name: name, pool: pool, block: block, state: state, cpuMilli: cpus * 1000, memoryMiB: memoryGiB * 1024,
            gpus: (0..<gpus).map { GPUSlot(index: $0, model: model, nvlinkDomain: domains > 1 ? $0 * domains / gpus : 0) })
    }

    /// Marks GPUs as held (whole, or `milli` of each).
    public func using(_ indices: [Int], milli: Int = 1000) -> NodeSnapshot {
        var copy = self
        for i in indices { copy.gpus[i].usedMilli += milli }
        return copy
    }

    public func unhealthy(_ indices: [Int]) -> NodeSnapshot {
        var copy = self
        for i in indices { copy.gpus[i].health = .quarantined }
        return copy
    }
}

extension PendingJob {
    public static func job(
        _ id: Int64, pool: String = "h200", nodes: Int = 1, gpus: Int = 1, milli: Int? = nil, models: [String] = [], cpus: Int = 0,
        memoryGiB: Int = 0, priority: Int = 0, submittedAt: Int64 = 0, org: String = "org"
    ) -> PendingJob {
        PendingJob(
            id: id, org: org, pool: pool, gpuModels: models, nodes: nodes,
            perNode: NodeRequest(gpus: milli == nil ? gpus : 0, fractionMilli: milli, cpuMilli: cpus * 1000, memoryMiB: memoryGiB * 1024),
            priority: priority, submittedAt: submittedAt)
    }
}

/// A small, seedable generator (SplitMix64), so every random cluster can be replayed from its seed.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { self.state = seed }
    public mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random clusters and queues of mixed shapes for property tests: whole-GPU jobs, gangs, fractions,
/// CPU-only work, several models and pools, unhealthy GPUs, nodes not ready, GPUs already in use.
public enum RandomCluster {
    public static func make(seed: UInt64) -> (nodes: [NodeSnapshot], queue: [PendingJob]) {
        var rng = SeededRandom(seed: seed)
        let pools = ["a", "b"]
        let models = ["H200", "H100", "A100"]
        let nodeCount = Int.random(in: 1...24, using: &rng)
        var nodes: [NodeSnapshot] = []
        for i in 0..<nodeCount {
            let gpus = [0, 2, 4, 8, 8, 8].randomElement(using: &rng)!
            var node = NodeSnapshot.node(
                "n\(i)", pool: pools.randomElement(using: &rng)!, block: ["r1", "r2", nil].randomElement(using: &rng)!, gpus: gpus,
                model: models.randomElement(using: &rng)!, domains: Bool.random(using: &rng) ? 2 : 1, cpus: Int.random(in: 4...64, using: &rng),
                memoryGiB: Int.random(in: 16...512, using: &rng),
                state: Int.random(in: 0..<10, using: &rng) == 0 ? [.cordoned, .lost, .draining].randomElement(using: &rng)! : .ready)
            for g in 0..<gpus {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0: node.gpus[g].health = .quarantined
                case 1: node.gpus[g].usedMilli = 1000
                case 2: node.gpus[g].usedMilli = Int.random(in: 1...999, using: &rng)
                default: break
                }
            }
            node.usedCPUMilli = Int.random(in: 0...(node.cpuMilli / 2), using: &rng)
            if Int.random(in: 0..<8, using: &rng) == 0 { node.maintenanceInSeconds = Int64.random(in: 600...86_400, using: &rng) }
            nodes.append(node)
        }
        var queue: [PendingJob] = []
        for id in 0..<Int.random(in: 1...60, using: &rng) {
            let shape = Int.random(in: 0..<10, using: &rng)
            var job = PendingJob.job(
                Int64(id), pool: pools.randomElement(using: &rng)!, priority: Int.random(in: 0...3, using: &rng),
                submittedAt: Int64.random(in: 0...1000, using: &rng))
            switch shape {
            case 0...3: job.perNode.gpus = [1, 2, 4, 8].randomElement(using: &rng)!
            case 4, 5:
                job.nodes = Int.random(in: 2...6, using: &rng)
                job.perNode.gpus = [4, 8].randomElement(using: &rng)!
            case 6, 7:
                job.perNode.gpus = 0
                job.perNode.fractionMilli = [100, 250, 500, 750].randomElement(using: &rng)!
            default: job.perNode.gpus = 0
            }
            job.perNode.cpuMilli = Int.random(in: 0...8, using: &rng) * 1000
            job.perNode.memoryMiB = Int.random(in: 0...64, using: &rng) * 1024
            if Bool.random(using: &rng) { job.gpuModels = [models.randomElement(using: &rng)!] }
            if Int.random(in: 0..<5, using: &rng) == 0 { job.gpuModels = ["H200", "H100"] }
            if Int.random(in: 0..<20, using: &rng) == 0 { job.perNode.exclusive = true }
            if Int.random(in: 0..<20, using: &rng) == 0 { job.perNode.allMemory = true }
            if Bool.random(using: &rng) { job.timeLimitSeconds = Int64.random(in: 60...172_800, using: &rng) }
            queue.append(job)
        }
        return (nodes, queue)
    }
}
