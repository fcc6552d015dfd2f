import AllotCore
import Foundation
import Synchronization

// Placement benchmarks (SPEC §8, issue 3), all in one run so the figures compare side by side:
//  - decisions per second for single-node jobs, and full cycles over a queue of 100,000 mixed jobs, with
//    cycle time p50/p99, on clusters of 1,000 / 10,000 / 50,000 nodes × 8 GPUs, and how the cost grows;
//  - packing quality at saturation for every strategy: the share of GPU capacity left unallocated when the
//    arrived demand reaches 100% and 130% of capacity (one-at-a-time arrivals, no departures), on a synthetic
//    workload shaped like published GPU-sharing cluster traces;
//  - small instances (`--small-nodes N`, default 3; `--small-seeds N`, default 20) against the placement
//    optimum, found by exhaustive search, and written out (`--instances FILE`) for ops/optimum.py to solve as an
//    integer programme.
// `ops/bench.sh` runs this in release mode, then the exact solver, and prints a table and JSON.

/// SplitMix64, so every cluster and queue is the same each run.
struct Random: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// One of `choices`, each with its weight.
    mutating func pick<T>(_ choices: [(T, Double)]) -> T {
        var r = Double.random(in: 0..<choices.reduce(0) { $0 + $1.1 }, using: &self)
        for (value, weight) in choices {
            r -= weight
            if r < 0 { return value }
        }
        return choices[choices.count - 1].0
    }
}

func cluster(nodes: Int, cpus: Int = 96) -> [NodeSnapshot] {
    (0..<nodes).map { i in
        NodeSnapshot(
            name: String(format: "n%06d", i), pool: "h200", block: "b\(i / 32)", cpuMilli: cpus * 1000, memoryMiB: 2_000_000,
            gpus: (0..<8).map { GPUSlot(index: $0, model: "H200", nvlinkDomain: 0) })
    }
}

/// The scheduler's mixed queue: single GPU, 2–4 GPUs, 8 GPUs, gangs of 2–16 nodes, fractional, CPU-only.
func mixedQueue(_ count: Int, seed: UInt64, singleNodeOnly: Bool = false) -> [PendingJob] {
    var rng = Random(state: seed)
    return (0..<count).map { i in
        var request = NodeRequest(gpus: 1, cpuMilli: 4000, memoryMiB: 32768)
        var nodes = 1
        switch rng.pick([("fraction", 0.25), ("cpu", 0.1), ("one", 0.35), ("few", 0.15), ("eight", 0.12), ("gang", singleNodeOnly ? 0 : 0.03)]) {
        case "fraction":
            request.gpus = 0
            request.fractionMilli = rng.pick([(100, 1), (250, 2), (300, 1), (500, 2), (700, 1)])
        case "cpu": request.gpus = 0
        case "one": break
        case "few": request.gpus = rng.pick([(2, 1), (4, 1)])
        case "eight": request.gpus = 8
        default:
            request.gpus = 8
            nodes = Int.random(in: 2...16, using: &rng)
        }
        return PendingJob(id: Int64(i), org: "o\(i % 8)", pool: "h200", nodes: nodes, perNode: request, priority: 100, submittedAt: Int64(i))
    }
}

/// A heterogeneous cluster and workloads shaped like the published production trace that fragmentation
/// studies use: Alibaba's cluster-trace-gpu-v2023 (`openb_node_list_gpu_node.csv`, `openb_pod_list_*.csv`,
/// Weng et al., ATC'23). The node types below, with their rough proportions, were read off that trace (weighted
/// so the totals match its 1,213 nodes, 6,212 GPUs and 107,018 CPUs): mostly 8-GPU nodes with 96 CPUs, many
/// 2-GPU nodes with 104 CPUs, some with little CPU; to them are added a few 1-GPU nodes (the trace has none) so
/// that every node size of a real national cluster — 1, 2, 4 and 8 GPUs, seven models — is there.
let traceNodeTypes: [((gpus: Int, cpus: Int, memoryMiB: Int, model: String), Double)] = [
    ((8, 96, 393_216, "G2"), 46), ((2, 104, 524_288, "T4"), 32), ((4, 96, 393_216, "T4"), 2), ((2, 16, 122_880, "P100"), 8),
    ((2, 64, 262_144, "P100"), 2), ((8, 128, 786_432, "G3"), 3), ((4, 32, 131_072, "V100M16"), 3), ((8, 64, 262_144, "V100M16"), 1),
    ((8, 96, 786_432, "V100M32"), 2), ((4, 48, 376_832, "V100M32"), 1), ((1, 32, 131_072, "T4"), 4), ((1, 16, 65_536, "A10"), 3),
]

