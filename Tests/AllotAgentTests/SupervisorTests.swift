import AllotAgent
import AllotCore
import Foundation
import Testing

@Suite("Supervisor: real processes (without isolation, for development)")
struct SupervisorTests {
    static func stateDir() -> URL { FileManager.default.temporaryDirectory.appendingPathComponent("allot-sup-\(UUID().uuidString)") }

    static func launch(_ key: RankKey, _ command: String, gpus: [Int] = [2, 3], grace: Int = 5) -> LaunchRequest {
        LaunchRequest(
            key: key, command: command, env: ["JOB_VAR": "x y"], workingDir: nil, gpuIndices: gpus,
            gang: GangInfo(masterAddr: "10.0.0.1", masterPort: 29511, nnodes: 2, nodeRank: key.rank, nprocPerNode: gpus.count),
            gracePeriodSeconds: grace, tenant: RankTenant(org: "lab", owner: "alice", account: "nobody"))
    }

    /// Waits until the rank's log contains `text` (a rank saying it is ready: its traps are set).
    static func waitForLog(_ s: Supervisor, _ key: RankKey, _ text: String, seconds: Double = 30) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if let log = try? String(contentsOfFile: await s.logPath(for: key), encoding: .utf8), log.contains(text) { return }
            if Date() >= deadline { throw CancellationError() }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Polls until the rank is no longer running, or fails after `seconds`.
    static func waitForEnd(_ s: Supervisor, _ key: RankKey, seconds: Double = 15) async throws -> RankStatus {
        let deadline = Date().addingTimeInterval(seconds)
        // Look before checking the clock: a task woken late (the test pool is shared) still looks once more.
        while true {
            await s.poll()
            if let st = await s.all().first(where: { $0.key == key }), st.state != .running { return st }
            if Date() >= deadline { throw CancellationError() }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test("a launch names its GPUs by UUID: after a renumbering the rank gets the GPUs it was placed on; a GPU no longer listed is the node's fault")
    func gpusByUUID() async throws {
        let s = try Supervisor(stateDir: Self.stateDir(), node: "n1")
        // GPU-1 fell off the bus: nvidia-smi lists GPU-2 and GPU-3 at 1 and 2 now.
        await s.setGPUs(["GPU-0", "GPU-2", "GPU-3"].enumerated().map { GPUInfo(index: $0, uuid: $1, model: "H200", memoryMiB: 1, minorNumber: $0) })
        let key = RankKey(jobID: 21, attempt: 1, rank: 0)
        var request = Self.launch(key, "echo \"visible=$CUDA_VISIBLE_DEVICES\"", gpus: [2, 3])
        request.gpuUUIDs = ["GPU-2", "GPU-3"]
        _ = try await s.launch(request)
        #expect(try await Self.waitForEnd(s, key).exitCode == 0)
        #expect(try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8).contains("visible=1,2"))
        var gone = Self.launch(RankKey(jobID: 22, attempt: 1, rank: 0), "true", gpus: [1])
        gone.gpuUUIDs = ["GPU-1"]
        // The node's fault, not the job's: retried by allotd (409), never a refusal that fails the attempt.
        await #expect(throws: SupervisorError.gpuMissing("GPU-1")) { try await s.launch(gone) }
    }

    @Test("a rank sees its GPUs, the gang variables and the job's own, and its exit code is kept")
    func environmentAndExit() async throws {
        let s = try Supervisor(stateDir: Self.stateDir(), node: "n1")
        let key = RankKey(jobID: 7, attempt: 1, rank: 1)
        _ = try await s.launch(Self.launch(key, "env | sort; exit 3"))
        let end = try await Self.waitForEnd(s, key)
        #expect(end.state == .exited && end.exitCode == 3)
        let log = try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8)
        for line in [
            "CUDA_VISIBLE_DEVICES=2,3", "CUDA_DEVICE_ORDER=PCI_BUS_ID", "ALLOT_JOB_ID=7", "ALLOT_ATTEMPT=1", "NODE_RANK=1", "NNODES=2",
            "NPROC_PER_NODE=2", "MASTER_ADDR=10.0.0.1", "MASTER_PORT=29511", "PET_NODE_RANK=1", "PET_NNODES=2", "PET_NPROC_PER_NODE=2",
            "PET_MASTER_ADDR=10.0.0.1", "PET_MASTER_PORT=29511", "JOB_VAR=x y",
        ] {
            #expect(log.contains(line + "\n"), "missing \(line)")
        }
    }

    @Test("launching the same rank twice starts one process; an older attempt than one already run is refused")
    func idempotent() async throws {
        let s = try Supervisor(stateDir: Self.stateDir(), node: "n1")
        let key = RankKey(jobID: 8, attempt: 2, rank: 0)
        let first = try await s.launch(Self.launch(key, "sleep 30"))
        let second = try await s.launch(Self.launch(key, "sleep 30"))
        #expect(first.pid == second.pid)
        await #expect(throws: SupervisorError.self) { try await s.launch(Self.launch(RankKey(jobID: 8, attempt: 1, rank: 0), "true")) }
        _ = try await s.stop(key, gracePeriodSeconds: 0)
        _ = try await Self.waitForEnd(s, key)
    }

    @Test("stop sends SIGTERM to the whole group, which may checkpoint within its grace period")
    func gracefulStop() async throws {
        let dir = Self.stateDir()
        let s = try Supervisor(stateDir: dir, node: "n1")
        let key = RankKey(jobID: 9, attempt: 1, rank: 0)
        let marker = dir.appendingPathComponent("checkpointed").path
        _ = try await s.launch(Self.launch(key, "trap 'echo saved > \(marker); exit 0' TERM; echo ready; sleep 60 & wait"))
        try await Self.waitForLog(s, key, "ready")
        _ = try await s.stop(key, gracePeriodSeconds: 10)
        let end = try await Self.waitForEnd(s, key)
        #expect(end.state == .exited && end.exitCode == 0)
        #expect(FileManager.default.fileExists(atPath: marker))
    }

    @Test("a rank that ignores SIGTERM is killed when the grace period ends, with its children")
    func killAfterGrace() async throws {
        let dir = Self.stateDir()
        let s = try Supervisor(stateDir: dir, node: "n1")
        let key = RankKey(jobID: 10, attempt: 1, rank: 0)
        let pidFile = dir.appendingPathComponent("child.pid").path
        _ = try await s.launch(Self.launch(key, "trap '' TERM; sleep 60 & echo $! > \(pidFile); echo ready; wait"))
        try await Self.waitForLog(s, key, "ready")
        let started = Date()
        _ = try await s.stop(key, gracePeriodSeconds: 1)
        let end = try await Self.waitForEnd(s, key)
        #expect(end.signal == 9 && end.exitCode == 137)
        #expect(Date().timeIntervalSince(started) < 10)
        let child = Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))!
        try await Task.sleep(for: .milliseconds(200))
        #expect(!processIsAlive(child), "the rank's child survived")
    }

    @Test("a launch whose key another database's rank holds (another launch id) runs anew; that rank is never reported")
    func foreignRanks() async throws {
        let s = try Supervisor(stateDir: Self.stateDir(), node: "n1")
        let key = RankKey(jobID: 1, attempt: 1, rank: 0)
        var old = Self.launch(key, "echo old")
        old.launchID = "11111111-0000-0000-0000-000000000000"
        _ = try await s.launch(old)
        _ = try await Self.waitForEnd(s, key)
        await s.acknowledge([key])
        // A new database's job 1: the same numbers, another id. It runs, and its log is its own.
        var new = Self.launch(key, "echo new")
        new.launchID = "22222222-0000-0000-0000-000000000000"
        #expect(try await s.launch(new).state == .running)
        _ = try await Self.waitForEnd(s, key)
        #expect(try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8) == "new\n")
        // The same launch again (a retried request) is answered with that rank, not run twice.
        #expect(try await s.launch(new).state == .exited)

        // A foreign rank that still runs is killed, unreported, and the launch runs once it is gone.
        let busy = RankKey(jobID: 2, attempt: 1, rank: 0)
        var running = Self.launch(busy, "echo up; sleep 60")
        running.launchID = "33333333-0000-0000-0000-000000000000"
        _ = try await s.launch(running)
        try await Self.waitForLog(s, busy, "up")
        var other = Self.launch(busy, "echo mine")
        other.launchID = "44444444-0000-0000-0000-000000000000"
        await #expect(throws: SupervisorError.foreignRankRunning(busy)) { try await s.launch(other) }
        #expect(await !s.statuses().contains { $0.key == busy })
        let deadline = Date().addingTimeInterval(15)
        var launched: RankStatus?
        while launched == nil && Date() < deadline {
            await s.poll()
            launched = try? await s.launch(other)
            if launched == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(launched?.state == .running)
        _ = try await Self.waitForEnd(s, busy)
        #expect(try String(contentsOfFile: await s.logPath(for: busy), encoding: .utf8) == "mine\n")
    }

    @Test("after a restart with the same state folder, the agent still knows what it ran and adopts what still runs")
    func restart() async throws {
        let dir = Self.stateDir()
        let running = RankKey(jobID: 11, attempt: 1, rank: 0)
        let finished = RankKey(jobID: 12, attempt: 1, rank: 0)
        do {
            let s = try Supervisor(stateDir: dir, node: "n1")
            _ = try await s.launch(Self.launch(running, "sleep 30"))
            _ = try await s.launch(Self.launch(finished, "exit 4"))
            _ = try await Self.waitForEnd(s, finished)
        }
        let again = try Supervisor(stateDir: dir, node: "n1")
        let statuses = await again.statuses()
        #expect(statuses.first { $0.key == running }?.state == .running)
        #expect(statuses.first { $0.key == finished }?.exitCode == 4)
        // The scheduler no longer holds the adopted rank live: reconciliation stops it.
        let stopped = await again.reconcile(live: [], heartbeatSentAt: Date())
        #expect(stopped == [running])
        let end = try await Self.waitForEnd(again, running)
        #expect(end.state == .vanished)  // not our child: its exit status cannot be known
        await again.acknowledge([finished, running])
        #expect(await again.statuses().isEmpty)
    }
}

