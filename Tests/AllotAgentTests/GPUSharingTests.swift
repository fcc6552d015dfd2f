import AllotAgent
import AllotCore
import Foundation
import Testing

/// Shared GPUs under MPS: one control daemon per GPU with shares on it, each rank held to its share. The daemon is
/// a stand-in script here (no GPU on the test machine) that records how the agent calls it; the ranks are real.
@Suite("GPU shares under MPS")
struct GPUSharingTests {
    @Test("a share's MPS variables: its thousandths as a thread percentage (at least 1) and its part of the GPU's memory, on device 0")
    func clientEnvironment() {
        let quarter = GPUSharingControl.clientEnvironment(shareMilli: 250, gpuMemoryMiB: 81_559, pipe: "/run/allot-mps")
        #expect(quarter["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25")
        #expect(quarter["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20389M")
        #expect(quarter["CUDA_MPS_PIPE_DIRECTORY"] == "/run/allot-mps")
        let sliver = GPUSharingControl.clientEnvironment(shareMilli: 5, gpuMemoryMiB: 0, pipe: "/p")
        #expect(sliver["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "1" && sliver["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == nil)
    }

    @Test("no nvidia-cuda-mps-control, or simulated GPUs: shares are soft")
    func soft() {
        let root = FileManager.default.temporaryDirectory
        #expect(GPUSharingControl.find(simulated: true, root: root).sharing == .soft)
        #expect(GPUSharingControl.find(simulated: false, root: root, environment: ["PATH": "/nonexistent"]).sharing == .soft)
    }

    @Test(
        "the first share of a GPU starts its daemon for that GPU alone; its ranks get their limits; the daemon quits after the last; whole-GPU ranks never touch MPS"
    )
    func daemonPerGPU() async throws {
        let dir = SupervisorTests.stateDir()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let calls = dir.appendingPathComponent("mps-calls.log").path
        let control = dir.appendingPathComponent("nvidia-cuda-mps-control").path
        try """
        #!/bin/sh
        input=""; if [ "$#" = 0 ]; then read -r input; fi
        echo "args=[$*] gpu=$CUDA_VISIBLE_DEVICES pipe=$CUDA_MPS_PIPE_DIRECTORY input=$input" >> \(calls)
        """.write(toFile: control, atomically: true, encoding: .utf8)
        chmod(control, 0o755)
        let sharing = GPUSharingControl.find(simulated: false, root: dir.appendingPathComponent("mps"), environment: ["ALLOT_MPS_CONTROL": control])
        #expect(sharing.sharing == .mps)
        let s = try Supervisor(stateDir: dir.appendingPathComponent("state"), node: "n1", sharing: sharing)
        await s.setGPUs((0..<2).map { GPUInfo(index: $0, uuid: "GPU-\($0)", model: "H100", memoryMiB: 80_000, minorNumber: $0) })
        func share(_ job: Int64, gpu: Int, milli: Int?, _ command: String) -> LaunchRequest {
            var r = SupervisorTests.launch(RankKey(jobID: job, attempt: 1, rank: 0), command, gpus: [gpu])
            r.gpuUUIDs = ["GPU-\(gpu)"]
            r.shareMilli = milli
            return r
        }
        let a = RankKey(jobID: 1, attempt: 1, rank: 0)
        let b = RankKey(jobID: 2, attempt: 1, rank: 0)
        // Share a runs until the test lets it go (a fixed sleep raced a loaded machine's launches).
        let release = dir.appendingPathComponent("release-a").path
        _ = try await s.launch(share(1, gpu: 0, milli: 250, "env | grep CUDA_ | sort; while [ ! -e '\(release)' ]; do sleep 0.05; done"))
        _ = try await s.launch(share(2, gpu: 0, milli: 500, "env | grep CUDA_ | sort"))
        _ = try await s.launch(share(3, gpu: 1, milli: nil, "env | grep CUDA_ | sort"))
        let started = try String(contentsOfFile: calls, encoding: .utf8)
        #expect(started.components(separatedBy: "args=[-d]").count == 2, "one daemon for GPU 0 only: \(started)")
        #expect(started.contains("args=[-d] gpu=GPU-0 pipe=\(sharing.pipeDirectory(gpu: "GPU-0").path)"))
        _ = try await SupervisorTests.waitForEnd(s, b)
        #expect(!(try String(contentsOfFile: calls, encoding: .utf8)).contains("input=quit"), "quit while a share still runs")
        #expect(FileManager.default.createFile(atPath: release, contents: nil))
        _ = try await SupervisorTests.waitForEnd(s, a)
        _ = try await SupervisorTests.waitForEnd(s, RankKey(jobID: 3, attempt: 1, rank: 0))
        let log = try String(contentsOfFile: await s.logPath(for: a), encoding: .utf8)
        #expect(log.contains("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25\n") && log.contains("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=20000M\n"), "\(log)")
        #expect(log.contains("CUDA_MPS_PIPE_DIRECTORY=\(sharing.pipeDirectory(gpu: "GPU-0").path)\n"))
        // The daemon sees its GPU alone: the client names it by UUID, not by the node's index.
        #expect(log.contains("CUDA_VISIBLE_DEVICES=GPU-0\n"), "\(log)")
        #expect(try String(contentsOfFile: await s.logPath(for: b), encoding: .utf8).contains("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50\n"))
        #expect(!(try String(contentsOfFile: await s.logPath(for: RankKey(jobID: 3, attempt: 1, rank: 0)), encoding: .utf8)).contains("CUDA_MPS"))
        let all = try String(contentsOfFile: calls, encoding: .utf8)
        #expect(all.components(separatedBy: "input=quit").count == 2 && all.contains("args=[] gpu=GPU-0"), "\(all)")
        // The next share of that GPU starts its daemon again.
        _ = try await s.launch(share(4, gpu: 0, milli: 100, "true"))
        #expect(try String(contentsOfFile: calls, encoding: .utf8).components(separatedBy: "args=[-d]").count == 3)
        _ = try await SupervisorTests.waitForEnd(s, RankKey(jobID: 4, attempt: 1, rank: 0))
    }
}
