import AllotCore
import AllotTesting
import Foundation
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

    @Test("a gang finds the one block that holds it however many better-scoring nodes lie in other blocks")
    func gangFindsFarBlock() {
        // 300 half-used nodes, each alone in its block, score better for best fit (4 free → 0 left) than the two
        // free nodes of block z (8 free → 4 left); only z holds both ranks of the gang in one block.
        let singles = (0..<300).map { NodeSnapshot.node(String(format: "a%03d", $0), block: "s\($0)").using([0, 1, 2, 3]) }
        let nodes = singles + [.node("z1", block: "z"), .node("z2", block: "z")]
        let plan = self.placer.place([.job(1, nodes: 2, gpus: 4)], on: nodes)
        #expect(plan.placements.first?.ranks.map(\.node) == ["z1", "z2"])
        // Without block z no block can hold it: the best nodes overall, in name order.
        let spanning = self.placer.place([.job(1, nodes: 2, gpus: 4)], on: singles)
        #expect(spanning.placements.first?.ranks.map(\.node) == ["a000", "a001"])
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

    @Test("an inference service's fractional replicas spread one per node, each on a GPU already shared where it has room")
    func replicasSpread() {
        // Three replicas of 300 thousandths (`replicas: 3` is three ranks). a and c each have a GPU with 400 left
        // and b none shared: one replica per node, on the shared GPU where there is one, on a fresh GPU of b.
        let nodes: [NodeSnapshot] = [
            .node("a", gpus: 2).using([1], milli: 600), .node("b", gpus: 2), .node("c", gpus: 2).using([0], milli: 600),
        ]
        // Fragmentation-aware keeps whole GPUs whole when whole-GPU work is expected: with only 300-shares
        // expected, a 300 on the free GPU (700 and 400 left, both take another) beats one on the shared GPU
        // (100 left, which none can use).
        let wholeExpected = WorkloadMix([NodeRequest(gpus: 1)])
        for strategy in ScoringStrategy.allCases {
            let plan = Placer(strategy: strategy, expected: wholeExpected).place([.job(1, nodes: 3, milli: 300)], on: nodes)
            let ranks = plan.placements.first?.ranks ?? []
            #expect(ranks.map(\.node).sorted() == ["a", "b", "c"], "\(strategy)")
            #expect(ranks.first { $0.node == "a" }?.gpuIndices == [1], "\(strategy)")
            #expect(ranks.first { $0.node == "c" }?.gpuIndices == [0], "\(strategy)")
        }
        // Four replicas on three nodes: none is placed (never two on one node), and the reason says so.
        let four = self.placer.place([.job(2, nodes: 4, milli: 300)], on: nodes)
        #expect(four.placements.isEmpty)
        #expect(four.waiting[2] != nil)
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

@Suite("Backfill")
struct BackfillTests {
    static func running(_ id: Int64, node: String, gpus: [Int], endsAt: Int64?) -> RunningAttempt {
        RunningAttempt(
            jobID: id, attempt: 1, org: "o", pool: "h200", borrowing: false, startedAt: 0,
            ranks: [RankAssignment(rank: 0, node: node, gpuIndices: gpus, milliPerGPU: 1000)], endsAt: endsAt)
    }

    @Test("a blocked gang gets a reservation; later jobs start only where they cannot delay it")
    func easy() {
        // a: busy until 1000; b: half busy until 5000; c: idle. The 2-node gang fits at 1000, on a and c.
        let nodes: [NodeSnapshot] = [.node("a").using(Array(0..<8)), .node("b").using([0, 1, 2, 3]), .node("c")]
        let running = [Self.running(1, node: "a", gpus: Array(0..<8), endsAt: 1000), Self.running(2, node: "b", gpus: [0, 1, 2, 3], endsAt: 5000)]
        var gang = PendingJob.job(10, nodes: 2, gpus: 8, priority: 9)
        gang.timeLimitSeconds = 3600
        var short = PendingJob.job(11, gpus: 4, submittedAt: 1)
        short.timeLimitSeconds = 500  // ends at 500, before the reservation: may go anywhere (best fit: b)
        var long = PendingJob.job(12, gpus: 4, submittedAt: 2)
        long.timeLimitSeconds = 10_000  // would still run at 1000: not on a or c; b is full now
        let plan = Placer().place([gang, short, long], on: nodes, backfill: Backfill(running: running, now: 0))
        #expect(plan.reservations["h200"] == Reservation(jobID: 10, startsAt: 1000, nodes: ["a", "c"]))
        #expect(plan.placements.map(\.jobID) == [11])
        #expect(plan.placements.first?.ranks.first?.node == "b")
        #expect(plan.waiting[12] == .reserved(forJob: 10))
        #expect(plan.waiting[12]?.text == "reserved for job 10: the nodes it fits on are held for an earlier job")
        // Without backfill, the long job would take c and push the gang back past 1000.
        #expect(Placer().place([gang, short, long], on: nodes).placements.first { $0.jobID == 12 }?.ranks.first?.node == "c")
    }

    @Test("--time-min: a job whose limit crosses the reservation starts on its nodes with the limit cut, if its time-min fits")
    func timeMin() {
        let nodes: [NodeSnapshot] = [.node("a").using(Array(0..<8)), .node("b").using([0, 1, 2, 3]), .node("c")]
        let running = [Self.running(1, node: "a", gpus: Array(0..<8), endsAt: 1000), Self.running(2, node: "b", gpus: [0, 1, 2, 3], endsAt: 5000)]
        var gang = PendingJob.job(10, nodes: 2, gpus: 8, priority: 9)
        gang.timeLimitSeconds = 3600
        var flexible = PendingJob.job(12, gpus: 8, submittedAt: 2)
        flexible.timeLimitSeconds = 10_000
        flexible.timeMinSeconds = 600  // 600 ≤ 1000 − 0: runs on c until the reservation starts
        var rigid = PendingJob.job(13, gpus: 8, submittedAt: 3)
        rigid.timeLimitSeconds = 10_000
        rigid.timeMinSeconds = 1200  // does not fit before 1000: waits
        let plan = Placer().place([gang, flexible, rigid], on: nodes, backfill: Backfill(running: running, now: 0))
        #expect(plan.placements.map(\.jobID) == [12])
        #expect(plan.placements.first?.timeLimitSeconds == 1000, "10,000 s cut to the 1,000 s before the reservation")
        #expect(plan.placements.first?.ranks.first?.node == "c")
        #expect(plan.waiting[13] != nil)
        var asPlaced = flexible
        asPlaced.timeLimitSeconds = 1000
        #expect(Self.reservationHolds(plan, nodes: nodes, running: running, queue: [gang, asPlaced, rigid], now: 0) == nil)
    }

    /// Replays one cycle's aftermath at the reservation's start: running jobs and this cycle's placements that
    /// end by then are gone; the reserved job must fit on its reserved nodes.
    static func reservationHolds(_ plan: Plan, nodes: [NodeSnapshot], running: [RunningAttempt], queue: [PendingJob], now: Int64) -> String? {
        for (pool, r) in plan.reservations {
            guard let job = queue.first(where: { $0.id == r.jobID }) else { return "reservation for unknown job" }
            var after = nodes
            var live = running
            for p in plan.placements {
                let j = queue.first { $0.id == p.jobID }!
                live.append(
                    RunningAttempt(
                        jobID: p.jobID, attempt: 0, org: j.org, pool: j.pool, borrowing: false, startedAt: now, ranks: p.ranks,
                        endsAt: j.timeLimitSeconds.map { now + $0 }))
                for rank in p.ranks { after.hold(rank) }
            }
            var released = after
            for a in live where a.endsAt != nil && a.endsAt! <= r.startsAt {
                for rank in a.ranks { released.hold(rank, releasing: true) }
            }
            if Placer().place([job], on: released.filter { r.nodes.contains($0.name) }).placements.isEmpty {
                return "backfill delayed job \(r.jobID)'s reservation in pool \(pool) at \(r.startsAt)"
            }
        }
        return nil
    }

    @Test("backfill never delays the reservation, over many random clusters")
    func neverDelays() async {
        let runs = PlacementPropertyTests.seeds.prefix(2000)
        for seed in runs {
            await Task.yield()  // CPU-bound: see PlacementPropertyTests
            var (nodes, queue) = RandomCluster.make(seed: seed)
            var rng = SeededRandom(seed: seed ^ 0xBAC_F111)
            // What runs now: a first cycle's placements, ending at random times (some without a limit).
            for i in nodes.indices {
                for g in nodes[i].gpus.indices { nodes[i].gpus[g].usedMilli = 0 }; nodes[i].usedCPUMilli = 0; nodes[i].usedMemoryMiB = 0
            }
            let first = Placer().place(Array(queue.prefix(queue.count / 2)), on: nodes)
            var running: [RunningAttempt] = []
            for p in first.placements {
                let ends: Int64? = Int.random(in: 0..<5, using: &rng) == 0 ? nil : Int64.random(in: 1...10_000, using: &rng)
                running.append(
                    RunningAttempt(
                        jobID: p.jobID, attempt: 1, org: "o", pool: queue.first { $0.id == p.jobID }!.pool, borrowing: false,
                        startedAt: 0, ranks: p.ranks, endsAt: ends))
                for rank in p.ranks { nodes.hold(rank) }
            }
            queue = Array(queue.dropFirst(queue.count / 2)).map { j in
                var j = j
                j.timeLimitSeconds = Int.random(in: 0..<4, using: &rng) == 0 ? nil : Int64.random(in: 60...20_000, using: &rng)
                return j
            }
            let plan = Placer().place(queue, on: nodes, backfill: Backfill(running: running, now: 0))
            if let problem = Self.reservationHolds(plan, nodes: nodes, running: running, queue: queue, now: 0)
                ?? PlacementPropertyTests.violation(plan, nodes: nodes, queue: queue)
            {
                Issue.record("seed \(seed): \(problem) (replay: ALLOT_PROPERTY_SEED=\(seed))")
                return
            }
        }
    }
}

@Suite("Preemption by priority class")
struct ClassPreemptionTests {
    @Test("a class that preempts stops preemptible work of lower priority, borrowers first, then the youngest; never a job too young")
    func victims() {
        let nodes: [NodeSnapshot] = [.node("n1").using(Array(0..<8))]
        func attempt(_ id: Int64, gpus: [Int], started: Int64, preemptible: Bool, borrowing: Bool = false, priority: Int = 10) -> RunningAttempt {
            var a = ReclaimTests.attempt(id, org: "x", node: "n1", gpus: gpus, borrowing: borrowing, started: started)
            a.preemptible = preemptible
            a.priority = priority
            return a
        }
        let running = [
            attempt(1, gpus: [0, 1, 2, 3], started: 100, preemptible: true),
            attempt(2, gpus: [4, 5], started: 300, preemptible: true),
            attempt(3, gpus: [6, 7], started: 200, preemptible: false, priority: 100),
        ]
        var urgent = PendingJob.job(9, gpus: 4, priority: 1000)
        urgent.preempts = true
        // 4 GPUs: job 2 (youngest preemptible) frees only 2, so job 1 too; pruning keeps only job 1.
        #expect(Placer().preemption(for: urgent, on: nodes, running: running, now: 1000, minimumRuntime: 0)?.map(\.jobID) == [1])
        // Job 1 is younger than the minimum runtime, job 3 is not preemptible: nothing can be done.
        #expect(Placer().preemption(for: urgent, on: nodes, running: running, now: 1000, minimumRuntime: 950) == nil)
        // Without `preempts`, no preemption at all.
        #expect(Placer().preemption(for: .job(9, gpus: 4, priority: 1000), on: nodes, running: running, now: 1000, minimumRuntime: 0) == nil)
    }

    @Test("preemption touches only allowed victims and frees enough, over many random clusters")
    func property() async {
        for seed in PlacementPropertyTests.seeds.prefix(2000) {
            await Task.yield()  // CPU-bound: see PlacementPropertyTests
            var (nodes, queue) = RandomCluster.make(seed: seed)
            var rng = SeededRandom(seed: seed ^ 0x9E3)
            for i in nodes.indices {
                for g in nodes[i].gpus.indices { nodes[i].gpus[g].usedMilli = 0 }
                nodes[i].usedCPUMilli = 0
                nodes[i].usedMemoryMiB = 0
            }
            let first = Placer().place(Array(queue.prefix(queue.count / 2)), on: nodes)
            var running: [RunningAttempt] = []
            for p in first.placements {
                var a = RunningAttempt(
                    jobID: p.jobID, attempt: 1, org: "o", pool: queue.first { $0.id == p.jobID }!.pool, borrowing: Bool.random(using: &rng),
                    startedAt: Int64.random(in: 0...1000, using: &rng), ranks: p.ranks)
                a.preemptible = Bool.random(using: &rng)
                a.priority = Int.random(in: 0...3, using: &rng)
                running.append(a)
                for r in p.ranks { nodes.hold(r) }
            }
            for var job in queue.dropFirst(queue.count / 2) {
                job.preempts = true
                guard let victims = Placer().preemption(for: job, on: nodes, running: running, now: 1000, minimumRuntime: 300) else { continue }
                for v in victims where v.pool != job.pool || !(v.preemptible || v.borrowing) || v.priority >= job.priority || 1000 - v.startedAt < 300
                {
                    Issue.record("seed \(seed): job \(job.id) would preempt \(v.jobID), which is not allowed (replay: ALLOT_PROPERTY_SEED=\(seed))")
                    return
                }
                var freed = nodes
                for v in victims { Placer.release(v, in: &freed) }
                if Placer().place([job], on: freed).placements.isEmpty {
                    Issue.record("seed \(seed): preempting \(victims.map(\.jobID)) does not make room for job \(job.id)")
                    return
                }
            }
        }
    }
}
