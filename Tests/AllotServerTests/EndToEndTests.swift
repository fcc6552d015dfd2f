import AllotCore
import AllotDatabaseTesting
import AllotHTTPClient
import AllotStore
import AllotTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The whole system as an operator runs it: `allotd` and two `allot-agent` processes over real HTTP, the
/// `allot` CLI, a real PostgreSQL, and real job processes.
@Suite("End to end: allotd, two agents and the CLI", databaseTests, .serialized)
struct EndToEndTests {
    /// A running cluster: allotd plus agents, with the CLI pointed at it.
    final class Cluster: @unchecked Sendable {
        let work: URL
        let env: [String: String]
        var allotd: TestProcess
        let allotdArguments: [String]
        var agents: [String: TestProcess] = [:]
        /// Each agent's port: a restarted agent comes back at its enrolled address.
        var agentPorts: [String: Int] = [:]
        /// A folder every rank sees read-write, as a cluster's shared filesystem would be.
        let shared: URL
        /// Ranks in containers (root with runc, as in CI), else plain processes (a developer's unprivileged run).
        static let contained = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runc")
        let dbName: String
        let admin: DatabaseURL

        init() async throws {
            let (database, name, admin) = try await TestDatabase.create(migrate: false)
            self.dbName = name
            self.admin = admin
            self.work = FileManager.default.temporaryDirectory.appendingPathComponent("allot-e2e-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: self.work, withIntermediateDirectories: true)
            self.shared = self.work.appendingPathComponent("shared")
            try FileManager.default.createDirectory(at: self.shared, withIntermediateDirectories: true)
            try FileManager.default.setAttributes([.posixPermissions: 0o1777], ofItemAtPath: self.shared.path)
            if ProcessInfo.processInfo.environment["CI"] != nil { #expect(Self.contained, "CI runs the end-to-end suite in containers") }
            if Self.contained { try Self.ensureAccounts() }
            let url = database.url.urlString
            let port = freeLoopbackPort()
            var env = ["ALLOT_DATABASE_URL": url, "ALLOT_SERVER": "http://127.0.0.1:\(port)", "ALLOT_LOG_LEVEL": "info"]
            env["ALLOT_TOKEN"] = nil
            env["ALLOT_TOKEN_FILE"] = self.work.appendingPathComponent("op.token").path
            self.env = env
            // SPEC §5's set-up, step by step.
            let migrate = try runBuilt("allotd", ["migrate", "--migrations", TestDatabase.migrationsFolder], environment: env)
            try #require(migrate.status == 0, "\(migrate.output)")
            let bootstrap = try runBuilt(
                "allotd",
                ["bootstrap", "--token-file", env["ALLOT_TOKEN_FILE"]!, "--secret-file", self.work.appendingPathComponent("allotd.secret").path],
                environment: env)
            try #require(bootstrap.status == 0, "\(bootstrap.output)")
            self.allotdArguments = [
                "serve", "--listen", "127.0.0.1:\(port)", "--heartbeat-timeout", "4s", "--secret-file",
                self.work.appendingPathComponent("allotd.secret").path,
            ]
            self.allotd = try TestProcess("allotd", self.allotdArguments, environment: env, name: "allotd")
            try await self.waitForAllotd()
            try self.cli(["policy", "apply", Repository.root + "/Policies"])
            for node in ["gpu-001", "gpu-002"] {
                try self.cli([
                    "nodes", "add", node, "--pool", "h200", "--block", "rack-1", "--token-file",
                    self.work.appendingPathComponent("\(node).token").path,
                ])
                try self.startAgent(node)
            }
            try await Self.waitFor("both nodes ready", seconds: 30) {
                let nodes = try self.json(["nodes"], as: [NodeView].self)
                return nodes.filter { $0.state == .ready && $0.gpus.count == 8 }.count == 2
            }
        }

        /// Until allotd answers `/readyz`.
        func waitForAllotd() async throws {
            let server = self.env["ALLOT_SERVER"]!
            try await Self.waitFor("allotd ready", seconds: 30) {
                (try? await APIClient(baseURL: server, token: nil, timeout: .seconds(1)).get("/readyz") as Data) != nil
            }
        }

        func startAgent(_ node: String) throws {
            let port = self.agentPorts[node] ?? freeLoopbackPort()
            self.agentPorts[node] = port
            self.agents[node] = try TestProcess(
                "allot-agent",
                [
                    "--server", self.env["ALLOT_SERVER"]!, "--node", node, "--token-file", self.work.appendingPathComponent("\(node).token").path,
                    "--listen", "127.0.0.1:\(port)", "--gpus", "8xH200", "--cpus", "16", "--memory", "64G",
                    "--state-dir", self.work.appendingPathComponent("agent-\(node)").path, "--heartbeat-interval", "0.5",
                    "--isolation", Self.contained ? "container" : "none", "--bind", "\(self.shared.path):rw",
                ], environment: self.env, name: "agent-\(node)")
        }

        /// The example programme's accounts (Policies/organizations.yaml), as an operator makes them on every node.
        static func ensureAccounts() throws {
            for account in ["allot-defense", "allot-national-ai-lab", "allot-university", "allot-startups"] where getpwnam(account) == nil {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/sbin/useradd")
                p.arguments = ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", account]
                try p.run()
                p.waitUntilExit()
            }
        }

        @discardableResult
        func cli(_ arguments: [String]) throws -> String {
            let result = try runBuilt("allot", arguments, environment: self.env)
            try #require(result.status == 0, "allot \(arguments.joined(separator: " ")) failed: \(result.output)")
            return result.output
        }

        func json<T: Decodable>(_ arguments: [String], as type: T.Type) throws -> T {
            try WireJSON.decoder.decode(type, from: Data(try self.cli(arguments + ["--output", "json"]).utf8))
        }

        func submit(_ spec: String) throws -> Int64 {
            let file = self.work.appendingPathComponent("job-\(UUID().uuidString.prefix(6)).yaml")
            try spec.write(to: file, atomically: true, encoding: .utf8)
            return try self.json(["submit", file.path], as: JobView.self).id
        }

        func job(_ id: Int64) throws -> JobView { try self.json(["jobs", "show", "\(id)"], as: JobView.self) }

        func waitForJob(_ id: Int64, seconds: Double = 90, until done: @escaping (JobView) -> Bool) async throws -> JobView {
            var last: JobView?
            do {
                try await Self.waitFor("job \(id)", seconds: seconds) {
                    last = try self.job(id)
                    return done(last!)
                }
            } catch {
                Issue.record("job \(id) as last seen: \((try? self.cli(["jobs", "show", "\(id)"])) ?? "\(String(describing: last))")")
                throw error
            }
            return last!
        }

        static func waitFor(_ what: String, seconds: Double, _ condition: () async throws -> Bool) async throws {
            let deadline = Date().addingTimeInterval(seconds)
            // Look before checking the clock: a task woken late still looks once more.
            while true {
                if try await condition() { return }
                if Date() >= deadline { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            Issue.record("timed out waiting for \(what)")
            throw CancellationError()
        }

        func shutdown() async {
            for agent in self.agents.values { agent.stop() }
            self.allotd.stop()
            // Agents leave their ranks running when they stop (a restart adopts them): end what this test started.
            // Each rank leads its own process group, named by its folder under this test's work folder.
            let pgrep = Process()
            pgrep.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
            pgrep.arguments = ["-f", self.work.path + "/"]
            let pipe = Pipe()
            pgrep.standardOutput = pipe
            if (try? pgrep.run()) != nil {
                let pids = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n").compactMap {
                    Int32($0)
                }
                reap(pgrep)
                for pid in pids { kill(-pid, SIGKILL) }
            }
            // Containers this test's agents started (runc's list names their bundles): deleted with their processes.
            if Self.contained {
                let list = Process()
                list.executableURL = URL(fileURLWithPath: "/usr/sbin/runc")
                list.arguments = ["list", "--format", "json"]
                let out = Pipe()
                list.standardOutput = out
                if (try? list.run()) != nil {
                    let data = out.fileHandleForReading.readDataToEndOfFile()
                    _ = reap(list)
                    let containers = (try? JSONSerialization.jsonObject(with: data) as? [[String: Any]]) ?? []
                    for c in containers where (c["bundle"] as? String)?.hasPrefix(self.work.path) == true {
                        let delete = Process()
                        delete.executableURL = URL(fileURLWithPath: "/usr/sbin/runc")
                        delete.arguments = ["delete", "--force", c["id"] as? String ?? ""]
                        if (try? delete.run()) != nil { _ = reap(delete) }
                    }
                }
            }
            try? await TestDatabase.drop(self.dbName, admin: self.admin)
        }

        var diagnostics: String {
            "allotd:\n\(self.allotd.output.suffix(3000))\n"
                + self.agents.map { "\($0.key):\n\($0.value.output.suffix(1500))" }.joined(separator: "\n")
        }
    }

    @Test(
        "a 2-node × 4-GPU gang runs; each rank sees 4 distinct GPUs, its rank and the rendezvous; exit 3 fails; cancel stops; a crashed agent's job runs again elsewhere"
    )
    func cluster() async throws {
        let c = try await Cluster()
        do {
            try await self.gang(c)
            try await self.batchScript(c)
            try await self.arraysAndDependencies(c)
            try await self.exitCode(c)
            try await self.cancel(c)
            try await self.simulatedNodes(c)
            try await self.drain(c)
            try await self.replicaHealing(c)
            try await self.agentCrash(c)
            try await self.schedulerCrash(c)
            // SIGTERM ends the daemons (a LISTEN or a probe that ignored graceful shutdown once kept allotd up for ever).
            #expect(c.allotd.stop(), "allotd did not exit within 10 s of SIGTERM\n\(c.diagnostics)")
            for (node, agent) in c.agents { #expect(agent.stop(), "the agent of \(node) did not exit within 10 s of SIGTERM") }
        } catch {
            Issue.record("\(error)\n\(c.diagnostics)")
            await c.shutdown()
            throw error
        }
        await c.shutdown()
    }

    func gang(_ c: Cluster) async throws {
        let id = try c.submit(
            """
            name: env-gang
            org: national-ai-lab
            pool: h200
            nodes: 2
            gpusPerNode: 4
            command: env | sort
            """)
        let job = try await c.waitForJob(id) { $0.state.isTerminal }
        #expect(job.state == .succeeded, "\(job)")
        var ranks: [String] = []
        var masters = Set<String>()
        for rank in 0..<2 {
            let log = try c.cli(["logs", "\(id)", "--rank", "\(rank)"])
            var env: [String: String] = [:]
            for line in log.split(separator: "\n") {
                let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
                if parts.count == 2 { env[parts[0]] = parts[1] }
            }
            let gpus = (env["CUDA_VISIBLE_DEVICES"] ?? "").split(separator: ",")
            #expect(gpus.count == 4 && Set(gpus).count == 4, "rank \(rank) saw CUDA_VISIBLE_DEVICES=\(env["CUDA_VISIBLE_DEVICES"] ?? "-")")
            ranks.append(env["NODE_RANK"] ?? "-")
            #expect(env["NNODES"] == "2" && env["PET_NNODES"] == "2")
            #expect(env["NPROC_PER_NODE"] == "4" && env["PET_NPROC_PER_NODE"] == "4")
            #expect(env["PET_NODE_RANK"] == env["NODE_RANK"])
            #expect(env["ALLOT_JOB_ID"] == "\(id)")
            masters.insert("\(env["MASTER_ADDR"] ?? "-"):\(env["MASTER_PORT"] ?? "-")")
        }
        #expect(Set(ranks) == ["0", "1"])
        #expect(masters.count == 1 && !masters.contains("-:-"))
        #expect(Set(job.attempts[0].nodes.map(\.node)) == ["gpu-001", "gpu-002"])
    }

    /// A Slurm user's script, unchanged: it runs once, on the first node; srun fans steps out over both nodes with
    /// their task ids and labels, and returns the highest exit status; scontrol names the master; --signal warns.
    func batchScript(_ c: Cluster) async throws {
        let script = c.work.appendingPathComponent("train.sbatch")
        try """
        #!/bin/bash\r
        #SBATCH --job-name="two node script"\r
        #SBATCH -A national-ai-lab\r
        #SBATCH -N 2 --ntasks-per-node=1\r
        #SBATCH --gres=gpu:2\r
        #SBATCH --time=0:20 --signal=B:USR1@5\r
        #SBATCH -D \(c.shared.path)\r
        \r
        trap 'echo "warned by USR1"; exit 0' USR1\r
        echo "batch on $(hostname) nodeid=$SLURM_NODEID nnodes=$SLURM_NNODES nodelist=$SLURM_JOB_NODELIST"\r
        echo "master=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"\r
        srun hostname\r
        export GREETING="from the batch step"\r
        srun --label bash -c 'echo procid=$SLURM_PROCID nodeid=$SLURM_NODEID $GREETING'\r
        srun -N 2 -n 3 -l bash -c 'echo task $SLURM_PROCID local $SLURM_LOCALID of $SLURM_NTASKS'\r
        srun bash -c 'exit 7'; echo "srun exit=$?"\r
        sleep 60 & wait\r
        echo "not warned"\r

        """.write(to: script, atomically: true, encoding: .utf8)
        // Its warnings (the DOS line ends) go to standard error, before the answer.
        let submitted = try c.cli(["submit", script.path])
        #expect(submitted.contains("warning") && submitted.contains("CRLF"), "\(submitted)")
        let line = try #require(submitted.split(separator: "\n").first { $0.hasPrefix("submitted job ") }, "\(submitted)")
        let id = try #require(Int64(line.dropFirst("submitted job ".count).prefix { $0.isNumber }))
        let job = try await c.waitForJob(id) { $0.state.isTerminal }
        // Slurm's default output file in the working directory (-D, shared); the job's log says so.
        let notice = try c.cli(["logs", "\(id)"])
        #expect(notice.contains("allot: output goes to \(c.shared.path)/slurm-\(id).out"), "\(notice)")
        let log = (try? String(contentsOfFile: c.shared.path + "/slurm-\(id).out", encoding: .utf8)) ?? ""
        #expect(job.state == .succeeded && job.name == "two node script", "\(job)\n\(log)")
        #expect(job.pool == "h200", "no -p: the organisation's only pool")
        let nodes = job.attempts.last?.nodes.sorted { $0.rank < $1.rank }.map(\.node) ?? []
        try #require(nodes.count == 2, "\(job)")
        let lines = log.split(separator: "\n").map(String.init)
        #expect(
            lines.filter { $0.hasPrefix("batch on") } == ["batch on \(nodes[0]) nodeid=0 nnodes=2 nodelist=\(Hostlist.compress(nodes))"], "\(log)")
        #expect(lines.contains("master=\(nodes[0])"), "\(log)")
        #expect(lines.filter { nodes.contains($0) }.sorted() == nodes.sorted(), "srun hostname ran once on each node: \(log)")
        #expect(
            Set(lines.filter { $0.contains("procid=") }) == ["0: procid=0 nodeid=0 from the batch step", "1: procid=1 nodeid=1 from the batch step"],
            "tasks start with srun's environment: \(log)")
        #expect(
            Set(lines.filter { $0.contains(": task ") }) == ["0: task 0 local 0 of 3", "1: task 1 local 1 of 3", "2: task 2 local 0 of 3"],
            "\(log)")
        #expect(lines.contains("srun exit=7") && lines.contains("warned by USR1") && !lines.contains("not warned"), "\(log)")
        // The other node ran no part of the script itself.
        let other = try c.cli(["logs", "\(id)", "--rank", "1"])
        #expect(!other.contains("batch on") && !other.contains("procid"), "\(other)")
        let steps = job.attempts.last?.steps ?? []
        #expect(steps.map(\.step) == [0, 1, 2, 3] && steps.map(\.exitCode) == [0, 0, 0, 7], "\(steps)")
        #expect(steps.map(\.tasks) == [2, 2, 3, 2] && steps.allSatisfy { $0.state == .exited && $0.nodes == 2 }, "\(steps)")
        #expect(try c.cli(["jobs", "show", "\(id)"]).contains("step \(id).2: bash -c"), "steps are shown")
    }

