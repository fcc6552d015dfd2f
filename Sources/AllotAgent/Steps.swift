public import AllotCore
public import AllotHTTPClient
import CDispatch
public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Slurm's batch step and `srun`, the agents' way (written by hand: outside Slurm there is no step launcher).
///
/// The batch script runs in rank 0's container; the job's other ranks run `holder`, which waits. `srun` in the
/// script (a POSIX shell script on its PATH) writes its request into the rank's step channel, a folder bound into
/// its container, and streams the step's output back from it. The agent of rank 0 (`StepRunner`) takes the
/// request, splits the tasks over the nodes (Slurm's block distribution), and has each node's agent run its
/// tasks inside that node's rank container (`runc exec`, so under the job's account, limits and GPUs), signing
/// the calls with the attempt's step key. It collects every node's output, whole lines at a time, into the
/// channel, and when every task has ended writes the step's exit status (the highest, as srun's) for srun to exit with.
enum SlurmSteps {
    /// Slurm's MAX_TASKS_PER_NODE is 512; Allot's agents run at most this many of one step's tasks on a node.
    static let maxTasksPerNode = 128

    /// Where the batch script's step channel is in its container.
    static let channelInContainer = "/.allot/steps"

    /// What a non-first rank of a batch job runs: nothing, until it is stopped with the script's end. A warning
    /// signal (`--signal` without `B:`) is for the steps' tasks beside it, so it ignores those.
    static let holder = "trap 'exit 0' TERM INT HUP; trap '' USR1 USR2 ALRM QUIT XCPU VTALRM PROF WINCH URG; while :; do sleep 3600 & wait $!; done"

    /// srun's request, as the shell script writes it: `key=value` lines, a `--` line, then the command's words,
    /// each ended by a NUL.
    struct Request: Equatable {
        var nodes: Int?
        var ntasks: Int?
        var tasksPerNode: Int?
        var label: Bool
        var chdir: String?
        var argv: [String]

        init?(_ data: Data) {
            guard let split = data.firstRange(of: Data("\n--\n".utf8)) else { return nil }
            let header = String(decoding: data[..<split.lowerBound], as: UTF8.self)
            var fields: [String: String] = [:]
            for line in header.split(separator: "\n") {
                let kv = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
            }
            func count(_ key: String) -> Int?? {
                guard let v = fields[key], !v.isEmpty else { return .some(nil) }
                guard let n = Int(v), n >= 1, n <= 100_000 else { return nil }
                return .some(n)
            }
            guard let nodes = count("nodes"), let ntasks = count("ntasks"), let tpn = count("tasks-per-node") else { return nil }
            self.nodes = nodes
            self.ntasks = ntasks
            self.tasksPerNode = tpn
            self.label = fields["label"] == "1"
            self.chdir = fields["chdir"].flatMap { $0.isEmpty ? nil : $0 }
            self.argv = data[split.upperBound...].split(separator: 0, omittingEmptySubsequences: false).dropLast().map {
                String(decoding: $0, as: UTF8.self)
            }
            if self.argv.isEmpty { return nil }
        }
    }

    /// How many tasks each of the step's nodes runs: the nodes asked (all of the job's by default), the tasks
    /// asked (by default the job's tasks per node on each), spread as Slurm's block distribution does: the first
    /// nodes take one more where they do not divide. Nil, with the reason, when the job cannot hold the step.
    static func layout(_ r: Request, jobNodes: Int, jobTasksPerNode: Int) -> Result<[Int], StepRefusal> {
        var nodes = r.nodes ?? jobNodes
        if r.nodes == nil, let n = r.ntasks {
            nodes = min(jobNodes, r.tasksPerNode.map { (n + $0 - 1) / $0 } ?? n)
        }
        guard nodes <= jobNodes else {
            return .failure(StepRefusal("srun: error: only \(jobNodes) nodes in the job's allocation, not \(nodes)"))
        }
        let total = r.ntasks ?? nodes * (r.tasksPerNode ?? jobTasksPerNode)
        guard (total + nodes - 1) / max(1, nodes) <= Self.maxTasksPerNode else {
            return .failure(StepRefusal("srun: error: at most \(Self.maxTasksPerNode) tasks per node"))
        }
        guard total >= nodes else { return .failure(StepRefusal("srun: error: \(total) tasks cannot be spread over \(nodes) nodes")) }
        if let tpn = r.tasksPerNode, total > tpn * nodes {
            return .failure(StepRefusal("srun: error: \(total) tasks do not fit \(nodes) nodes × \(tpn) tasks"))
        }
        let base = total / nodes
        let extra = total % nodes
        return .success((0..<nodes).map { base + ($0 < extra ? 1 : 0) })
    }

