import AllotCore
import AllotTesting
import Testing

@Suite("Placer: choices on hand-built clusters")
struct PlacerTests {
    let placer = Placer(strategy: .bestFit)

    @Test("best fit fills the node that is left with the least free capacity")
    func bestFitPrefersFullestNode() {
        let nodes: [NodeSnapshot] = [
            .node("empty"),  // 8 free → 6 free after: score 6000
            .node("half").using([0, 1, 2, 3]),  // 4 free → 2 free after: score 2000 (best)
            .node("busy").using([0, 1, 2, 3, 4, 5, 6]),  // 1 free: cannot take 2
        ]
        let plan = self.placer.place([.job(1, gpus: 2)], on: nodes)
        #expect(plan.placements.first?.ranks.first?.node == "half")
        #expect(plan.placements.first?.ranks.first?.gpuIndices == [4, 5])
    }

    @Test(
        "spread takes the least allocated node; first-fit the first in name order",
        arguments: [
            (ScoringStrategy.spread, "a-empty"), (.firstFit, "a-empty"), (.bestFit, "b-half"),
        ])
    func strategies(strategy: ScoringStrategy, expected: String) {
        let nodes: [NodeSnapshot] = [.node("a-empty"), .node("b-half").using([0, 1, 2, 3])]
        let plan = Placer(strategy: strategy).place([.job(1, gpus: 1)], on: nodes)
        #expect(plan.placements.first?.ranks.first?.node == expected)
    }

    @Test("GPUs come from one NVLink domain, the smallest that fits")
    func nvlinkDomain() {
        // Domain 0 = GPUs 0-3, domain 1 = GPUs 4-7; 0 and 1 are taken, so domain 0 has 2 free and domain 1 has 4.
        let node = NodeSnapshot.node("n", domains: 2).using([0, 1])
        let two = self.placer.place([.job(1, gpus: 2)], on: [node])
        #expect(two.placements.first?.ranks.first?.gpuIndices == [2, 3])  // smallest domain that holds 2
        let three = self.placer.place([.job(1, gpus: 3)], on: [node])
        #expect(three.placements.first?.ranks.first?.gpuIndices == [4, 5, 6])  // only domain 1 holds 3
    }

    @Test("a gang is placed whole, on distinct nodes, preferring one block")
    func gangPrefersOneBlock() {
        let nodes: [NodeSnapshot] = [
            .node("a1", block: "r1"), .node("b1", block: "r2"), .node("b2", block: "r2"), .node("c1", block: "r3"),
        ]
        let plan = self.placer.place([.job(1, nodes: 2, gpus: 8)], on: nodes)
        let ranks = plan.placements.first?.ranks ?? []
        #expect(ranks.map(\.node) == ["b1", "b2"])
        #expect(ranks.map(\.rank) == [0, 1])
    }

    @Test("a gang that does not fit whole is not placed at all, and says why")
    func gangAllOrNothing() {
        let nodes: [NodeSnapshot] = [.node("a"), .node("b").using([0])]
        let plan = self.placer.place([.job(1, nodes: 2, gpus: 8)], on: nodes)
        #expect(plan.placements.isEmpty)
        #expect(plan.waiting[1] == .capacity(needed: 2, feasible: 1, topRejection: .gpus))
    }

    @Test("a fraction goes on the shared GPU whose leftover it fits best")
    func fractionBestLeftover() {
        // GPU 0 has 300 left, GPU 1 has 600 left, the rest are free: 250 fits GPU 0 best (50 left over).
        let node = NodeSnapshot.node("n", gpus: 4).using([0], milli: 700).using([1], milli: 400)
        let plan = self.placer.place([.job(1, milli: 250)], on: [node])
        #expect(plan.placements.first?.ranks.first?.gpuIndices == [0])
        #expect(plan.placements.first?.ranks.first?.milliPerGPU == 250)
    }

    @Test("fractions pack onto one GPU before cutting into another")
    func fractionsPack() {
        let plan = self.placer.place((1...4).map { .job(Int64($0), milli: 250) }, on: [.node("n", gpus: 2)])
        #expect(Set(plan.placements.flatMap { $0.ranks.flatMap(\.gpuIndices) }) == [0])
    }