    /// `--array=0-3%2` never runs more than 2 tasks at once; `afterok` on a failed job never starts and says why.
    func arraysAndDependencies(_ c: Cluster) async throws {
        let sweep = c.work.appendingPathComponent("sweep.sbatch")
        try
            "#!/bin/sh\n#SBATCH -A national-ai-lab\n#SBATCH --array=0-3%2\n#SBATCH --gres=gpu:1\necho task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID\nsleep 2\n"
            .write(to: sweep, atomically: true, encoding: .utf8)
        let failing = c.work.appendingPathComponent("failing.sbatch")
        try "#!/bin/sh\n#SBATCH -A national-ai-lab\nexit 1\n".write(to: failing, atomically: true, encoding: .utf8)
        func submitted(_ output: String) throws -> Int64 {
            let line = try #require(output.split(separator: "\n").first { $0.hasPrefix("submitted job") }, "\(output)")
            return try #require(line.split(separator: " ").lazy.compactMap { Int64($0) }.first, "\(line)")
        }
        let array = try submitted(try c.cli(["submit", sweep.path]))
        let failed = try submitted(try c.cli(["submit", failing.path]))
        let dependent = c.work.appendingPathComponent("dependent.sbatch")
        try "#!/bin/sh\n#SBATCH -A national-ai-lab\n#SBATCH --dependency=afterok:\(failed)\necho never\n"
            .write(to: dependent, atomically: true, encoding: .utf8)
        let waiter = try submitted(try c.cli(["submit", dependent.path]))
        var most = 0
        var tasks: [JobView] = []
        let deadline = Date().addingTimeInterval(90)
        repeat {
            tasks = try c.json(["jobs", "--org", "national-ai-lab"], as: [JobView].self).filter { $0.arrayJobID == array }
            most = max(most, tasks.filter { [.placed, .starting, .running].contains($0.state) }.count)
            try await Task.sleep(for: .milliseconds(200))
        } while !(tasks.count == 4 && tasks.allSatisfy { $0.state.isTerminal }) && Date() < deadline
        #expect(tasks.count == 4 && tasks.allSatisfy { $0.state == .succeeded }, "\(tasks.map { "\($0.id) \($0.state)" })")
        #expect(most <= 2 && most >= 1, "at most 2 of the array's tasks at once, saw \(most)")
        let log = try c.cli(["logs", "\(tasks.first { $0.arrayTaskID == 3 }!.id)"])
        #expect(log.contains("task 3 of \(array)"), "\(log)")
        let never = try await c.waitForJob(waiter) { $0.state.isTerminal }
        #expect(never.state == .cancelled && never.reason?.contains("DependencyNeverSatisfied") == true, "\(never.reason ?? "-")")
        #expect(try c.cli(["jobs", "show", "\(waiter)"]).contains("DependencyNeverSatisfied: afterok:\(failed): job \(failed) ended failed"))
    }