func traceCluster(nodes: Int, seed: UInt64) -> [NodeSnapshot] {
    var rng = Random(state: seed &* 31)
    return (0..<nodes).map { i in
        let t = rng.pick(traceNodeTypes)
        return NodeSnapshot(
            name: String(format: "n%05d", i), pool: "h200", cpuMilli: t.cpus * 1000, memoryMiB: t.memoryMiB,
            gpus: (0..<t.gpus).map { GPUSlot(index: $0, model: t.model) })
    }
}

/// The pod shapes of the trace's default list, by kind: about half the pods take a share of one GPU (in odd
/// sizes such as 0.47 or 0.81), one in eight takes no GPU, most of the rest one GPU with 3–19 CPUs, a few 2, 4
/// or 8 GPUs. CPU often runs out before GPUs do. Single-node, as in the trace.
enum PodKind: CaseIterable { case cpuOnly, share, one, multi }

let tracePods: [PodKind: [(NodeRequest, Double)]] = {
    func share(_ milli: Int, _ cpu: Int, _ memory: Int) -> NodeRequest {
        NodeRequest(gpus: 0, fractionMilli: milli, cpuMilli: cpu, memoryMiB: memory)
    }
    func gpus(_ n: Int, _ cpu: Int, _ memory: Int) -> NodeRequest { NodeRequest(gpus: n, cpuMilli: cpu, memoryMiB: memory) }
    return [
        .cpuOnly: [
            (gpus(0, 8000, 30517), 4), (gpus(0, 32000, 49152), 3), (gpus(0, 12500, 57344), 1), (gpus(0, 16000, 31250), 1),
            (gpus(0, 20000, 65536), 1),
        ],
        .share: [
            (share(470, 8000, 30517), 5), (share(470, 11908, 47104), 4), (share(460, 6000, 12288), 4), (share(320, 4000, 15258), 3),
            (share(320, 8000, 30517), 2), (share(220, 4000, 15258), 2), (share(220, 8000, 30517), 1), (share(160, 4000, 15258), 1),
            (share(110, 4000, 15258), 1), (share(650, 11908, 47104), 3), (share(810, 3152, 5600), 4), (share(550, 4152, 10600), 1),
            (share(230, 4000, 30517), 1), (share(50, 4000, 15258), 0.5), (share(480, 4000, 22888), 1),
        ],
        .one: [
            (gpus(1, 3152, 5600), 5), (gpus(1, 12000, 24576), 3), (gpus(1, 16000, 32768), 3), (gpus(1, 11400, 48128), 3),
            (gpus(1, 18708, 64512), 2), (gpus(1, 12000, 16384), 2), (gpus(1, 9810, 41560), 1), (gpus(1, 8000, 16384), 1),
            (gpus(1, 4000, 24576), 1), (gpus(1, 15200, 80896), 1), (gpus(1, 11908, 47104), 1),
        ],
        // Two GPUs most often, eight least, with CPU and memory in proportion, as the trace's multi-GPU pods have.
        .multi: [
            (gpus(2, 6000, 65536), 3), (gpus(2, 16000, 98304), 2), (gpus(4, 32200, 132096), 2), (gpus(4, 24000, 98304), 1),
            (gpus(8, 88000, 327680), 1), (gpus(8, 64000, 262144), 1),
        ],
    ]
}()

/// A workload mix, after the trace's published variants (the `openb_pod_list_*` files the ATC'23 study
/// evaluates): how pods divide among the kinds, and how GPU pods are changed.
struct Mix: Sendable {
    var name: String
    var summary: String
    /// Percent of pods of each kind.
    var kinds: [PodKind: Double]
    /// GPU pods' CPU asks multiplied by this (capped at the largest node's CPUs).
    var cpuScale: Double = 1
    /// The share of GPU pods that accept only some models.
    var constrained: Double = 0
}

