import AllotCore
import Foundation
import Testing

@testable import AllotAgent

#if canImport(Glibc)
    import Glibc
#endif

/// A batch script's ranks as Slurm would run them: the `SLURM_*` variables, `scontrol`, the submit directory,
/// the `--output` file, and `--signal` ahead of the time limit and of a drain's stop. Real processes.
@Suite("Batch scripts on the agent: SLURM_* variables, scontrol, output files, --signal")
struct SlurmAgentTests {
    static func request(
        _ key: RankKey, _ command: String, nodes: [String] = ["gpu-001", "gpu-002", "gpu-003"], options: SlurmOptions = SlurmOptions(),
        timeLimit: Int64? = nil, signal: JobSignal? = nil
    ) -> LaunchRequest {
        LaunchRequest(
            key: key, command: command, env: [:], workingDir: nil, gpuIndices: [0, 1],
            gang: GangInfo(masterAddr: "10.0.0.1", masterPort: 29511, nnodes: nodes.count, nodeRank: key.rank, nprocPerNode: 2),
            gracePeriodSeconds: 5, tenant: RankTenant(org: "lab", owner: "alice", account: "nobody", cpuMilli: 8000, memoryMiB: 4096),
            timeLimitSeconds: timeLimit, signal: signal,
            slurm: SlurmLaunch(
                options: options, jobName: "run one", account: "lab/llm", partition: "h200",
                nodes: nodes.map { SlurmLaunch.Node(name: $0, address: "127.0.0.1") }))
    }