    func exitCode(_ c: Cluster) async throws {
        let id = try c.submit("org: university-consortium\npool: h200\ngpusPerNode: 1\ncommand: exit 3")
        let job = try await c.waitForJob(id) { $0.state.isTerminal }
        #expect(job.state == .failed)
        #expect(job.exitCode == 3)
        #expect(try c.cli(["jobs", "show", "\(id)"]).contains("failed (exit code 3)"))
    }

    /// `allot-agent simulate`: three nodes in one process, each enrolled with its own credentials and agent URL,
    /// heartbeating and taking launches and stops over HTTP; their ranks run nothing, for the seconds they ask.
    func simulatedNodes(_ c: Cluster) async throws {
        let credentials = c.work.appendingPathComponent("simulated")
        try FileManager.default.createDirectory(at: credentials, withIntermediateDirectories: true)
        let port = freeLoopbackPort()
        let nodes = ["sim-01", "sim-02", "sim-03"]
        for node in nodes {
            try c.cli([
                "nodes", "add", node, "--pool", "h100", "--agent-url", "http://127.0.0.1:\(port)/nodes/\(node)", "--token-file",
                credentials.appendingPathComponent("\(node).token").path,
            ])
        }
        let simulator = try TestProcess(
            "allot-agent",
            [
                "simulate", "--server", c.env["ALLOT_SERVER"]!, "--credentials", credentials.path, "--listen", "127.0.0.1:\(port)", "--gpus",
                "8xH100", "--heartbeat-interval", "0.5",
            ], environment: c.env, name: "simulated-nodes")
        defer { _ = simulator.stop() }
        try await Cluster.waitFor("three simulated nodes ready", seconds: 30) {
            try c.json(["nodes"], as: [NodeView].self).filter { nodes.contains($0.name) && $0.state == .ready && $0.gpus.count == 8 }.count == 3
        }
        // Twelve 4-GPU jobs of a second each on 24 GPUs: two waves, every one placed on a simulated node and succeeding.
        var ids: [Int64] = []
        for i in 0..<12 {
            ids.append(
                try c.submit("name: sim-\(i)\norg: university-consortium\npool: h100\ngpusPerNode: 4\ncommand: sleep 1\ntimeLimit: 5m\n"))
        }
        for id in ids {
            let job = try await c.waitForJob(id, seconds: 60) { $0.state.isTerminal }
            #expect(job.state == .succeeded, "job \(id): \(job.state) \(job.reason ?? "")\n\(simulator.output.suffix(2000))")
            #expect(job.attempts.last?.nodes.allSatisfy { nodes.contains($0.node) } == true)
        }
        // A long one is stopped through the simulated node's API when cancelled.
        let long = try c.submit("name: sim-long\norg: university-consortium\npool: h100\ngpusPerNode: 8\ncommand: sleep 600\n")
        _ = try await c.waitForJob(long, seconds: 30) { $0.state == .running }
        try c.cli(["cancel", "\(long)"])
        let cancelled = try await c.waitForJob(long, seconds: 30) { $0.state.isTerminal }
        #expect(cancelled.state == .cancelled)
        #expect(simulator.stop(), "the simulator did not exit within 10 s of SIGTERM")
    }