let mixes: [Mix] = [
    Mix(
        name: "default", summary: "the trace's own mix: 13% no GPU, 38% a share, 47% one GPU, 2% several",
        kinds: [.cpuOnly: 13, .share: 38, .one: 47, .multi: 2]),
    // The trace's shares bring more CPU per GPU than its whole-GPU pods (15 CPUs against 11): with its 13% of
    // CPU-only pods on top, a mix of shares alone would need 21 CPUs per GPU where the cluster has 17, and CPU,
    // not placement, would decide how many GPUs go unallocated. So the CPU-only pods are left out.
    Mix(name: "sharing-100", summary: "every pod takes a share of one GPU (gpushare100, without CPU-only pods)", kinds: [.share: 100]),
    Mix(name: "multi-gpu-20", summary: "20% of pods ask 2–8 whole GPUs (multigpu20)", kinds: [.cpuOnly: 13, .share: 30, .one: 37, .multi: 20]),
    Mix(name: "multi-gpu-50", summary: "50% of pods ask 2–8 whole GPUs (multigpu50)", kinds: [.cpuOnly: 13, .share: 16, .one: 21, .multi: 50]),
    // GPU pods ask a quarter more CPU than the trace's, and few pods come without a GPU: CPU demand per GPU is
    // 90% of what the cluster has (the default mix's is 84%), so CPU runs out on the nodes poor in it first
    // unless placement steers CPU-hungry pods to the nodes rich in it.
    Mix(
        name: "cpu-heavy", summary: "GPU pods ask 1.25× the CPUs, 5% take no GPU: 90% of the cluster's CPU per GPU",
        kinds: [.cpuOnly: 5, .share: 38, .one: 47, .multi: 2], cpuScale: 1.25),
    Mix(
        name: "model-constrained", summary: "a third of GPU pods accept only some models (gpuspec33)",
        kinds: [.cpuOnly: 13, .share: 38, .one: 47, .multi: 2],
        constrained: 0.33),
]

/// The model groups a constrained pod picks from, roughly by the GPUs each group has.
let modelGroups: [([String], Double)] = [
    (["G2"], 5), (["T4"], 2), (["V100M16", "V100M32"], 1), (["P100"], 1), (["G2", "G3"], 1), (["A10", "T4"], 1),
]

func workload(_ mix: Mix, _ count: Int, seed: UInt64) -> [PendingJob] {
    var rng = Random(state: seed)
    let kinds = PodKind.allCases.compactMap { k in mix.kinds[k].map { (k, $0) } }
    return (0..<count).map { i in
        var request = rng.pick(tracePods[rng.pick(kinds)]!)
        var models: [String] = []
        if request.gpuMilli > 0 {
            request.cpuMilli = min(128_000, Int(Double(request.cpuMilli) * mix.cpuScale))
            if mix.constrained > 0, Double.random(in: 0..<1, using: &rng) < mix.constrained { models = rng.pick(modelGroups) }
        }
        return PendingJob(id: Int64(i), org: "o\(i % 8)", pool: "h200", gpuModels: models, perNode: request, priority: 100, submittedAt: Int64(i))
    }
}

func traceWorkload(_ count: Int, seed: UInt64) -> [PendingJob] { workload(mixes[0], count, seed: seed) }

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

func percentile(_ xs: [Double], _ p: Double) -> Double {
    let s = xs.sorted()
    return s[min(s.count - 1, Int((p * Double(s.count - 1)).rounded()))]
}

// MARK: - Speed

struct CycleFigures: Codable {
    var workload: String
    var strategy: String
    var nodes: Int
    var queued: Int
    var cycles: Int
    var placedPerCycle: Int
    var cycleP50Seconds: Double
    var cycleP99Seconds: Double
    /// Jobs decided (placed or told why they wait) per second of the p50 cycle.
    var decisionsPerSecond: Double
    /// Cost per decision relative to the first cluster size of the same workload.
    var costPerDecisionRatio: Double?
}

/// Full cycles (every queued job decided once) on an empty cluster, repeated.
func cycles(_ workload: String, nodes n: Int, jobs: [PendingJob], strategy: ScoringStrategy, repeats: Int) -> CycleFigures {
    let nodes = cluster(nodes: n)
    let placer = Placer(strategy: strategy)
    let clock = ContinuousClock()
    var times: [Double] = []
    var placed = 0
    for _ in 0..<repeats {
        var plan = Plan()
        times.append(seconds(clock.measure { plan = placer.place(jobs, on: nodes) }))
        placed = plan.placements.count
    }
    return CycleFigures(
        workload: workload, strategy: strategy.rawValue, nodes: n, queued: jobs.count, cycles: repeats, placedPerCycle: placed,
        cycleP50Seconds: percentile(times, 0.5), cycleP99Seconds: percentile(times, 0.99),
        decisionsPerSecond: Double(jobs.count) / percentile(times, 0.5))
}

// MARK: - Packing

struct Packing: Codable {
    var mix: String
    var strategy: String
    var demand: Double
    var nodes: Int
    var seeds: Int
    /// Mean over the seeds of the share of GPU capacity left unallocated.
    var unallocatedGPUShare: Double
}