@Suite("Supervisor: batch scripts")
struct ScriptTests {
    @Test("a command with a #! line runs under its own interpreter")
    func shebang() async throws {
        let s = try Supervisor(stateDir: SupervisorTests.stateDir(), node: "n1")
        let key = RankKey(jobID: 20, attempt: 1, rank: 0)
        _ = try await s.launch(SupervisorTests.launch(key, "#!/bin/bash\n#SBATCH -p h200\necho \"bash $BASH_VERSION\"; [[ 1 == 1 ]] && exit 5"))
        let end = try await SupervisorTests.waitForEnd(s, key)
        #expect(end.exitCode == 5)
        #expect(try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8).hasPrefix("bash "))
    }

    @Test("a #! line's one argument is passed as the kernel passes it (#!/usr/bin/env bash)")
    func shebangArgument() async throws {
        let s = try Supervisor(stateDir: SupervisorTests.stateDir(), node: "n1")
        let key = RankKey(jobID: 21, attempt: 1, rank: 0)
        _ = try await s.launch(SupervisorTests.launch(key, "#!/usr/bin/env  bash \necho \"bash $BASH_VERSION\"; exit 6"))
        let end = try await SupervisorTests.waitForEnd(s, key)
        #expect(end.exitCode == 6)
        #expect(try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8).hasPrefix("bash "))
    }
}