    func cancel(_ c: Cluster) async throws {
        let marker = "allot-e2e-\(UUID().uuidString.prefix(8))"
        let id = try c.submit("org: defense\npool: h200\ngpusPerNode: 2\ncommand: sleep 600 # \(marker)")
        _ = try await c.waitForJob(id) { $0.state == .running }
        let cancelledAt = Date()
        try c.cli(["cancel", "\(id)"])
        let job = try await c.waitForJob(id, seconds: 70) { $0.state.isTerminal }
        #expect(job.state == .cancelled)
        #expect(Date().timeIntervalSince(cancelledAt) < 60)  // within the grace period
        let survivors = Process()
        survivors.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        survivors.arguments = ["-f", marker]
        try survivors.run()
        survivors.waitUntilExit()
        #expect(survivors.terminationStatus == 1, "a process of the cancelled job is still running")
    }

    /// Drain with a 10 s deadline: the job traps SIGTERM and checkpoints, is requeued and runs on the other node;
    /// the node ends drained; undrain returns it.
    func drain(_ c: Cluster) async throws {
        let marker = c.shared.appendingPathComponent("checkpoint").path
        let id = try c.submit(
            "org: defense\npool: h200\ngpusPerNode: 8\ncommand: trap 'echo saved > \(marker)-$ALLOT_ATTEMPT; exit 0' TERM; sleep 600 & wait")
        let running = try await c.waitForJob(id) { $0.state == .running }
        let node = try #require(running.attempts.last?.nodes.first?.node)
        let started = Date()
        let output = try c.cli(["drain", node, "--reason", "firmware", "--deadline", "10s", "--wait"])
        #expect(Date().timeIntervalSince(started) >= 9)
        #expect(output.contains("deadline in"))
        #expect(output.contains("1/1 nodes drained"))
        #expect(FileManager.default.fileExists(atPath: "\(marker)-1"), "the job did not checkpoint on SIGTERM")
        let again = try await c.waitForJob(id, seconds: 30) { $0.attempts.count == 2 && $0.state == .running }
        #expect(again.attempts[0].state == .drained)
        #expect(again.attempts[1].nodes.first?.node != node)
        #expect(try c.json(["nodes"], as: [NodeView].self).first { $0.name == node }?.state == .drained)
        try c.cli(["undrain", node])
        #expect(try c.json(["nodes"], as: [NodeView].self).first { $0.name == node }?.state == .ready)
        try c.cli(["cancel", "\(id)"])
        _ = try await c.waitForJob(id, seconds: 70) { $0.state.isTerminal }
    }