/// The arrivals until their GPU demand reaches `demand` × capacity.
func arrivals(_ workload: [PendingJob], demand: Double, capacityMilli: Int) -> [PendingJob] {
    var arrived = 0
    var out: [PendingJob] = []
    for job in workload {
        if Double(arrived) >= demand * Double(capacityMilli) { break }
        arrived += job.nodes * job.perNode.gpuMilli
        out.append(job)
    }
    return out
}

/// One-at-a-time arrivals, no departures; a job that does not fit when it arrives is turned away. The
/// fragmentation-aware strategy expects the shapes of `history` (what a running scheduler has seen in the last
/// day) and of the jobs that arrived since.
func replay(
    _ jobs: [PendingJob], on start: [NodeSnapshot], strategy: ScoringStrategy, history recent: WorkloadMix
) -> (allocatedMilli: Int, placed: [Int64: String], nodes: [NodeSnapshot]) {
    var nodes = start
    var history = recent
    var placed: [Int64: String] = [:]
    for job in jobs {
        let plan = Placer(strategy: strategy, expected: history).place([job], on: nodes)
        history.add(TaskShape(job))
        for p in plan.placements {
            for r in p.ranks { nodes.hold(r) }
            placed[p.jobID] = p.ranks.first?.node
        }
    }
    return (nodes.reduce(0) { $0 + $1.gpus.reduce(0) { $0 + $1.usedMilli } }, placed, nodes)
}

/// What is left free at the end of a replay, per node type: where GPUs are stranded and by what (`--detail`).
func leftovers(_ nodes: [NodeSnapshot], title: String) -> String {
    var byType: [String: (gpus: Int, of: Int, cpus: Int, memoryGiB: Int)] = [:]
    for n in nodes {
        let key = "\(n.gpus.count)×\(n.gpus.first?.model ?? "-") \(n.cpuMilli / 1000) CPUs"
        var e = byType[key] ?? (0, 0, 0, 0)
        e.gpus += n.gpus.reduce(0) { $0 + 1000 - $1.usedMilli }
        e.of += n.gpus.count * 1000
        e.cpus += (n.cpuMilli - n.usedCPUMilli) / 1000
        e.memoryGiB += (n.memoryMiB - n.usedMemoryMiB) / 1024
        byType[key] = e
    }
    let lines = byType.sorted { $0.key < $1.key }.map { k, v in
        String(
            format: "  %-22@ GPUs free %6.1f of %4d, CPUs free %5d, memory free %6d GiB", k as NSString, Double(v.gpus) / 1000, v.of / 1000, v.cpus,
            v.memoryGiB)
    }
    return ([title] + lines).joined(separator: "\n")
}

/// Every strategy on every mix at every demand, each the mean over `seeds`; the replays run on all cores.
func packing(_ mixes: [Mix], demands: [Double], nodes n: Int, seeds: [UInt64]) -> [Packing] {
    struct Case {
        var mix: Mix
        var strategy: ScoringStrategy
        var demand: Double
        var seed: UInt64
    }
    let cases = mixes.flatMap { m in
        ScoringStrategy.allCases.flatMap { s in demands.flatMap { d in seeds.map { Case(mix: m, strategy: s, demand: d, seed: $0) } } }
    }
    let shares = Mutex([Double](repeating: 0, count: cases.count))
    DispatchQueue.concurrentPerform(iterations: cases.count) { i in
        let c = cases[i]
        let nodes = traceCluster(nodes: n, seed: c.seed)
        let capacity = nodes.reduce(0) { $0 + $1.gpus.count } * 1000
        let jobs = arrivals(workload(c.mix, 20 * n, seed: c.seed), demand: c.demand, capacityMilli: capacity)
        let outcome = replay(jobs, on: nodes, strategy: c.strategy, history: recentHistory(c.mix, seed: c.seed))
        shares.withLock { $0[i] = 1 - Double(outcome.allocatedMilli) / Double(capacity) }
        if detail { print(leftovers(outcome.nodes, title: "\(c.mix.name), \(c.strategy.rawValue), \(Int(c.demand * 100))% demand, seed \(c.seed)")) }
    }
    let all = shares.withLock { $0 }
    return mixes.flatMap { m in
        ScoringStrategy.allCases.flatMap { s in
            demands.map { d in
                let mine = cases.indices.filter { cases[$0].mix.name == m.name && cases[$0].strategy == s && cases[$0].demand == d }.map { all[$0] }
                return Packing(
                    mix: m.name, strategy: s.rawValue, demand: d, nodes: n, seeds: seeds.count,
                    unallocatedGPUShare: mine.reduce(0, +) / Double(mine.count))
            }
        }
    }
}