    @Test("quarantined GPUs, other models, other pools and nodes not ready are never used")
    func filters() {
        let nodes: [NodeSnapshot] = [
            .node("sick", gpus: 2).unhealthy([0, 1]),
            .node("other-model", gpus: 2, model: "A100"),
            .node("other-pool", pool: "h100", gpus: 2),
            .node("cordoned", gpus: 2, state: .cordoned),
        ]
        let plan = self.placer.place([.job(1, gpus: 1, models: ["H200"])], on: nodes)
        #expect(plan.placements.isEmpty)
        #expect(plan.rejections[.gpuHealth] == 1)
        #expect(plan.rejections[.gpuModel] == 1)
        #expect(plan.rejections[.nodeState] == 1)
    }

    @Test("a job accepts any of several models")
    func severalModels() {
        let plan = self.placer.place([.job(1, gpus: 1, models: ["H100", "A100"])], on: [.node("x", model: "H200"), .node("y", model: "A100")])
        #expect(plan.placements.first?.ranks.first?.node == "y")
    }

    @Test("CPU-only work takes no GPU but counts its CPU and memory")
    func zeroGPUJobs() {
        let node = NodeSnapshot.node("n", cpus: 8, memoryGiB: 16)
        let plan = self.placer.place([.job(1, gpus: 0, cpus: 6), .job(2, gpus: 0, cpus: 6)], on: [node])
        #expect(plan.placements.map(\.jobID) == [1])
        #expect(plan.placements.first?.ranks.first?.gpuIndices == [])
        #expect(plan.waiting[2] != nil)
    }

    @Test("higher priority goes first, then the earlier submission")
    func queueOrder() {
        let jobs: [PendingJob] = [
            .job(1, gpus: 8, priority: 1, submittedAt: 5), .job(2, gpus: 8, priority: 9, submittedAt: 9),
            .job(3, gpus: 8, priority: 9, submittedAt: 1),
        ]
        let plan = self.placer.place(jobs, on: [.node("n")])
        #expect(plan.placements.map(\.jobID) == [3])
    }

    @Test("a job bigger than any node of its pool never fits, and says so")
    func neverFits() {
        let nodes: [NodeSnapshot] = [.node("a"), .node("b")]
        #expect(Placer.neverFitsReason(.job(1, gpus: 16), nodes: nodes)?.text == "no node in pool h200 fits 16 GPUs per node (not enough free GPUs)")
        #expect(Placer.neverFitsReason(.job(1, nodes: 3, gpus: 8), nodes: nodes) != nil)
        #expect(Placer.neverFitsReason(.job(1, nodes: 2, gpus: 8), nodes: nodes) == nil)
        #expect(Placer.neverFitsReason(.job(1, gpus: 1, models: ["B200"]), nodes: nodes) != nil)
        // Busy or quarantined now does not mean never.
        #expect(Placer.neverFitsReason(.job(1, gpus: 8), nodes: [NodeSnapshot.node("a").using([0]).unhealthy([1])]) == nil)
    }
}

@Suite("Placer: whole nodes")
struct ExclusiveTests {
    @Test("an exclusive job takes an idle node whole: every GPU, all CPU and memory")
    func exclusive() {
        var job = PendingJob.job(1, gpus: 2)
        job.perNode.exclusive = true
        let plan = Placer().place([job, .job(2, gpus: 1)], on: [.node("busy").using([0]), .node("idle", cpus: 32, memoryGiB: 256)])
        let rank = plan.placements.first { $0.jobID == 1 }?.ranks.first
        #expect(rank?.node == "idle")
        #expect(rank?.gpuIndices == Array(0..<8))
        #expect(rank?.cpuMilli == 32000 && rank?.memoryMiB == 256 * 1024)
        #expect(plan.placements.first { $0.jobID == 2 }?.ranks.first?.node == "busy")
    }