    static func folder() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-slurm-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test("the variables Slurm scripts read, and scontrol show hostnames|hostlist|job")
    func variablesAndScontrol() async throws {
        let submit = try Self.folder()
        let s = try Supervisor(stateDir: SupervisorTests.stateDir(), node: "gpu-002")
        let key = RankKey(jobID: 42, attempt: 2, rank: 1)
        let options = SlurmOptions(submitDir: submit.path, tasksPerNode: 2, cpusPerTask: 4)
        let script = """
            #!/bin/sh
            env | grep '^SLURM' | sort
            echo "pwd=$(pwd)"
            echo "master=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
            scontrol show hostnames | tr '\\n' ' '; echo
            scontrol show hostnames 'rack[1-2]-n[08-09]' | tr '\\n' ' '; echo
            scontrol show hostlist gpu-001,gpu-002,gpu-003
            scontrol show job "$SLURM_JOB_ID" | head -n 1
            scontrol show job 7 || echo "other job refused"
            scontrol update JobId=42 TimeLimit=1 || echo "update refused"
            """
        _ = try await s.launch(Self.request(key, script, options: options))
        let end = try await SupervisorTests.waitForEnd(s, key)
        // Rank 1: not the batch step's node, so its output stays in the job's log (rank 0 writes slurm-%j.out).
        let log = try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8)
        #expect(end.exitCode == 0, "\(log)")
        for line in [
            "SLURM_JOB_ID=42", "SLURM_JOBID=42", "SLURM_JOB_NAME=run one", "SLURM_JOB_NODELIST=gpu-[001-003]", "SLURM_NNODES=3",
            "SLURM_JOB_NUM_NODES=3", "SLURM_NODEID=1", "SLURM_PROCID=1", "SLURM_LOCALID=0", "SLURM_NTASKS=6", "SLURM_NTASKS_PER_NODE=2",
            "SLURM_TASKS_PER_NODE=2(x3)", "SLURM_CPUS_PER_TASK=4", "SLURM_GPUS_ON_NODE=2", "SLURM_JOB_GPUS=0,1", "SLURM_RESTART_COUNT=1",
            "SLURM_JOB_ACCOUNT=lab/llm", "SLURM_JOB_PARTITION=h200", "SLURM_SUBMIT_DIR=\(submit.path)", "SLURMD_NODENAME=gpu-002",
            "SLURM_CPUS_ON_NODE=8", "SLURM_MEM_PER_NODE=4096", "pwd=\(submit.path)", "master=gpu-001", "gpu-001 gpu-002 gpu-003 ",
            "rack1-n08 rack1-n09 rack2-n08 rack2-n09 ", "gpu-[001-003]", "JobId=42 JobName=run one", "other job refused", "update refused",
        ] {
            #expect(log.contains(line + "\n"), "missing \(line) in \(log)")
        }
    }

    @Test("--output and --error: patterns filled, the first node writes them, a requeued attempt appends; a missing submit directory is said")
    func outputFiles() async throws {
        let submit = try Self.folder()
        let s = try Supervisor(stateDir: SupervisorTests.stateDir(), node: "gpu-001")
        let options = SlurmOptions(submitDir: submit.path, output: submit.path + "/%x-%j.out", error: submit.path + "/%x-%j.err")
        let first = RankKey(jobID: 5, attempt: 1, rank: 0)
        _ = try await s.launch(Self.request(first, "echo out one; echo err one >&2", options: options))
        _ = try await SupervisorTests.waitForEnd(s, first)
        let again = RankKey(jobID: 5, attempt: 2, rank: 0)
        _ = try await s.launch(Self.request(again, "echo out two", options: options))
        _ = try await SupervisorTests.waitForEnd(s, again)
        #expect(try String(contentsOfFile: submit.path + "/run one-5.out", encoding: .utf8) == "out one\nout two\n")
        #expect(try String(contentsOfFile: submit.path + "/run one-5.err", encoding: .utf8) == "err one\n")
        let log = try String(contentsOfFile: await s.logPath(for: first), encoding: .utf8)
        #expect(log.contains("allot: output goes to \(submit.path)/run one-5.out"), "\(log)")
        // Another node's rank keeps its output in the job's log: one file is the batch step's.
        let other = RankKey(jobID: 5, attempt: 2, rank: 1)
        _ = try await s.launch(Self.request(other, "echo from rank one", options: options))
        _ = try await SupervisorTests.waitForEnd(s, other)
        #expect(try String(contentsOfFile: await s.logPath(for: other), encoding: .utf8).contains("from rank one"))

        // No --output: Slurm's slurm-%j.out in the submit directory, which the node has.
        let plain = RankKey(jobID: 7, attempt: 1, rank: 0)
        _ = try await s.launch(Self.request(plain, "echo to the default file", options: SlurmOptions(submitDir: submit.path)))
        _ = try await SupervisorTests.waitForEnd(s, plain)
        #expect(try String(contentsOfFile: submit.path + "/slurm-7.out", encoding: .utf8) == "to the default file\n")
        #expect(try String(contentsOfFile: await s.logPath(for: plain), encoding: .utf8).contains("Slurm's default; --output to choose"))

        let gone = RankKey(jobID: 6, attempt: 1, rank: 0)
        _ = try await s.launch(Self.request(gone, "pwd", options: SlurmOptions(submitDir: "/nonexistent/dir")))
        _ = try await SupervisorTests.waitForEnd(s, gone)
        #expect(try String(contentsOfFile: await s.logPath(for: gone), encoding: .utf8).contains("submit directory /nonexistent/dir is not on node"))
    }

    @Test("--signal=USR1@2 reaches the job 2 s before its 4 s limit; B: reaches the script's shell")
    func signalBeforeLimit() async throws {
        let s = try Supervisor(stateDir: SupervisorTests.stateDir(), node: "gpu-001")
        for (job, signal) in [(Int64(8), JobSignal(number: 10, secondsBefore: 2)), (9, JobSignal(number: 10, secondsBefore: 2, batchOnly: true))] {
            let key = RankKey(jobID: job, attempt: 1, rank: 0)
            let started = Date()
            _ = try await s.launch(
                Self.request(key, "trap 'echo got USR1; exit 0' USR1; echo ready; sleep 30 & wait", timeLimit: 4, signal: signal))
            let end = try await SupervisorTests.waitForEnd(s, key, seconds: 10)
            let elapsed = Date().timeIntervalSince(started)
            let log = try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8)
            #expect(log.contains("got USR1"), "\(signal): \(log)")
            #expect(end.exitCode == 0 && elapsed >= 1.5 && elapsed < 4, "\(signal): ended after \(elapsed) s")
        }
    }

    @Test("a drain's or reclaim's stop warns first: the signal now, SIGTERM its lead later; a plain stop is SIGTERM at once")
    func warnFirst() async throws {
        let s = try Supervisor(stateDir: SupervisorTests.stateDir(), node: "gpu-001")
        let key = RankKey(jobID: 10, attempt: 1, rank: 0)
        let script = "trap 'echo warned at $(date +%s)' USR1; trap 'echo term at $(date +%s); exit 0' TERM; echo ready; while :; do sleep 0.1; done"
        _ = try await s.launch(Self.request(key, script, signal: JobSignal(number: 10, secondsBefore: 2)))
        try await SupervisorTests.waitForLog(s, key, "ready")
        _ = try await s.stop(key, gracePeriodSeconds: 5, warnFirst: true)
        _ = try await s.stop(key, gracePeriodSeconds: 5, warnFirst: true)  // allotd repeats a stop until it is confirmed
        let end = try await SupervisorTests.waitForEnd(s, key, seconds: 10)
        let log = try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8)
        let warned = log.split(separator: "\n").first { $0.hasPrefix("warned at") }.flatMap { Int($0.split(separator: " ").last ?? "") }
        let term = log.split(separator: "\n").first { $0.hasPrefix("term at") }.flatMap { Int($0.split(separator: " ").last ?? "") }
        #expect(end.exitCode == 0)
        #expect(log.components(separatedBy: "warned at").count == 2, "warned once: \(log)")
        let (w, t) = (try #require(warned, "\(log)"), try #require(term, "\(log)"))
        #expect(t - w >= 1 && t - w <= 3, "SIGTERM \(t - w) s after the warning")

        let plain = RankKey(jobID: 11, attempt: 1, rank: 0)
        _ = try await s.launch(Self.request(plain, script, signal: JobSignal(number: 10, secondsBefore: 2)))
        try await SupervisorTests.waitForLog(s, plain, "ready")
        _ = try await s.stop(plain, gracePeriodSeconds: 5)
        _ = try await SupervisorTests.waitForEnd(s, plain, seconds: 10)
        let plainLog = try String(contentsOfFile: await s.logPath(for: plain), encoding: .utf8)
        #expect(plainLog.contains("term at") && !plainLog.contains("warned"), "\(plainLog)")
    }
    @Test("a batch job's --signal without B: reaches its steps' tasks, not the script's shell (which carries on)")
    func signalReachesSteps() async throws {
        let s = try Supervisor(stateDir: SupervisorTests.stateDir(), node: "gpu-001")
        let key = RankKey(jobID: 60, attempt: 1, rank: 0)
        let script = """
            #!/bin/sh
            srun sh -c 'trap "echo task got USR1; exit 0" USR1; echo task ready; sleep 30 & wait'
            echo "script carries on after srun exited $?"
            """
        _ = try await s.launch(
            Self.request(
                key, script, nodes: ["gpu-001"], options: SlurmOptions(batchStep: true), timeLimit: 10,
                signal: JobSignal(number: 10, secondsBefore: 5)
            ))
        let runner = StepRunner(supervisor: s)
        var end: RankStatus?
        for _ in 0..<600 {  // the signal is due 5 s in: a loaded machine may take seconds to start the step
            await s.poll()
            await runner.tick()
            if let st = await s.all().first(where: { $0.key == key }), st.state != .running {
                end = st
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let log = try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8)
        #expect(end?.exitCode == 0, "\(log)")
        #expect(log.contains("task got USR1") && log.contains("script carries on after srun exited 0"), "\(log)")
    }

    @Test("a job's step channel cannot make the agent follow its links: nothing read from, nor written through, another file")
    func hostileChannel() async throws {
        let s = try Supervisor(stateDir: SupervisorTests.stateDir(), node: "gpu-001")
        let key = RankKey(jobID: 50, attempt: 1, rank: 0)
        _ = try await s.launch(Self.request(key, "sleep 30", nodes: ["gpu-001"], options: SlurmOptions(batchStep: true)))
        let channel = await s.folder(for: key).appendingPathComponent("steps")
        let outside = try Self.folder()
        let secret = outside.appendingPathComponent("secret")
        let victim = outside.appendingPathComponent("victim")
        try Data("TOPSECRET\n".utf8).write(to: secret)
        chmod(secret.path, 0o600)
        try Data("untouched\n".utf8).write(to: victim)
        // The job's own files under the names the agent reads and writes: links to files it must not touch.
        symlink(secret.path, channel.appendingPathComponent("t1.env").path)
        symlink(victim.path, channel.appendingPathComponent("t1.out").path)
        symlink(victim.path, channel.appendingPathComponent("t1.rc.tmp").path)
        var request = Data("nodes=\nntasks=\ntasks-per-node=\nlabel=0\nchdir=\n--\n".utf8)
        for word in ["sh", "-c", "echo \"exports=[$ALLOT_STEP_EXPORTS]\""] { request += Data(word.utf8) + Data([0]) }
        try request.write(to: channel.appendingPathComponent("t1.req"))
        let runner = StepRunner(supervisor: s)
        let rc = channel.appendingPathComponent("t1.rc").path
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: rc) {
            await s.poll()
            await runner.tick()
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try String(contentsOf: victim, encoding: .utf8) == "untouched\n", "nothing written through a link")
        let out = try String(contentsOfFile: channel.appendingPathComponent("t1.out").path, encoding: .utf8)
        #expect(out == "exports=[]\n" && !out.contains("TOPSECRET"), "\(out)")
        #expect(try String(contentsOfFile: rc, encoding: .utf8) == "0\n")
        let made = try FileManager.default.attributesOfItem(atPath: channel.appendingPathComponent("t1.out").path)
        #expect(made[.type] as? FileAttributeType == .typeRegular, "a file of the agent's own, not the link")
        _ = try await s.stop(key, gracePeriodSeconds: 0)
    }
}