/// The most GPU capacity any sequence of placement choices could have allocated for these arrivals, in their
/// order, each placed when it fits somewhere (as a scheduler without admission control does), or nil when the
/// search would visit more than `limit` states (6M take about 2 GB and half a minute). Branch and bound over
/// canonical states — nodes of one type in one state are interchangeable, as are GPUs of one node with the same
/// free share: a state is never searched twice (the same state after the same arrivals always holds the same
/// allocation), and a branch stops when even its best case could not beat the best found (which starts at
/// `atLeast`).
func placementOptimum(_ jobs: [PendingJob], on start: [NodeSnapshot], atLeast: Int, limit: Int = 6_000_000) -> Int? {
    // A node's state: its type, free CPU and memory, and the free thousandths of its GPUs, sorted.
    typealias State = [[Int]]
    func type(_ n: NodeSnapshot) -> String { "\(n.cpuMilli)/\(n.memoryMiB)/\(n.gpus.count)/\(n.gpus.first?.model ?? "")" }
    let types = Array(Set(start.map(type))).sorted()
    let typeModel = types.map { t in start.first { type($0) == t }!.gpus.first?.model ?? "" }
    let initial: State = start.map { n in
        [types.firstIndex(of: type(n))!, n.cpuMilli, n.memoryMiB] + Array(repeating: 1000, count: n.gpus.count)
    }.sorted { $0.lexicographicallyPrecedes($1) }
    func accepts(_ job: PendingJob, _ node: [Int]) -> Bool { job.perNode.gpuMilli == 0 || job.accepts(model: typeModel[node[0]]) }
    let capacity = start.reduce(0) { $0 + $1.gpus.count } * 1000
    // Demand still to arrive after job k.
    var remaining = Array(repeating: 0, count: jobs.count + 1)
    for k in stride(from: jobs.count - 1, through: 0, by: -1) { remaining[k] = remaining[k + 1] + jobs[k].perNode.gpuMilli }
    var seen = Set<[Int]>()
    var best = atLeast
    var cutOff = false
    func search(_ k: Int, _ state: State, _ allocated: Int) {
        if cutOff { return }
        best = max(best, allocated)
        if k == jobs.count || min(capacity, allocated + remaining[k]) <= best { return }
        // A sharper bound: capacity only shrinks, so an arrival that fits nowhere now never will, and free GPU
        // capacity on a node where no remaining arrival fits now stays free.
        var fitting = 0
        var usable = Array(repeating: false, count: state.count)
        for j in k..<jobs.count {
            let r = jobs[j].perNode
            var fits = false
            for (i, node) in state.enumerated() where node[1] >= r.cpuMilli && node[2] >= r.memoryMiB && accepts(jobs[j], node) {
                let gpus = node[3...]
                let ok =
                    r.fractionMilli.map { f in gpus.contains { $0 >= f } } ?? (r.gpus == 0 || gpus.filter { $0 == 1000 }.count >= r.gpus)
                if ok {
                    fits = true
                    if r.gpuMilli > 0 { usable[i] = true }
                }
            }
            if fits { fitting += r.gpuMilli }
        }
        let usableFree = state.indices.reduce(0) { $0 + (usable[$1] ? state[$1][3...].reduce(0, +) : 0) }
        if allocated + min(fitting, usableFree) <= best { return }
        guard seen.insert([k] + state.joined()).inserted else { return }
        if seen.count > limit {
            cutOff = true
            return
        }
        let r = jobs[k].perNode
        var outcomes = Set<State>()
        for (i, node) in state.enumerated() where i == 0 || node != state[i - 1] {
            guard node[1] >= r.cpuMilli, node[2] >= r.memoryMiB, accepts(jobs[k], node) else { continue }
            var choices: [[Int]] = []
            let gpus = Array(node[3...])
            if let f = r.fractionMilli {
                for (g, left) in gpus.enumerated() where left >= f && (g == 0 || gpus[g - 1] != left) {
                    var after = gpus
                    after[g] -= f
                    choices.append(after)
                }
            } else if r.gpus > 0 {
                let free = gpus.indices.filter { gpus[$0] == 1000 }
                if free.count >= r.gpus {
                    var after = gpus
                    for g in free.prefix(r.gpus) { after[g] = 0 }
                    choices.append(after)
                }
            } else {
                choices.append(gpus)
            }
            for after in choices {
                var next = state
                next[i] = [node[0], node[1] - r.cpuMilli, node[2] - r.memoryMiB] + after.sorted()
                outcomes.insert(next.sorted { $0.lexicographicallyPrecedes($1) })
            }
        }
        if outcomes.isEmpty { return search(k + 1, state, allocated) }
        // A fixed order (Set order changes between runs), so a cut-off search is cut off alike every time.
        for next in outcomes.sorted(by: { $0.joined().lexicographicallyPrecedes($1.joined()) }) {
            search(k + 1, next, allocated + r.gpuMilli)
        }
    }
    search(0, initial, 0)
    return cutOff ? nil : best
}