    @Test("--mem=0 reserves all of a node's memory, so only a node with none in use fits")
    func allMemory() {
        var job = PendingJob.job(1, gpus: 1)
        job.perNode.allMemory = true
        var used = NodeSnapshot.node("a-used", memoryGiB: 64)
        used.usedMemoryMiB = 1
        let plan = Placer().place([job], on: [used, .node("b-free", memoryGiB: 64)])
        #expect(plan.placements.first?.ranks.first?.node == "b-free")
        #expect(plan.placements.first?.ranks.first?.memoryMiB == 64 * 1024)
    }
}

@Suite("Reclaim and estimated start")
struct ReclaimTests {
    static func attempt(_ id: Int64, org: String, node: String, gpus: [Int], borrowing: Bool, started: Int64, endsAt: Int64? = nil) -> RunningAttempt
    {
        RunningAttempt(
            jobID: id, attempt: 1, org: org, pool: "h200", borrowing: borrowing, startedAt: started,
            ranks: [RankAssignment(rank: 0, node: node, gpuIndices: gpus, milliPerGPU: 1000)], endsAt: endsAt)
    }

    @Test("the fewest borrowers, youngest first, and never an organisation's own guaranteed share")
    func victims() {
        // B: guarantee 4, holds 8 on n1 (jobs 1 = own, 2 = borrowed) and 4 on n2 (job 3, borrowed, youngest).
        let nodes: [NodeSnapshot] = [.node("n1").using(Array(0..<8)), .node("n2").using([0, 1, 2, 3])]
        let running = [
            Self.attempt(1, org: "b", node: "n1", gpus: [0, 1, 2, 3], borrowing: false, started: 100),
            Self.attempt(2, org: "b", node: "n1", gpus: [4, 5, 6, 7], borrowing: true, started: 200),
            Self.attempt(3, org: "b", node: "n2", gpus: [0, 1, 2, 3], borrowing: true, started: 300),
        ]
        var book = QuotaBook()
        book["a", "h200"] = QuotaEntry(guaranteedMilli: 8000, limitMilli: 8000)
        book["b", "h200"] = QuotaEntry(guaranteedMilli: 4000, limitMilli: 16000, inUseMilli: 12000)
        let placer = Placer()
        // A needs 8 GPUs on one node: freeing job 3 empties n2: one victim is enough.
        #expect(placer.reclaim(for: .job(10, gpus: 8, org: "a"), on: nodes, running: running, book: book, now: 1000)?.map(\.jobID) == [3])
        // A needs 4 GPUs: the 4 free on n2 already fit, so nobody is preempted.
        #expect(placer.reclaim(for: .job(11, gpus: 4, org: "a"), on: nodes, running: running, book: book, now: 1000)?.isEmpty == true)
        // Too young to preempt.
        #expect(placer.reclaim(for: .job(10, gpus: 8, org: "a"), on: nodes, running: running, book: book, now: 1000, minimumRuntime: 900) == nil)
        // An organisation over its own guarantee gets nothing back.
        var over = book
        over["a", "h200"]!.inUseMilli = 4000
        #expect(placer.reclaim(for: .job(10, gpus: 8, org: "a"), on: nodes, running: running, book: over, now: 1000) == nil)
    }

    @Test("a waiting job's estimated start is the end of the running job after which it fits")
    func estimatedStart() {
        let nodes: [NodeSnapshot] = [.node("n1").using(Array(0..<8))]
        let placer = Placer()
        let early = Self.attempt(1, org: "x", node: "n1", gpus: [0, 1, 2, 3], borrowing: false, started: 0, endsAt: 5000)
        let late = Self.attempt(2, org: "x", node: "n1", gpus: [4, 5, 6, 7], borrowing: false, started: 0, endsAt: 9000)
        #expect(placer.estimatedStart(for: .job(3, gpus: 4), on: nodes, running: [late, early], now: 1000) == 5000)
        #expect(placer.estimatedStart(for: .job(3, gpus: 8), on: nodes, running: [late, early], now: 1000) == 9000)
        var unbounded = late
        unbounded.endsAt = nil
        #expect(placer.estimatedStart(for: .job(3, gpus: 8), on: nodes, running: [unbounded, early], now: 1000) == nil)
        #expect(placer.estimatedStart(for: .job(3, gpus: 8), on: [.node("n2")], running: [], now: 1000) == 1000)
    }
}
