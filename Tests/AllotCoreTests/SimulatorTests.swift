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
}