/// What a scheduler would have seen start in the hours before: 2,000 earlier pods of the same workload.
func recentHistory(_ mix: Mix, seed: UInt64) -> WorkloadMix {
    WorkloadMix().adding(workload(mix, 2000, seed: seed &+ 1_000_003))
}

/// A small instance: the nodes, the arrived jobs, what each strategy allocated placing them one at a time,
/// the placement optimum for that order, and (filled in by ops/optimum.py) the offline optimum.
struct Instance: Codable {
    struct Node: Codable {
        var name: String
        var model: String
        var gpus: Int
        var cpuMilli: Int
        var memoryMiB: Int
    }
    struct Job: Codable {
        var id: Int64
        var gpus: Int
        var milli: Int?
        var cpuMilli: Int
        var memoryMiB: Int
        /// The models it accepts; empty: any.
        var models: [String]
    }
    var mix: String
    var seed: UInt64
    var demand: Double
    var capacityMilli: Int
    var nodes: [Node]
    var jobs: [Job]
    /// GPU thousandths each strategy allocated.
    var allocatedMilli: [String: Int]
    /// The best any placement choices could allocate with the same arrivals in the same order; nil if the
    /// search was cut off.
    var placementOptimumMilli: Int?
}

func instances(_ mixes: [Mix], nodes n: Int, seeds: [UInt64], demands: [Double]) -> [Instance] {
    let cases = mixes.flatMap { m in seeds.flatMap { s in demands.map { (mix: m, seed: s, demand: $0) } } }
    let out = Mutex([Instance?](repeating: nil, count: cases.count))
    DispatchQueue.concurrentPerform(iterations: cases.count) { i in
        let (mix, seed, demand) = cases[i]
        let start = traceCluster(nodes: n, seed: seed)
        let capacity = start.reduce(0) { $0 + $1.gpus.count } * 1000
        let jobs = arrivals(workload(mix, 40 * n, seed: seed), demand: demand, capacityMilli: capacity)
        let allocated = Dictionary(
            uniqueKeysWithValues: ScoringStrategy.allCases.map {
                ($0.rawValue, replay(jobs, on: start, strategy: $0, history: recentHistory(mix, seed: seed)).allocatedMilli)
            })
        let instance = Instance(
            mix: mix.name, seed: seed, demand: demand, capacityMilli: capacity,
            nodes: start.map {
                .init(name: $0.name, model: $0.gpus.first?.model ?? "", gpus: $0.gpus.count, cpuMilli: $0.cpuMilli, memoryMiB: $0.memoryMiB)
            },
            jobs: jobs.map {
                .init(
                    id: $0.id, gpus: $0.perNode.gpus, milli: $0.perNode.fractionMilli, cpuMilli: $0.perNode.cpuMilli,
                    memoryMiB: $0.perNode.memoryMiB, models: $0.gpuModels)
            },
            allocatedMilli: allocated,
            placementOptimumMilli: placementOptimum(jobs, on: start, atLeast: allocated.values.max() ?? 0))
        out.withLock { $0[i] = instance }
    }
    return out.withLock { $0.compactMap { $0 } }
}

// MARK: - Run

let args = CommandLine.arguments
let quick = args.contains("--quick")
let instancesPath = args.firstIndex(of: "--instances").map { args[$0 + 1] }
let sizes = quick ? [250, 1000, 2500] : [1000, 10_000, 50_000]
let queued = quick ? 20_000 : 100_000
/// Nodes per small instance (`--small-nodes N`).
let smallNodes = args.firstIndex(of: "--small-nodes").map { Int(args[$0 + 1])! } ?? 3
/// Small instances per demand (`--small-seeds N`).
let smallSeeds = args.firstIndex(of: "--small-seeds").map { Int(args[$0 + 1])! } ?? (quick ? 3 : 10)
/// `--detail` prints, for every packing replay, what is left free per node type.
let detail = args.contains("--detail")
/// `--only speed|packing|small` runs one part (the others report empty).
let only = args.firstIndex(of: "--only").map { args[$0 + 1] }
func runs(_ part: String) -> Bool { only == nil || only == part }