    /// One replica of an inference service ends: it alone starts again (after its back-off), the other runs on
    /// in the same process; the service stays running and `allot jobs show` counts the restart.
    func replicaHealing(_ c: Cluster) async throws {
        let log = c.shared.appendingPathComponent("replicas.log").path
        let stop = c.shared.appendingPathComponent("stop").path
        let id = try c.submit(
            """
            name: chat
            org: national-ai-lab
            pool: h200
            kind: inference
            replicas: 2
            gpusPerNode: 1
            command: echo "start $ALLOT_NODE_RANK $ALLOT_LAUNCH $$" >> \(log); while [ ! -e \(stop)-$ALLOT_NODE_RANK-$ALLOT_LAUNCH ]; do sleep 0.2; done; exit 7
            """)
        // The pool's GPUs by kind, with their full product name and memory.
        let pools = try c.cli(["pools"])
        #expect(pools.contains("h200") && pools.contains("NVIDIA H200") && pools.contains("140 GiB"), "\(pools)")
        let running = try await c.waitForJob(id) { $0.state == .running }
        try await Cluster.waitFor("both replicas started", seconds: 20) {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").count == 2
        }
        let other = try #require(running.attempts.last?.nodes.first { $0.rank == 1 }?.node)
        let meta = c.work.appendingPathComponent("agent-\(other)/ranks/\(id).1.1/meta.json")
        func pid() throws -> Int {
            let record = try JSONSerialization.jsonObject(with: Data(contentsOf: meta)) as? [String: Any]
            return try #require(record?["pid"] as? Int)
        }
        let otherPid = try pid()
        // Replica 0 exits 7: it is started again, alone.
        _ = FileManager.default.createFile(atPath: "\(stop)-0-0", contents: nil)
        let healed = try await c.waitForJob(id, seconds: 60) { job in
            job.state == .running && job.degraded != true && job.attempts.last?.nodes.first { $0.rank == 0 }?.restarts == 1
        }
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(lines.filter { $0.hasPrefix("start 0 1 ") }.count == 1, "\(lines)")
        #expect(lines.filter { $0.hasPrefix("start 1 ") }.count == 1, "the other replica was restarted: \(lines)")
        #expect(try pid() == otherPid, "the other replica's process changed")
        #expect(healed.attempts.count == 1 && healed.attempts[0].state == .running)
        let shown = try c.cli(["jobs", "show", "\(id)"])
        #expect(shown.contains("replica 0 on") && shown.contains("restarted 1 time"), "\(shown)")
        // The restart is audited with its reason.
        let audit = try c.cli(["audit"])
        #expect(audit.contains("replica.restart") && audit.contains("job/\(id)/attempt/1/rank/0"), "\(audit.suffix(2000))")
        try c.cli(["cancel", "\(id)"])
        _ = try await c.waitForJob(id, seconds: 70) { $0.state.isTerminal }
    }

