import AllotCore
import AllotTesting
import Testing

/// Defragmentation plans and gangs by block.
@Suite("Defragmentation: the fewest moves of movable work that make room for a job capacity scattered")
struct DefragmentationTests {
    static let now: Int64 = 10_000
    static let limits = DefragmentationLimits(moves: 4, minimumRuntimeSeconds: 600)

    /// Nodes with the given attempts' ranks held on them.
    static func cluster(_ nodes: [NodeSnapshot], running: [RunningAttempt]) -> [NodeSnapshot] {
        var out = nodes
        for a in running { for r in a.ranks { out.hold(r) } }
        return out
    }

    /// A one-rank attempt of `gpus` whole GPUs (or a share) on `node`.
    static func attempt(
        _ job: Int64, on node: String, gpus: [Int], milli: Int = 1000, movable: Bool = true, preemptible: Bool = false, preempts: Bool = false,
        priority: Int = 0, startedAt: Int64 = 0, org: String = "org"
    ) -> RunningAttempt {
        var a = RunningAttempt(
            jobID: job, attempt: 1, org: org, pool: "h200", borrowing: false, startedAt: startedAt,
            ranks: [RankAssignment(rank: 0, node: node, gpuIndices: gpus, milliPerGPU: milli, cpuMilli: 0, memoryMiB: 0)])
        a.movable = movable
        a.preemptible = preemptible
        a.preempts = preempts
        a.priority = priority
        return a
    }

    /// Volcano's issue #3948: three 8-GPU nodes with 7, 6 and 7 GPUs used by 1-GPU jobs cannot take a 4-GPU job,
    /// though 4 GPUs are free in all.
    static func volcano(movable: Bool = true, startedAt: Int64 = 0, priority: Int = 0) -> (nodes: [NodeSnapshot], running: [RunningAttempt]) {
        var running: [RunningAttempt] = []
        var id: Int64 = 100
        for (node, used) in [("n1", 7), ("n2", 6), ("n3", 7)] {
            for g in 0..<used {
                running.append(Self.attempt(id, on: node, gpus: [g], movable: movable, priority: priority, startedAt: startedAt))
                id += 1
            }
        }
        return (Self.cluster([.node("n1"), .node("n2"), .node("n3")], running: running), running)
    }

    @Test("three nodes with 7, 6 and 7 of 8 GPUs used: two moves off the node with 6 make room for 4 GPUs")
    func volcanoIssue() throws {
        let (nodes, running) = Self.volcano()
        let job = PendingJob.job(1, gpus: 4)
        #expect(Placer().place([job], on: nodes).placements.isEmpty)
        let plan = try #require(Placer().defragmentation(for: job, on: nodes, running: running, now: Self.now, limits: Self.limits))
        // n2 has 2 free: 2 more make 4. n1 and n3 have 1 free: 3 moves each. The two moved 1-GPU jobs fit on the
        // one free GPU left on n1 and n3.
        #expect(plan.nodes == ["n2"])
        #expect(plan.moves.count == 2)
        #expect(plan.moves.allSatisfy { $0.from == ["n2"] })
        #expect(plan.summary.hasPrefix("moving jobs ") && plan.summary.hasSuffix(" from n2"))
    }

    @Test(
        "never moves what may not be moved: neither flagged nor preemptible, too young, of higher priority, or of a class that preempts",
        arguments: [
            ("not movable", false, 0 as Int64, 0),
            ("younger than the minimum runtime", true, DefragmentationTests.now - 60, 0),
            ("higher priority than the waiting job", true, 0 as Int64, 200),
        ])
    func neverMovesProtectedWork(_ why: String, movable: Bool, startedAt: Int64, priority: Int) {
        let (nodes, running) = Self.volcano(movable: movable, startedAt: startedAt, priority: priority)
        let job = PendingJob.job(1, gpus: 4, priority: 100)
        #expect(Placer().defragmentation(for: job, on: nodes, running: running, now: Self.now, limits: Self.limits) == nil, "\(why)")
    }