// Single-node decisions: a queue four jobs deep per node, all of which fit (about 40% of the GPUs).
var speed: [CycleFigures] = []
for strategy in [ScoringStrategy.fragmentationAware, .bestFit] where runs("speed") {
    var first: CycleFigures?
    for n in sizes {
        var f = cycles(
            "single-node", nodes: n, jobs: mixedQueue(4 * n, seed: 42, singleNodeOnly: true), strategy: strategy, repeats: n >= 50_000 ? 3 : 5)
        first = first ?? f
        f.costPerDecisionRatio = first!.decisionsPerSecond / f.decisionsPerSecond
        speed.append(f)
    }
}
// Full cycles over 100,000 queued jobs of every shape, gangs included; most wait once the cluster is full.
var full: [CycleFigures] = []
var firstFull: CycleFigures?
for n in sizes where runs("speed") {
    var f = cycles("mixed", nodes: n, jobs: mixedQueue(queued, seed: 7), strategy: .fragmentationAware, repeats: n >= 50_000 ? 3 : 5)
    firstFull = firstFull ?? f
    f.costPerDecisionRatio = firstFull!.decisionsPerSecond / f.decisionsPerSecond
    full.append(f)
}

let packingSeeds: [UInt64] = quick ? [1, 2] : [1, 2, 3, 4, 5]
let packingNodes = quick ? 100 : 400
/// `--mix NAME` (repeatable) keeps only those mixes.
let chosenMixes = args.indices.filter { args[$0] == "--mix" }.map { args[$0 + 1] }
let mixesRun = chosenMixes.isEmpty ? mixes : mixes.filter { chosenMixes.contains($0.name) }
let quality = runs("packing") ? packing(mixesRun, demands: [1.0, 1.3], nodes: packingNodes, seeds: packingSeeds) : []
/// Per mix and demand: how many fewer GPUs the fragmentation-aware strategy leaves unallocated than best fit.
var fewerThanBestFit: [String: Double] = [:]
for mix in mixesRun where runs("packing") {
    for demand in [1.0, 1.3] {
        let share = { (s: ScoringStrategy) in
            quality.first { $0.mix == mix.name && $0.strategy == s.rawValue && $0.demand == demand }!.unallocatedGPUShare
        }
        fewerThanBestFit["\(mix.name) \(Int(demand * 100))%"] = 1 - share(.fragmentationAware) / share(.bestFit)
    }
}

// Small instances (`--small-nodes` nodes of the cluster's types), each strategy against the placement optimum.
let small =
    runs("small") ? instances(mixesRun, nodes: smallNodes, seeds: Array(1...UInt64(smallSeeds)), demands: [1.0, 1.3]) : []
if let path = instancesPath { try JSONEncoder().encode(small).write(to: URL(fileURLWithPath: path)) }
struct VersusOptimum: Codable {
    var mix: String
    var strategy: String
    var demand: Double
    /// Instances the exhaustive search finished (the others are left out of the figures).
    var solved: Int
    var instances: Int
    /// Σ allocated ÷ Σ optimum over the solved instances.
    var allocatedVsOptimum: Double
    /// The worst single instance.
    var worstInstance: Double
    /// Instances where the strategy reached the optimum.
    var optimal: Int
    /// The issue's packing measure on the solved instances: the share of GPU capacity the strategy left
    /// unallocated, and the share the optimum left.
    var unallocatedShare: Double
    var optimumUnallocatedShare: Double
}
let versus: [VersusOptimum] = (runs("small") ? mixesRun : []).flatMap { mix in
    [1.0, 1.3].flatMap { demand in
        ScoringStrategy.allCases.map { s in
            let all = small.filter { $0.mix == mix.name && $0.demand == demand }
            let solved = all.filter { $0.placementOptimumMilli != nil }
            let got = solved.map { Double($0.allocatedMilli[s.rawValue]!) }
            let best = solved.map { Double($0.placementOptimumMilli!) }
            let capacity = solved.reduce(0.0) { $0 + Double($1.capacityMilli) }
            return VersusOptimum(
                mix: mix.name, strategy: s.rawValue, demand: demand, solved: solved.count, instances: all.count,
                allocatedVsOptimum: got.reduce(0, +) / max(1, best.reduce(0, +)), worstInstance: zip(got, best).map { $0 / $1 }.min() ?? 1,
                optimal: zip(got, best).filter { $0 == $1 }.count,
                unallocatedShare: 1 - got.reduce(0, +) / max(1, capacity), optimumUnallocatedShare: 1 - best.reduce(0, +) / max(1, capacity))
        }
    }
}