    func agentCrash(_ c: Cluster) async throws {
        let id = try c.submit("org: defense\npool: h200\ngpusPerNode: 8\ncommand: sleep 600")
        let running = try await c.waitForJob(id) { $0.state == .running }
        let node = try #require(running.attempts.last?.nodes.first?.node)
        let other = node == "gpu-001" ? "gpu-002" : "gpu-001"
        c.agents[node]?.crash()
        let crashedAt = Date()
        // Lost within the heartbeat timeout (4 s here), give or take a monitor round and a loaded machine.
        try await Cluster.waitFor("\(node) lost", seconds: 30) {
            try c.json(["nodes"], as: [NodeView].self).first { $0.name == node }?.state == .lost
        }
        let lostAfter = Date().timeIntervalSince(crashedAt)
        #expect(lostAfter < 15, "lost after \(lostAfter) s")
        let requeued = try await c.waitForJob(id, seconds: 60) { $0.attempts.count == 2 && $0.state == .running }
        #expect(requeued.attempts[0].state == .lost)
        #expect(requeued.attempts[1].nodes.first?.node == other)
        // The lost attempt's time from its node's last heartbeat on is credited, itemised on the statement with its cause.
        let statement = try c.json(["report", "--org", "defense"], as: Statement.self)
        let credit = try #require(statement.credits.first { $0.jobID == id && $0.attempt == 1 })
        #expect(credit.cause.contains("lost") && credit.from <= crashedAt.addingTimeInterval(1) && credit.node == node, "\(credit)")

        // The agent comes back with the same state folder: it stops the orphaned first attempt and nothing runs twice.
        try c.startAgent(node)
        try await Cluster.waitFor("\(node) ready again", seconds: 20) {
            try c.json(["nodes"], as: [NodeView].self).first { $0.name == node }?.state == .ready
        }
        try await Cluster.waitFor("the orphan stopped", seconds: 20) {
            let pgrep = Process()
            pgrep.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
            pgrep.arguments = ["-f", "\(c.work.path)/agent-\(node)/ranks/\(id).1.0"]
            try pgrep.run()
            pgrep.waitUntilExit()
            return pgrep.terminationStatus == 1
        }
        try c.cli(["cancel", "\(id)"])
        _ = try await c.waitForJob(id, seconds: 70) { $0.state.isTerminal }
    }