    struct StepRefusal: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    /// Slurm's `SLURM_TASKS_PER_NODE` form: `2(x3),1`.
    static func tasksPerNodeText(_ counts: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        while i < counts.count {
            var j = i
            while j + 1 < counts.count, counts[j + 1] == counts[i] { j += 1 }
            parts.append(j > i ? "\(counts[i])(x\(j - i + 1))" : "\(counts[i])")
            i = j + 1
        }
        return parts.joined(separator: ",")
    }

    /// The shell a task runs in: it takes srun's environment, enters the step's folder (or says why not), then
    /// becomes the command (`exec`, so signals and the exit status are the command's own). With `--label`, a
    /// reader beside it prefixes each line of its output (and errors) with its task id, through a FIFO.
    static func taskScript(label: Bool) -> String {
        let enter =
            #"if [ -n "$ALLOT_STEP_EXPORTS" ]; then eval "$ALLOT_STEP_EXPORTS"; fi; unset ALLOT_STEP_EXPORTS; "#
            + #"cd "$1" 2>/dev/null || echo "srun: cannot enter $1 on $(hostname); the task runs in $(pwd)" >&2; t=$2; shift 2; "#
        guard label else { return enter + #"exec "$@""# }
        return enter
            + #"f="${TMPDIR:-/tmp}/.allot-task-$$"; rm -f "$f"; mkfifo -m 600 "$f" || exit 1; "#
            + #"(while IFS= read -r l || [ -n "$l" ]; do printf '%s: %s\n' "$t" "$l"; done <"$f"; rm -f "$f") & "#
            + #"exec "$@" >"$f" 2>&1"#
    }

    /// `srun` inside a batch job. Options that shape the step (-N, -n, --ntasks-per-node, -l, -D) are read; the
    /// others are said to be not acted on, on its standard error.
    static let srun = #"""
        #!/bin/sh
        # srun inside an Allot batch job: runs a step on the job's nodes through their agents (see Steps.swift).
        dir=${ALLOT_STEP_DIR:-/.allot/steps}
        if [ ! -d "$dir" ] || [ ! -w "$dir" ]; then
          echo "srun: error: steps run from an Allot batch script on the job's first node (no step channel here)" >&2; exit 1
        fi
        nodes=; ntasks=; tpn=; label=0; chdir=
        while [ $# -gt 0 ]; do
          case $1 in
            --) shift; break ;;
            -N|--nodes) nodes=$2; shift 2 ;;
            -N*) nodes=${1#-N}; shift ;;
            --nodes=*) nodes=${1#*=}; shift ;;
            -n|--ntasks) ntasks=$2; shift 2 ;;
            -n*) ntasks=${1#-n}; shift ;;
            --ntasks=*) ntasks=${1#*=}; shift ;;
            --ntasks-per-node) tpn=$2; shift 2 ;;
            --ntasks-per-node=*) tpn=${1#*=}; shift ;;
            -l|--label) label=1; shift ;;
            -D|--chdir) chdir=$2; shift 2 ;;
            --chdir=*) chdir=${1#*=}; shift ;;
            -c|--cpus-per-task|-J|--job-name|-t|--time|--mpi|--cpu-bind|--cpu_bind|-G|--gpus|--gpus-per-task|--gpus-per-node|--gres|--mem|\
        --mem-per-gpu|--mem-per-cpu|-o|--output|-e|--error|-i|--input|-w|--nodelist|-x|--exclude|--export|--gpu-bind|-m|--distribution|\
        --ntasks-per-gpu|--cpus-per-gpu|-p|--partition|-A|--account|--container-image|--container-mounts|-W|--wait|--jobid|--het-group|\
        --hint|--network|-q|--qos|--signal|--kill-on-bad-exit|--mem-bind|--accel-bind|--tres-per-task|--comment|--dependency|-d)
              [ $# -ge 2 ] || { echo "srun: error: $1 needs a value" >&2; exit 1; }
              echo "srun: $1 $2: not acted on inside an Allot job (the step runs with the job's resources)" >&2; shift 2 ;;
            -*) echo "srun: $1: not acted on inside an Allot job" >&2; shift ;;
            *) break ;;
          esac
        done
        for v in "$nodes" "$ntasks" "$tpn"; do
          case $v in *[!0-9]*) echo "srun: error: '$v' is not a count" >&2; exit 1 ;; esac
        done
        [ $# -gt 0 ] || { echo "srun: fatal: no command to execute" >&2; exit 1; }
        token=$$.$(date +%s)
        req=$dir/$token.req
        # Tasks start with srun's environment, as Slurm's --export=ALL; what each node and task is told of itself is
        # its own (its rank, GPUs, node), not the first node's.
        ( for v in SLURM_PROCID SLURM_LOCALID SLURM_NODEID SLURM_STEP_ID SLURM_STEPID SLURM_STEP_NUM_TASKS SLURM_STEP_NUM_NODES \
            SLURM_STEP_NODELIST SLURM_STEP_TASKS_PER_NODE SLURM_STEP_GPUS SLURM_NTASKS SLURM_NPROCS SLURM_NNODES SLURM_NODELIST \
            SLURM_TASKS_PER_NODE SLURMD_NODENAME SLURM_JOB_GPUS SLURM_GPUS_ON_NODE CUDA_VISIBLE_DEVICES NVIDIA_VISIBLE_DEVICES \
            NODE_RANK PET_NODE_RANK ALLOT_NODE ALLOT_NODE_RANK ALLOT_STEP_DIR HOSTNAME PWD OLDPWD SHLVL _; do
            unset "$v" 2>/dev/null; done; export -p ) >"$dir/$token.env" 2>/dev/null
        { printf 'nodes=%s\nntasks=%s\ntasks-per-node=%s\nlabel=%s\nchdir=%s\n--\n' "$nodes" "$ntasks" "$tpn" "$label" "${chdir:-$PWD}"
          printf '%s\0' "$@"; } >"$req.tmp" && mv "$req.tmp" "$req" || exit 1
        trap ': >"$dir/$token.cancel"' INT TERM HUP
        off=0
        while :; do
          if [ -f "$dir/$token.rc" ]; then ended=1; else ended=0; fi
          if [ -f "$dir/$token.out" ]; then
            size=$(wc -c <"$dir/$token.out")
            if [ "$size" -gt "$off" ]; then tail -c +$((off + 1)) "$dir/$token.out" | head -c $((size - off)); off=$size; fi
          fi
          if [ "$ended" = 1 ]; then rc=$(cat "$dir/$token.rc"); rm -f "$dir/$token".*; exit "${rc:-1}"; fi
          sleep 0.2
        done
        """#
}

/// One step's tasks on this node.
struct StepRun: Sendable {
    var output: String
    /// When its last task ended: its output is taken as complete a moment later (a `--label` reader may still write).
    var endedAt: Date?
    /// Task id → exit status, once it ended.
    var exits: [Int: Int] = [:]
    var tasks: [Int]
    var pids: [Int32] = []
    var ended: Bool { self.exits.count == self.tasks.count }
    var exitCode: Int? { self.ended ? (self.exits.values.max() ?? 0) : nil }
}

extension Supervisor {
    var isContained: Bool {
        if case .container = self.isolation { return true }
        return false
    }

    /// The folder through which a batch script's srun asks for steps (`ranks/KEY/steps`, the agent's, bound
    /// into the container as the rank's account's).
    func stepChannel(for key: RankKey, create: Bool) throws -> URL {
        let dir = self.folder(for: key).appendingPathComponent("steps")
        if create {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        return dir
    }

    /// The step key of the attempt a rank here belongs to, for checking the calls of the job's first node.
    public func stepKey(for key: RankKey) -> Data? {
        guard let hex = self.records[key]?.batch?.slurm?.stepKey else { return nil }
        return NodeKey.parse(hex: hex)
    }

    /// The running batch scripts here (rank 0 of a batch job), with what their steps need.
    func batchScripts() -> [(key: RankKey, launch: LaunchRequest, channel: URL)] {
        self.records.values.compactMap { r in
            guard r.state == .running, r.stopRequestedAt == nil, r.key.rank == 0, let launch = r.batch else { return nil }
            return (r.key, launch, self.folder(for: r.key).appendingPathComponent("steps"))
        }
    }

    /// Starts this node's tasks of a step in the rank's container (or, without containers, as plain processes
    /// with the rank's environment). Idempotent by step number: the first node's agent may ask twice.
    public func runStep(_ key: RankKey, _ step: StepTasks) throws {
        guard let record = self.records[key], record.state == .running, let launch = record.batch else {
            throw SupervisorError.unknownRank(key)
        }
        if self.stepRuns[key]?[step.step] != nil { return }
        let dir = self.folder(for: key).appendingPathComponent("step-output")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let output = dir.appendingPathComponent("\(step.step).out").path
        var run = StepRun(output: output, tasks: step.tasks)
        let script = SlurmSteps.taskScript(label: step.label)
        let folder = step.chdir ?? record.workingDir ?? "/work"
        for (local, task) in step.tasks.enumerated() {
            var vars: [String: String] = [
                "SLURM_PROCID": "\(task)", "SLURM_LOCALID": "\(local)", "SLURM_NODEID": "\(step.nodeID)", "SLURM_STEP_ID": "\(step.step)",
                "SLURM_STEPID": "\(step.step)", "SLURM_STEP_NUM_TASKS": "\(step.ntasks)", "SLURM_STEP_NUM_NODES": "\(step.nnodes)",
                "SLURM_STEP_NODELIST": step.nodelist, "SLURM_STEP_TASKS_PER_NODE": step.tasksPerNode, "SLURM_NTASKS": "\(step.ntasks)",
                "SLURM_NPROCS": "\(step.ntasks)", "SLURM_NNODES": "\(step.nnodes)", "SLURM_NODELIST": step.nodelist,
                "SLURM_TASKS_PER_NODE": step.tasksPerNode,
            ]
            if let e = step.exports, e.utf8.count <= 96 << 10, !e.contains("\0") { vars["ALLOT_STEP_EXPORTS"] = e }
            let argv = ["/bin/sh", "-c", script, "allot-task", folder, "\(task)"] + step.argv
            let pid: Int32
            if case .container(let runtime) = self.isolation {
                let env = vars.sorted { $0.key < $1.key }.flatMap { ["--env", "\($0.key)=\($0.value)"] }
                pid = try Self.spawn(
                    [runtime.runc, "exec"] + env + [ContainerRuntime.containerID(key)] + argv,
                    environment: ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], logPath: output)
            } else {
                var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ALLOT_") }
                env.merge(Self.environment(for: launch, node: self.node, account: nil)) { _, ours in ours }
                if let tools = self.toolsDir { env["PATH"] = tools.path + ":" + (env["PATH"] ?? "/usr/bin:/bin") }
                env.merge(vars) { _, step in step }
                pid = try Self.spawn(argv, environment: env, logPath: output)
            }
            self.children.insert(pid)
            self.taskPids[pid] = (key, step.step, task)
            run.pids.append(pid)
        }
        if !FileManager.default.fileExists(atPath: output) { FileManager.default.createFile(atPath: output, contents: nil) }
        self.stepRuns[key, default: [:]][step.step] = run
    }

    /// A task's end, from `poll`'s reaping.
    func taskEnded(_ task: (rank: RankKey, step: Int, task: Int), status: Int32?) {
        guard var run = self.stepRuns[task.rank]?[task.step] else { return }
        var code = 1
        if let status {
            let signal = Int(status & 0x7f)
            code = signal == 0 ? Int((status >> 8) & 0xff) : 128 + signal
        }
        run.exits[task.task] = code
        if run.ended { run.endedAt = Date() }
        self.stepRuns[task.rank]?[task.step] = run
    }

    /// How this node's tasks of a step are doing, with their output from `offset` on (at most 1 MiB at a time).
    public func stepProgress(_ key: RankKey, step: Int, offset: Int) throws -> StepProgress {
        guard let run = self.stepRuns[key]?[step] else { throw SupervisorError.unknownRank(key) }
        var data = Data()
        if let handle = FileHandle(forReadingAtPath: run.output) {
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(max(0, offset)))
            data = try handle.read(upToCount: 1 << 20) ?? Data()
        }
        // Ended is only said once everything it wrote has been read, a moment after its last task ended.
        let settled = run.endedAt.map { Date().timeIntervalSince($0) > 0.2 } ?? false
        let ended = run.ended && settled && data.count < 1 << 20
        return StepProgress(ended: ended, exitCode: ended ? run.exitCode : nil, output: data, nextOffset: max(0, offset) + data.count)
    }

    /// SIGTERM to a step's tasks here (srun was interrupted); the rank goes on.
    public func cancelStep(_ key: RankKey, step: Int) {
        guard let run = self.stepRuns[key]?[step] else { return }
        for pid in run.pids where self.taskPids[pid] != nil { kill(pid, SIGTERM) }
    }
}

/// The agent of a batch script's first node: takes srun's requests from the script's step channel, has every
/// node of the step run its tasks, gathers their output and ends the step with its status.
public actor StepRunner {
    let supervisor: Supervisor
    /// Requests being run, by their channel file.
    private var taken: Set<String> = []
    private var steps: [String: StepStatus] = [:]

    public init(supervisor: Supervisor) { self.supervisor = supervisor }

    /// The steps to report: those running, and those ended in the last 10 minutes (allotd keeps them).
    public func statuses() -> [StepStatus] {
        let cutoff = Date().addingTimeInterval(-600)
        self.steps = self.steps.filter { $0.value.endedAt.map { $0 > cutoff } ?? true }
        return self.steps.values.sorted { ($0.jobID, $0.attempt, $0.step) < ($1.jobID, $1.attempt, $1.step) }
    }

    /// Looks for new requests (every poll of the heartbeat loop); each is run by a task of its own. A request is
    /// renamed `.run` when taken; one found so that no task runs (the agent restarted meanwhile) ends with an error,
    /// so its srun does not wait for ever. Step numbers are kept in the rank's folder, so they never repeat.
    public func tick() async {
        for script in await self.supervisor.batchScripts() {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: script.channel.path)) ?? []
            for file in files.sorted() where file.hasSuffix(".run") {
                let path = script.channel.appendingPathComponent(file).path
                guard !self.taken.contains(path) else { continue }
                unlink(path)
                Self.end(
                    channel: script.channel, token: String(file.dropLast(4)), code: 1,
                    message: "srun: error: the node's agent restarted during this step\n")
            }
            for file in files.sorted() where file.hasSuffix(".req") {
                let request = script.channel.appendingPathComponent(file).path
                // At most 16 steps of one script at once; the others wait their turn.
                guard self.taken.filter({ $0.hasPrefix(script.channel.path + "/") }).count < 16 else { break }
                let token = String(file.dropLast(4))
                let path = script.channel.appendingPathComponent("\(token).run").path
                guard !self.taken.contains(path), rename(request, path) == 0 else { continue }
                self.taken.insert(path)
                let counter = await self.supervisor.folder(for: script.key).appendingPathComponent("next-step")
                let number = ChannelFile.read(counter.path, max: 64).flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
                try? Data("\(number + 1)".utf8).write(to: counter, options: .atomic)
                Task { await self.run(script: script, token: token, request: path, step: number) }
            }
        }
    }

    /// Ends a step srun waits for with `code`, saying why (the request could not be taken).
    static func end(channel: URL, token: String, code: Int, message: String) {
        var owner = stat()
        guard stat(channel.path, &owner) == 0 else { return }
        if let out = ChannelFile.create(channel.path, "\(token).out", uid: owner.st_uid, gid: owner.st_gid) {
            try? out.write(contentsOf: Data(message.utf8))
            try? out.close()
        }
        ChannelFile.publishStatus(channel.path, token: token, code: code, uid: owner.st_uid, gid: owner.st_gid)
    }

    private func run(script: (key: RankKey, launch: LaunchRequest, channel: URL), token: String, request path: String, step: Int) async {
        let channel = script.channel
        // The channel is the job's to write: its files are opened without following links, read only when they
        // are plain files of their own, and the agent's are made anew (never an existing name) and owned by fd.
        var owner = stat()
        let ownerKnown = stat(channel.path, &owner) == 0
        var out: FileHandle?
        func append(_ data: Data) {
            guard !data.isEmpty else { return }
            if out == nil, ownerKnown { out = ChannelFile.create(channel.path, "\(token).out", uid: owner.st_uid, gid: owner.st_gid) }
            try? out?.write(contentsOf: data)
        }
        func finish(_ code: Int) {
            try? out?.close()
            if ownerKnown { ChannelFile.publishStatus(channel.path, token: token, code: code, uid: owner.st_uid, gid: owner.st_gid) }
            unlink(path)
            self.taken.remove(path)
        }
        guard let data = ChannelFile.read(path, max: 1 << 20), let request = SlurmSteps.Request(data), let slurm = script.launch.slurm else {
            append(Data("srun: error: the request could not be read\n".utf8))
            return finish(1)
        }
        let launch = script.launch
        let counts: [Int]
        // Without -n/-N, a step is the job's own tasks (SLURM_NTASKS), as srun inside an allocation.
        var asked = request
        if asked.ntasks == nil && asked.nodes == nil && asked.tasksPerNode == nil { asked.ntasks = slurm.options.ntasks }
        switch SlurmSteps.layout(asked, jobNodes: max(1, slurm.nodes.count), jobTasksPerNode: slurm.options.tasksPerNode) {
        case .success(let c): counts = c
        case .failure(let refusal):
            append(Data((refusal.message + "\n").utf8))
            return finish(1)
        }
        // srun's environment (`export -p`, as its shell wrote it), passed to every task; at most 96 KiB, an argument's limit.
        let envFile = channel.appendingPathComponent("\(token).env").path
        let envData = ChannelFile.read(envFile, max: 1 << 20)
        var exports = envData.map { String(decoding: $0, as: UTF8.self) }
        unlink(envFile)
        if let e = exports, e.utf8.count > 96 << 10 {
            append(Data("srun: the environment is over 96 KiB: the tasks start with the job's own\n".utf8))
            exports = nil
        }
        let names = slurm.nodes.prefix(counts.count).map(\.name)
        let nodelist = Hostlist.compress(Array(names))
        let perNode = SlurmSteps.tasksPerNodeText(counts)
        let total = counts.reduce(0, +)
        let statusKey = "\(launch.key.jobID).\(launch.key.attempt).\(step)"
        self.steps[statusKey] = StepStatus(
            jobID: launch.key.jobID, attempt: launch.key.attempt, step: step,
            command: String(request.argv.map(ShellWord.quote).joined(separator: " ").prefix(200)), nodes: counts.count, tasks: total,
            state: .running, startedAt: Date())
        let key = slurm.stepKey.flatMap { NodeKey.parse(hex: $0) }

        // Start every node's tasks.
        var first = 0
        var nodes: [(rank: RankKey, client: APIClient?, offset: Int, ended: Bool, code: Int?, failingSince: Date?)] = []
        for (i, count) in counts.enumerated() {
            let tasks = StepTasks(
                step: step, argv: request.argv, tasks: Array(first..<first + count), ntasks: total, nnodes: counts.count, nodeID: i,
                nodelist: nodelist, tasksPerNode: perNode, label: request.label, chdir: request.chdir, exports: exports)
            first += count
            let rank = RankKey(jobID: launch.key.jobID, attempt: launch.key.attempt, rank: i)
            if i == launch.key.rank {
                do {
                    try await self.supervisor.runStep(rank, tasks)
                    nodes.append((rank, nil, 0, false, nil, nil))
                } catch {
                    append(Data("srun: error: cannot start the tasks on \(slurm.nodes[i].name): \(error)\n".utf8))
                    nodes.append((rank, nil, 0, true, 1, nil))
                }
                continue
            }
            guard let url = slurm.nodes[i].agentURL, let key else {
                append(Data("srun: error: node \(slurm.nodes[i].name) has no agent address or the job no step key\n".utf8))
                nodes.append((rank, nil, 0, true, 1, nil))
                continue
            }
            let client = APIClient(agent: url, key: key, timeout: .seconds(10))
            var started = false
            for attempt in 0..<20 where !started {
                do {
                    let _: StepProgress = try await client.post("/v1/steps/\(rank.jobID)/\(rank.attempt)/\(rank.rank)", json: tasks)
                    started = true
                } catch {
                    if attempt == 19 { append(Data("srun: error: node \(slurm.nodes[i].name) did not take the step: \(error)\n".utf8)) }
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
            nodes.append((rank, client, 0, !started, started ? nil : 1, nil))
        }

        // Gather output (whole lines, so nodes' lines do not mix) until every node's tasks have ended.
        var pending: [Int: Data] = [:]
        var cancelled = false
        while nodes.contains(where: { !$0.ended }) {
            if !cancelled, FileManager.default.fileExists(atPath: channel.appendingPathComponent("\(token).cancel").path) {
                cancelled = true
                for n in nodes where !n.ended {
                    if let client = n.client {
                        let _: StepProgress? = try? await client.post(
                            "/v1/steps/\(n.rank.jobID)/\(n.rank.attempt)/\(n.rank.rank)/\(step)/cancel", json: [String: String]())
                    } else {
                        await self.supervisor.cancelStep(n.rank, step: step)
                    }
                }
            }
            if !(await self.supervisor.batchScripts().contains { $0.key == launch.key }) { break }  // the script ended: so did its steps
            for i in nodes.indices where !nodes[i].ended {
                let progress: StepProgress
                do {
                    if let client = nodes[i].client {
                        progress = try await client.get(
                            "/v1/steps/\(nodes[i].rank.jobID)/\(nodes[i].rank.attempt)/\(nodes[i].rank.rank)/\(step)?offset=\(nodes[i].offset)")
                    } else {
                        progress = try await self.supervisor.stepProgress(nodes[i].rank, step: step, offset: nodes[i].offset)
                    }
                    nodes[i].failingSince = nil
                } catch {
                    let since = nodes[i].failingSince ?? Date()
                    nodes[i].failingSince = since
                    if Date().timeIntervalSince(since) > 30 {
                        append(Data("srun: error: lost contact with \(slurm.nodes[nodes[i].rank.rank].name): \(error)\n".utf8))
                        nodes[i].ended = true
                        nodes[i].code = 1
                    }
                    continue
                }
                nodes[i].offset = progress.nextOffset
                var buffer = (pending[i] ?? Data()) + progress.output
                if progress.ended {
                    append(buffer)
                    buffer = Data()
                    nodes[i].ended = true
                    nodes[i].code = progress.exitCode
                } else if let newline = buffer.lastIndex(of: 10) {
                    append(buffer[...newline])
                    buffer = Data(buffer[buffer.index(after: newline)...])
                } else if buffer.count > 1 << 20 {
                    // A line longer than 1 MiB (progress bars redrawn with \r): passed on as it is.
                    append(buffer)
                    buffer = Data()
                }
                pending[i] = buffer
            }
            if nodes.contains(where: { !$0.ended }) { try? await Task.sleep(for: .milliseconds(200)) }
        }
        let code = nodes.map { $0.code ?? 1 }.max() ?? 1
        self.steps[statusKey]?.state = .exited
        self.steps[statusKey]?.exitCode = code
        self.steps[statusKey]?.endedAt = Date()
        finish(code)
    }
}

/// Files in a step channel, which the job writes too: read only when plain, unlinked once and below a size; made
/// anew by the agent with `O_EXCL`, never following a link, and given to the job's account by descriptor.
enum ChannelFile {
    static func read(_ path: String, max: Int) -> Data? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_nlink == 1, Int(st.st_size) <= max else { return nil }
        return try? handle.read(upToCount: max)
    }

    /// A step's exit status for srun: written aside, then renamed into place whole (srun polls for it).
    static func publishStatus(_ dir: String, token: String, code: Int, uid: uid_t, gid: gid_t) {
        guard let h = self.create(dir, "\(token).rc.tmp", uid: uid, gid: gid) else { return }
        try? h.write(contentsOf: Data("\(code)\n".utf8))
        try? h.close()
        rename("\(dir)/\(token).rc.tmp", "\(dir)/\(token).rc")
    }

    static func create(_ dir: String, _ name: String, uid: uid_t, gid: gid_t) -> FileHandle? {
        let path = dir + "/" + name
        unlink(path)  // whatever the job left under this name; a link is removed, not followed
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_APPEND, 0o600)
        guard fd >= 0 else { return nil }
        _ = fchown(fd, uid, gid)
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }
}