struct Report: Codable {
    var singleNode: [CycleFigures]
    var fullCycle: [CycleFigures]
    var packing: [Packing]
    var fragmentationAwareFewerUnallocatedThanBestFit: [String: Double]
    var smallInstances: [VersusOptimum]
    /// Per size step: how much the node count grew, and what n log n would predict for the cost per decision.
    var growth: [String: Double]
}
var growth: [String: Double] = [:]
for (a, b) in zip(sizes, sizes.dropFirst()) {
    growth["\(a)→\(b) nodes ×"] = Double(b) / Double(a)
    growth["\(a)→\(b) n log n ×"] = (Double(b) * log(Double(b))) / (Double(a) * log(Double(a)))
}
let report = Report(
    singleNode: speed, fullCycle: full, packing: quality, fragmentationAwareFewerUnallocatedThanBestFit: fewerThanBestFit, smallInstances: versus,
    growth: growth)
let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
/// `--json-out FILE` writes the JSON there as well as printing the tables.
if let i = args.firstIndex(of: "--json-out") { try encoder.encode(report).write(to: URL(fileURLWithPath: args[i + 1])) }
if args.contains("--json") {
    print(String(decoding: try encoder.encode(report), as: UTF8.self))
} else {
    func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count + 1), withPad: " ", startingAt: 0) }
    if !speed.isEmpty {
        print(
            pad("WORKLOAD", 13) + pad("STRATEGY", 21) + pad("NODES", 7) + pad("QUEUED", 8) + pad("PLACED", 8) + pad("CYCLE p50", 11)
                + pad("CYCLE p99", 11) + pad("DECISIONS/s", 13) + "COST/DECISION ×")
        for f in speed + full {
            print(
                pad(f.workload, 13) + pad(f.strategy, 21) + pad("\(f.nodes)", 7) + pad("\(f.queued)", 8) + pad("\(f.placedPerCycle)", 8)
                    + pad(String(format: "%.4f s", f.cycleP50Seconds), 11) + pad(String(format: "%.4f s", f.cycleP99Seconds), 11)
                    + pad(String(format: "%.0f", f.decisionsPerSecond), 13) + String(format: "%.2f", f.costPerDecisionRatio ?? 1))
        }
        for (k, v) in growth.sorted(by: { $0.key < $1.key }) { print("\(k) \(String(format: "%.2f", v))") }
        print("")
    }
    if !quality.isEmpty {
        print(
            "Packing at saturation: unallocated GPU share, heterogeneous trace-shaped cluster of \(packingNodes) nodes, mean of \(packingSeeds.count) seeds"
        )
        let strategies = ScoringStrategy.allCases.map(\.rawValue)
        print(pad("MIX", 19) + pad("DEMAND", 8) + strategies.map { pad($0, 21) }.joined() + "FEWER THAN BEST-FIT")
        for mix in mixesRun {
            for demand in [1.0, 1.3] {
                let cells = strategies.map { s in
                    let p = quality.first { $0.mix == mix.name && $0.strategy == s && $0.demand == demand }!
                    return pad(String(format: "%.2f%%", p.unallocatedGPUShare * 100), 21)
                }
                let fewer = fewerThanBestFit["\(mix.name) \(Int(demand * 100))%"]!
                print(pad(mix.name, 19) + pad("\(Int(demand * 100))%", 8) + cells.joined() + String(format: "%.1f%%", fewer * 100))
            }
        }
        for mix in mixesRun { print("  \(mix.name): \(mix.summary)") }
        print("")
    }
    if !versus.isEmpty {
        print("Small instances (\(smallNodes) nodes) against the placement optimum (exhaustive search, same arrival order)")
        print(
            pad("MIX", 19) + pad("STRATEGY", 21) + pad("DEMAND", 8) + pad("SOLVED", 8) + pad("OF OPTIMUM", 12) + pad("WORST", 9) + pad("OPTIMAL", 9)
                + pad("UNALLOCATED", 13) + pad("OPTIMUM'S", 11) + "GAP (points of capacity)")
        for v in versus {
            print(
                pad(v.mix, 19) + pad(v.strategy, 21) + pad("\(Int(v.demand * 100))%", 8) + pad("\(v.solved)/\(v.instances)", 8)
                    + pad(String(format: "%.2f%%", v.allocatedVsOptimum * 100), 12) + pad(String(format: "%.2f%%", v.worstInstance * 100), 9)
                    + pad("\(v.optimal)", 9) + pad(String(format: "%.2f%%", v.unallocatedShare * 100), 13)
                    + pad(String(format: "%.2f%%", v.optimumUnallocatedShare * 100), 11)
                    + String(format: "%.2f", (v.unallocatedShare - v.optimumUnallocatedShare) * 100))
        }
    }
}