/// The same inside a real container: /etc/hosts names the job's nodes, scontrol is on PATH, the output file is
/// written by the organisation's account in a folder the node shares.
@Suite("Batch scripts in containers", .enabled(if: Confined.available, "needs root and runc"))
struct SlurmContainerTests {
    @Test("a contained batch rank: hosts, scontrol, SLURM_* and its --output file, owned by its account")
    func contained() async throws {
        let shared = FileManager.default.temporaryDirectory.appendingPathComponent("allot-shared-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: shared, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: shared.path)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-ct-\(UUID().uuidString.prefix(8))")
        let runtime = ContainerRuntime(
            runc: ContainerRuntime.findRunc()!, binds: ContainerRuntime.systemBinds + [.init(path: shared.path, writable: true)],
            offeredMemoryMiB: 1024)
        let s = try Supervisor(stateDir: dir, node: "gpu-001", isolation: .container(runtime))
        let key = RankKey(jobID: 77, attempt: 1, rank: 0)
        var request = SlurmAgentTests.request(
            key, "#!/bin/sh\ngetent hosts gpu-002 || grep gpu-002 /etc/hosts\nscontrol show hostnames\necho \"$SLURM_JOB_NODELIST $(pwd)\"\nid -u",
            options: SlurmOptions(submitDir: shared.path, output: shared.path + "/out/slurm-%j.out"))
        request.tenant = RankTenant(org: "lab", owner: "alice", account: Confined.accountA, memoryMiB: 256)
        try FileManager.default.createDirectory(
            atPath: shared.path + "/out", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o777])
        _ = try await s.launch(request)
        let end = try await SupervisorTests.waitForEnd(s, key, seconds: 30)
        let out = (try? String(contentsOfFile: shared.path + "/out/slurm-77.out", encoding: .utf8)) ?? ""
        let log = try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8)
        #expect(end.exitCode == 0, "\(log)\n\(out)")
        let a = try #require(Confined.ids(Confined.accountA))
        #expect(out.contains("127.0.0.1") && out.contains("gpu-002"), "\(out)")
        #expect(out.contains("gpu-001\ngpu-002\ngpu-003\n"), "\(out)")
        #expect(out.contains("gpu-[001-003] \(shared.path)\n\(a.uid)\n"), "\(out)")
        let attributes = try FileManager.default.attributesOfItem(atPath: shared.path + "/out/slurm-77.out")
        #expect((attributes[.ownerAccountID] as? UInt) == UInt(a.uid), "written by the organisation's account")
    }
}