    @Test("a preemptible class may be moved; a class that preempts never, even when flagged")
    func classes() {
        var (nodes, running) = Self.volcano(movable: false)
        for i in running.indices { running[i].preemptible = true }
        let job = PendingJob.job(1, gpus: 4)
        #expect(Placer().defragmentation(for: job, on: nodes, running: running, now: Self.now, limits: Self.limits)?.moves.count == 2)
        (nodes, running) = Self.volcano(movable: true)
        for i in running.indices { running[i].preempts = true }
        #expect(Placer().defragmentation(for: job, on: nodes, running: running, now: Self.now, limits: Self.limits) == nil)
    }

    @Test("no plan beyond the moves left this hour")
    func limit() {
        let (nodes, running) = Self.volcano()
        let job = PendingJob.job(1, gpus: 4)
        let one = DefragmentationLimits(moves: 1, minimumRuntimeSeconds: 0)
        #expect(Placer().defragmentation(for: job, on: nodes, running: running, now: Self.now, limits: one) == nil)
    }

    @Test("capacity short, not scattered: 4 GPUs free cannot make room for 5, so no plan")
    func shortNotScattered() {
        let (nodes, running) = Self.volcano()
        #expect(Placer().defragmentation(for: .job(1, gpus: 5), on: nodes, running: running, now: Self.now, limits: Self.limits) == nil)
    }

    @Test("no plan when the moved work would have nowhere to go")
    func movedWorkMustFit() {
        // Two nodes: a 4-GPU movable job on each, and 4 free on each. A 6-GPU job: moving one 4-GPU job frees 8 on
        // its node, but the moved job then needs 4 free elsewhere — the other node has them: a plan. With the other
        // node full of unmovable work, the moved job would have nowhere to go: none.
        let running = [Self.attempt(10, on: "a", gpus: [0, 1, 2, 3]), Self.attempt(11, on: "b", gpus: [0, 1, 2, 3])]
        let nodes = Self.cluster([.node("a"), .node("b")], running: running)
        let job = PendingJob.job(1, gpus: 6)
        let plan = Placer().defragmentation(for: job, on: nodes, running: running, now: Self.now, limits: Self.limits)
        #expect(plan?.moves.map(\.jobID) == [10])
        #expect(plan?.nodes == ["a"])
        let blocked = running + [Self.attempt(12, on: "b", gpus: [4, 5, 6, 7], movable: false)]
        let full = Self.cluster([.node("a"), .node("b")], running: blocked)
        #expect(Placer().defragmentation(for: job, on: full, running: blocked, now: Self.now, limits: Self.limits) == nil)
    }

    @Test("a gang in a pool with blocks: the block whose nodes need the fewest moves (then the least moved), the pool holding the GPUs")
    func gangInBlock() throws {
        // Block r1: x1, x2 with 1 GPU used each (7 free each). Block r2: y1, y2, y3 with 2 GPUs used each (one job
        // each). A gang of 2 × 8 GPUs: either block takes 2 moves, one job per node; r1's move 2 GPUs, r2's 4, so
        // r1. The movers go to r2, which has 6 free on each node. Block r1 alone has 14 free of the 16 needed:
        // the pool's free GPUs (32) are what must be there.
        var running: [RunningAttempt] = []
        running.append(Self.attempt(10, on: "x1", gpus: [0]))
        running.append(Self.attempt(11, on: "x2", gpus: [0]))
        for (i, n) in ["y1", "y2", "y3"].enumerated() { running.append(Self.attempt(Int64(20 + i), on: n, gpus: [0, 1])) }
        let nodes = Self.cluster(
            [.node("x1", block: "r1"), .node("x2", block: "r1"), .node("y1", block: "r2"), .node("y2", block: "r2"), .node("y3", block: "r2")],
            running: running)
        let gang = PendingJob.job(1, nodes: 2, gpus: 8)
        let plan = try #require(Placer().defragmentation(for: gang, on: nodes, running: running, now: Self.now, limits: Self.limits))
        #expect(plan.nodes == ["x1", "x2"])
        #expect(plan.moves.map(\.jobID).sorted() == [10, 11])
    }