    /// kill -9 of allotd while a job runs: the agents keep the ranks, the restarted allotd finds the attempt's
    /// usage in the ledger (charged from its start, nothing lost) and the job goes on to its end.
    func schedulerCrash(_ c: Cluster) async throws {
        let id = try c.submit("org: defense\npool: h200\ngpusPerNode: 2\ncommand: sleep 12")
        let running = try await c.waitForJob(id) { $0.state == .running }
        try await Task.sleep(for: .seconds(2))
        c.allotd.crash()
        let crashedAt = Date()
        try await Task.sleep(for: .seconds(2))
        c.allotd = try TestProcess("allotd", c.allotdArguments, environment: c.env, name: "allotd")
        try await c.waitForAllotd()
        let statement = try c.json(["report", "--org", "defense", "--by", "user"], as: Statement.self)
        let started = try #require(running.attempts.last?.startedAt)
        // Charged from the attempt's start through the crash and after: at least the time it ran before the kill.
        let before = crashedAt.timeIntervalSince(started) * 2 / 3600  // 2 GPUs
        #expect(statement.total.chargedGPUHours >= before - 1.0 / 3600, "\(statement.total) < \(before)")
        let done = try await c.waitForJob(id, seconds: 60) { $0.state.isTerminal }
        #expect(done.state == .succeeded && done.attempts.count == 1, "\(done)")
    }
}
