import AllotCore
import AllotTesting
import Testing

@Suite("Simulator")
struct SimulatorTests {
    static func job(_ id: Int64, at: Int64, runs: Int64?, gpus: Int, org: String = "o") -> TraceJob {
        TraceJob(id: id, submitSeconds: at, durationSeconds: runs, job: .job(id, gpus: gpus, submittedAt: at, org: org))
    }

    @Test("jobs wait for room in virtual time, and the report adds up")
    func replay() {
        // One 8-GPU node: job 1 (8 GPUs, 100 s) at 0; job 2 (4 GPUs) at 10 waits until 100; job 3 (4 GPUs, forever) at 20 too.
        let report = Simulator(placer: Placer()).run(
            cluster: [.node("n1")],
            trace: [Self.job(1, at: 0, runs: 100, gpus: 8), Self.job(2, at: 10, runs: 50, gpus: 4), Self.job(3, at: 20, runs: nil, gpus: 4)]
        ) { decide in (decide(), 0.001) }
        #expect(report.placed == 3 && report.unplaced == 0)
        #expect(report.peakAllocatedGPUMilli == 8000)
        #expect(report.allocatedGPUMilli == 4000)  // job 3 never ends
        #expect(report.waitsByOrg["o"]?.maxSeconds == 90)  // job 2: 10 → 100
        #expect(report.simulatedSeconds == 150)
        // GPU-time held: 8 × 100 + 8 × 50 (jobs 2 and 3) = 1200 GPU-s over 150 s of 8 GPUs.
        #expect(abs(report.utilisation - 1200.0 / (150 * 8)) < 1e-9)
    }

    @Test("a job too big for the cluster stays unplaced and the replay still ends")
    func unplaceable() {
        let report = Simulator(placer: Placer()).run(cluster: [.node("n1")], trace: [Self.job(1, at: 0, runs: 10, gpus: 16)]) { ($0(), 0) }
        #expect(report.placed == 0 && report.unplaced == 1)
    }

    @Test(
        "a session (one cluster kept across calls, holding what it places, releasing what ends) decides exactly as a fresh call on the same nodes, every strategy, seeded random clusters and event sequences"
    )
    func sessionMatchesFreshCalls() async {
        for strategy in ScoringStrategy.allCases {
            for seed in PlacementPropertyTests.seeds.prefix(300) {
                await Task.yield()
                var (nodes, queue) = RandomCluster.make(seed: seed)
                // Heterogeneous clusters with MIG devices, memory and shares too, on odd seeds.
                if seed % 2 == 1 { (nodes, queue) = PlacementPropertyTests.migCluster(seed: seed) }
                var rng = SeededRandom(seed: seed)
                var session = Placer.Session(placer: Placer(strategy: strategy), nodes: nodes)
                var fresh = nodes.sorted { $0.name < $1.name }
                var expected = WorkloadMix()
                var running: [[RankAssignment]] = []
                var waiting = Array(queue.prefix(5))
                var arriving = Array(queue.dropFirst(5))
                for event in 0..<8 {
                    // Some of what runs ends; more arrives.
                    if !running.isEmpty && Bool.random(using: &rng) {
                        let ended = running.remove(at: Int.random(in: 0..<running.count, using: &rng))
                        for r in ended {
                            session.release(r)
                            fresh.hold(r, releasing: true)
                        }
                    }
                    waiting += arriving.prefix(Int.random(in: 0...4, using: &rng))
                    arriving = Array(arriving.dropFirst(min(arriving.count, 4)))
                    var placer = Placer(strategy: strategy)
                    placer.expected = expected
                    let want = placer.place(waiting, on: fresh)
                    let got = session.place(waiting, expected: expected)
                    if want.placements != got.placements || want.waiting != got.waiting {
                        Issue.record("seed \(seed), strategy \(strategy.rawValue), event \(event): the session decided otherwise")
                        return
                    }
                    let placed = Set(want.placements.map(\.jobID))
                    for p in want.placements {
                        for r in p.ranks { fresh.hold(r, for: waiting.first { $0.id == p.jobID }) }
                        running.append(p.ranks)
                        if let job = waiting.first(where: { $0.id == p.jobID }) { expected.add(job.perNode, weight: Double(job.nodes)) }
                    }
                    waiting.removeAll { placed.contains($0.id) }
                    if session.nodes != fresh.sorted(by: { $0.name < $1.name }) {
                        Issue.record("seed \(seed), strategy \(strategy.rawValue), event \(event): the session's nodes differ")
                        return
                    }
                }
            }
        }
    }
}