    @Test("nodes set aside for a plan are its job's: no other job takes them, and its job waits for them saying so")
    func setAside() {
        let plan = DefragmentationPlan(jobID: 1, pool: "h200", moves: [.init(jobID: 9, attempt: 1, from: ["a"])], nodes: ["a"])
        let nodes: [NodeSnapshot] = [.node("a").using([0, 1, 2, 3]), .node("b").using([0, 1, 2, 3, 4, 5, 6])]
        // Job 2 (1 GPU) would go to b by best fit anyway; job 3 (2 GPUs) fits only on a, which is set aside.
        let out = Placer(strategy: .bestFit).place([.job(1, gpus: 8), .job(2, gpus: 1), .job(3, gpus: 2)], on: nodes, defragmenting: [plan])
        #expect(out.placements.map(\.jobID) == [2])
        #expect(out.waiting[1] == .defragmentation("moving job 9 from a"))
        #expect(out.waiting[1]?.text == "waiting for defragmentation: moving job 9 from a")
        if case .capacity = out.waiting[3] {
        } else {
            Issue.record("job 3 should wait for capacity, not take a: \(String(describing: out.waiting[3]))")
        }
        // Once the moved work has stopped, the job takes its nodes.
        let freed: [NodeSnapshot] = [.node("a"), nodes[1]]
        #expect(Placer().place([.job(1, gpus: 8)], on: freed, defragmenting: [plan]).placements.first?.ranks.first?.node == "a")
    }

    @Test("plans move only allowed work, never more than the limit; after the moves the job fits and the moved work fits elsewhere")
    func properties() async {
        var plans = 0
        for seed in PlacementPropertyTests.seeds.prefix(6000) {
            await Task.yield()
            var rng = SeededRandom(seed: seed)
            let (nodes, running, job) = Self.randomCase(&rng)
            let limits = DefragmentationLimits(moves: Int.random(in: 1...5, using: &rng), minimumRuntimeSeconds: 600)
            guard let plan = Placer().defragmentation(for: job, on: nodes, running: running, now: Self.now, limits: limits) else { continue }
            plans += 1
            let fail = { (what: String) -> Void in Issue.record("seed \(seed): \(what) (replay: ALLOT_PROPERTY_SEED=\(seed))") }
            let byID = Dictionary(uniqueKeysWithValues: running.map { ($0.jobID, $0) })
            let moved = plan.moves.compactMap { byID[$0.jobID] }
            guard moved.count == plan.moves.count else { return fail("moves unknown work") }
            guard moved.allSatisfy({ Placer.mayMove($0, for: job, now: Self.now, minimumRuntimeSeconds: 600) }) else {
                return fail("moves work that may not be moved")
            }
            guard plan.moves.count <= limits.moves, !plan.moves.isEmpty else { return fail("\(plan.moves.count) moves, limit \(limits.moves)") }
            guard plan.nodes.count == job.nodes else { return fail("plan takes \(plan.nodes.count) nodes for \(job.nodes)") }
            var freed = nodes
            for m in moved { Placer.release(m, in: &freed) }
            // The job fits on the plan's nodes (the only nodes it may take), and the moved work around it.
            let others = Set(freed.map(\.name)).subtracting(plan.nodes)
            let placed = Placer().place([job], on: freed.filter { !others.contains($0.name) })
            guard let ranks = placed.placements.first?.ranks else { return fail("the job does not fit after the moves") }
            for r in ranks { freed.hold(r) }
            guard Placer().place(moved.map(\.asPending), on: freed).placements.count == moved.count else {
                return fail("the moved work does not fit elsewhere")
            }
        }
        // Enough random cases reach a plan for the properties to mean something.
        #expect(plans > 100, "only \(plans) plans")
    }