/// srun's request and how a step's tasks spread over the job's nodes (Slurm's block distribution).
@Suite("srun: requests and task layout")
struct SrunLayoutTests {
    @Test(
        "tasks per node: the job's by default, -N/-n/--ntasks-per-node as asked, the first nodes one more where they do not divide",
        arguments: [
            (nil, nil, nil, 2, 1, [1, 1]), (nil, nil, nil, 2, 4, [4, 4]), (2, 3, nil, 2, 1, [2, 1]), (nil, 3, nil, 4, 1, [1, 1, 1]),
            (1, nil, nil, 4, 2, [2]), (nil, 8, 4, 4, 1, [4, 4]), (nil, 1, nil, 2, 8, [1]),
        ] as [(Int?, Int?, Int?, Int, Int, [Int])])
    func layout(nodes: Int?, ntasks: Int?, tpn: Int?, jobNodes: Int, jobTPN: Int, counts: [Int]) throws {
        let r = try #require(SlurmSteps.Request(Self.request(nodes: nodes, ntasks: ntasks, tpn: tpn)))
        #expect(try SlurmSteps.layout(r, jobNodes: jobNodes, jobTasksPerNode: jobTPN).get() == counts)
    }

    @Test("a step the job cannot hold is refused with srun's words")
    func refused() throws {
        for (nodes, ntasks, tpn) in [(3, nil, nil), (2, 1, nil), (2, 9, 4)] as [(Int?, Int?, Int?)] {
            let r = try #require(SlurmSteps.Request(Self.request(nodes: nodes, ntasks: ntasks, tpn: tpn)))
            #expect(throws: SlurmSteps.StepRefusal.self) { try SlurmSteps.layout(r, jobNodes: 2, jobTasksPerNode: 1).get() }
        }
        #expect(SlurmSteps.tasksPerNodeText([2, 2, 2, 1]) == "2(x3),1")
    }

    @Test("the request srun writes reads back: counts, label, folder and the command's words with spaces and newlines")
    func request() throws {
        var data = Data("nodes=2\nntasks=\ntasks-per-node=\nlabel=1\nchdir=/data/run one\n--\n".utf8)
        for word in ["python", "-c", "print('a b')\nprint(2)", ""] { data += Data(word.utf8) + Data([0]) }
        let r = try #require(SlurmSteps.Request(data))
        #expect(r.argv == ["python", "-c", "print('a b')\nprint(2)", ""])
        #expect(r.chdir == "/data/run one")
        #expect(SlurmSteps.Request(Data("nodes=x\n--\nls\u{0}".utf8)) == nil)
        #expect(SlurmSteps.Request(Data("nodes=1\n".utf8)) == nil)
    }

    static func request(nodes: Int?, ntasks: Int?, tpn: Int?) -> Data {
        Data(
            "nodes=\(nodes.map(String.init) ?? "")\nntasks=\(ntasks.map(String.init) ?? "")\ntasks-per-node=\(tpn.map(String.init) ?? "")\nlabel=0\nchdir=\n--\nhostname\u{0}"
                .utf8)
    }
}