    /// A pool of 2–10 nodes (some in blocks) filled with attempts of mixed shapes and flags, and a job of 2–8
    /// GPUs, or a gang, that does not fit now.
    static func randomCase(_ rng: inout SeededRandom) -> ([NodeSnapshot], [RunningAttempt], PendingJob) {
        let blocks = Bool.random(using: &rng)
        var nodes = (0..<Int.random(in: 2...10, using: &rng)).map { i in
            NodeSnapshot.node("n\(i)", block: blocks ? "r\(i % 3)" : nil, gpus: [4, 8, 8].randomElement(using: &rng)!)
        }
        var running: [RunningAttempt] = []
        var id: Int64 = 100
        for (p, node) in nodes.enumerated() {
            var free = Array(0..<node.gpus.count)
            free.shuffle(using: &rng)
            while !free.isEmpty && Int.random(in: 0..<5, using: &rng) > 0 {
                let share = Int.random(in: 0..<5, using: &rng) == 0
                let n = share ? 1 : min(free.count, [1, 1, 2, 4].randomElement(using: &rng)!)
                let gpus = Array(free.prefix(n))
                free.removeFirst(n)
                var a = Self.attempt(
                    id, on: node.name, gpus: gpus, milli: share ? [250, 500].randomElement(using: &rng)! : 1000,
                    movable: Int.random(in: 0..<3, using: &rng) > 0, preemptible: Int.random(in: 0..<4, using: &rng) == 0,
                    preempts: Int.random(in: 0..<10, using: &rng) == 0, priority: Int.random(in: 0...2, using: &rng) * 50,
                    startedAt: Int64.random(in: 0...(Self.now), using: &rng))
                a.ranks[0].cpuMilli = Int.random(in: 0...8, using: &rng) * 1000
                running.append(a)
                for r in a.ranks { nodes.hold(r, at: p) }
                id += 1
            }
        }
        let gang = Int.random(in: 0..<4, using: &rng) == 0
        let job = PendingJob.job(
            1, nodes: gang ? 2 : 1, gpus: gang ? [4, 8].randomElement(using: &rng)! : [2, 4, 6, 8].randomElement(using: &rng)!, priority: 50)
        return (nodes, running, job)
    }
}

@Suite("Gangs by block")
struct GangBlockTests {
    @Test("a gang takes the block whose free nodes fit it most tightly, keeping a roomier block whole")
    func tightestBlock() {
        // Block r1 has 4 free nodes, r2 has 2: a gang of 2 goes to r2, so r1 can still take a gang of 4.
        let nodes: [NodeSnapshot] = ["a1", "a2", "a3", "a4"].map { .node($0, block: "r1") } + ["b1", "b2"].map { .node($0, block: "r2") }
        for strategy in ScoringStrategy.allCases {
            let plan = Placer(strategy: strategy).place([.job(1, nodes: 2, gpus: 8), .job(2, nodes: 4, gpus: 8)], on: nodes)
            #expect(plan.placements.count == 2, "\(strategy)")
            #expect(Set(plan.placements.first { $0.jobID == 1 }?.ranks.map(\.node) ?? []) == ["b1", "b2"], "\(strategy)")
        }
    }

    @Test("single-node work leaves alone the empty nodes of a block a queued gang needs, while it fits elsewhere")
    func singleNodeWorkAvoidsGangBlock() {
        // r1: two empty nodes, exactly what the queued gang of 2 needs; r2: one empty node. The 1-GPU job comes
        // first in queue order; by best fit or name order it would open a1 and leave the gang no block.
        let nodes: [NodeSnapshot] = [.node("a1", block: "r1"), .node("a2", block: "r1"), .node("b1", block: "r2")]
        let queue = [PendingJob.job(1, gpus: 1, priority: 10), .job(2, nodes: 2, gpus: 8)]
        for strategy in ScoringStrategy.allCases {
            let plan = Placer(strategy: strategy).place(queue, on: nodes)
            #expect(plan.placements.first { $0.jobID == 1 }?.ranks.first?.node == "b1", "\(strategy)")
            #expect(Set(plan.placements.first { $0.jobID == 2 }?.ranks.map(\.node) ?? []) == ["a1", "a2"], "\(strategy)")
        }
        // With nowhere else to go it still runs there.
        let only: [NodeSnapshot] = [.node("a1", block: "r1"), .node("a2", block: "r1")]
        #expect(Placer().place([.job(1, gpus: 1)] + [.job(2, nodes: 2, gpus: 8)], on: only).placements.map(\.jobID) == [1])
    }
}
