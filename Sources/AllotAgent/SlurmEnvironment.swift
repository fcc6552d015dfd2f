public import AllotCore
import Foundation

/// What a batch script's rank gets of Slurm's world: the `SLURM_*` variables scripts read, the `--output` and
/// `--error` files, the job's nodes in `/etc/hosts`, and `scontrol` and `srun` on its PATH. A rank's
/// `SLURM_NODEID` and `SLURM_PROCID` are its node rank (its steps' tasks get their own, `Steps.swift`).
enum SlurmEnvironment {
    /// Where the rank sees the agent's `scontrol` (bound read-only into its container).
    static let binInContainer = "/.allot/bin"

    /// The `SLURM_*` variables of one rank (`man sbatch`, "OUTPUT ENVIRONMENT VARIABLES").
    static func variables(for request: LaunchRequest, slurm: SlurmLaunch) -> [String: String] {
        let o = slurm.options
        let names = slurm.nodes.map(\.name)
        let nodelist = Hostlist.compress(names)
        let nnodes = max(1, names.count)
        let gpus = request.gpuIndices.map(String.init).joined(separator: ",")
        var env: [String: String] = [
            "SLURM_JOB_ID": "\(request.key.jobID)", "SLURM_JOBID": "\(request.key.jobID)", "SLURM_JOB_NAME": slurm.jobName,
            "SLURM_JOB_NODELIST": nodelist, "SLURM_NODELIST": nodelist, "SLURM_NNODES": "\(nnodes)", "SLURM_JOB_NUM_NODES": "\(nnodes)",
            "SLURM_NODEID": "\(request.gang.nodeRank)", "SLURM_PROCID": "\(request.gang.nodeRank)", "SLURM_LOCALID": "0",
            "SLURM_NTASKS": "\(o.ntasks ?? o.tasksPerNode * nnodes)", "SLURM_NPROCS": "\(o.ntasks ?? o.tasksPerNode * nnodes)",
            "SLURM_NTASKS_PER_NODE": "\(o.tasksPerNode)", "SLURM_TASKS_PER_NODE": nnodes > 1 ? "\(o.tasksPerNode)(x\(nnodes))" : "\(o.tasksPerNode)",
            "SLURM_GPUS_ON_NODE": "\(request.gpuIndices.count)", "SLURM_JOB_GPUS": gpus, "SLURM_STEP_GPUS": gpus,
            "SLURM_RESTART_COUNT": "\(max(0, request.key.attempt - 1))", "SLURM_JOB_ACCOUNT": slurm.account,
            "SLURM_JOB_PARTITION": slurm.partition, "SLURM_JOB_USER": request.tenant.owner, "SLURM_CLUSTER_NAME": "allot",
            "SLURMD_NODENAME": names.indices.contains(request.gang.nodeRank) ? names[request.gang.nodeRank] : "",
            "SLURM_CPUS_ON_NODE": "\(max(1, request.tenant.cpuMilli / 1000))",
            "SLURM_JOB_CPUS_PER_NODE": nnodes > 1
                ? "\(max(1, request.tenant.cpuMilli / 1000))(x\(nnodes))" : "\(max(1, request.tenant.cpuMilli / 1000))",
        ]
        if let c = o.cpusPerTask { env["SLURM_CPUS_PER_TASK"] = "\(c)" }
        if request.tenant.memoryMiB > 0 { env["SLURM_MEM_PER_NODE"] = "\(request.tenant.memoryMiB)" }
        if let dir = o.submitDir { env["SLURM_SUBMIT_DIR"] = dir }
        if let a = slurm.array {
            env["SLURM_ARRAY_JOB_ID"] = "\(a.jobID)"
            env["SLURM_ARRAY_TASK_ID"] = "\(a.taskID)"
            env["SLURM_ARRAY_TASK_COUNT"] = "\(a.count)"
            env["SLURM_ARRAY_TASK_MIN"] = "\(a.min)"
            env["SLURM_ARRAY_TASK_MAX"] = "\(a.max)"
        }
        return env
    }

    /// The rank's output and error files (Slurm's patterns filled in), or nil where the rank's output stays in
    /// the job's log: only the first node writes the script's files (Slurm's batch step), unless the pattern
    /// names the node (`%N`, `%n`) so that each node has its own.
    /// A batch script without `--output` or `--error` gets Slurm's default: `slurm-%j.out` (`slurm-%A_%a.out` for
    /// an array task) in its working directory — where the node has it (the submit directory shared with jobs, or
    /// `-D`); else its output stays in the job's log.
    static func files(for request: LaunchRequest, slurm: SlurmLaunch) -> (output: String, error: String?)? {
        var options = slurm.options
        if options.output == nil && options.error == nil, options.submitDir != nil, let dir = request.workingDir {
            options.output = URL(fileURLWithPath: dir).appendingPathComponent(slurm.array == nil ? "slurm-%j.out" : "slurm-%A_%a.out").path
        }
        guard let pattern = options.output ?? options.error else { return nil }
        let perNode = { (p: String) in p.contains("%N") || p.contains("%n") }
        guard request.gang.nodeRank == 0 || perNode(pattern) else { return nil }
        let node = slurm.nodes.indices.contains(request.gang.nodeRank) ? slurm.nodes[request.gang.nodeRank].name : ""
        func fill(_ p: String) -> String {
            SlurmOptions.fill(
                p, jobID: request.key.jobID, name: slurm.jobName, node: node, nodeRank: request.gang.nodeRank, user: request.tenant.owner,
                arrayJobID: slurm.array?.jobID, arrayTaskID: slurm.array?.taskID)
        }
        let output = fill(pattern)
        // --error alone: standard output stays in the log; both, or --output alone (error joins output): the files.
        if options.output == nil, let e = options.error { return (output: "", error: fill(e)) }
        return (output: output, error: options.error.map(fill))
    }

    /// Shell lines run before the script: they redirect its output to its files (truncated, or appended with
    /// `--open-mode=append` and on every attempt after the first, as Slurm does for a requeued job) and say so in
    /// the job's log; a file that cannot be opened fails the rank with the shell's reason.
    static func redirection(for request: LaunchRequest, slurm: SlurmLaunch) -> String {
        guard let files = self.files(for: request, slurm: slurm) else { return "" }
        let op = slurm.options.appendOutput || request.key.attempt > 1 ? ">>" : ">"
        var lines: [String] = []
        if !files.output.isEmpty {
            lines.append(
                "echo \(JobShell.quote("allot: output goes to \(files.output) (\(slurm.options.output == nil ? "Slurm's default; --output to choose" : "--output"))"))"
            )
            if let e = files.error {
                lines.append("echo \(JobShell.quote("allot: errors go to \(e) (--error)"))")
                lines.append("exec \(op)\(JobShell.quote(files.output)) 2\(op)\(JobShell.quote(e)) </dev/null || exit 1")
            } else {
                lines.append("exec \(op)\(JobShell.quote(files.output)) 2>&1 </dev/null || exit 1")
            }
        } else if let e = files.error {
            lines.append("echo \(JobShell.quote("allot: errors go to \(e) (--error)"))")
            lines.append("exec 2\(op)\(JobShell.quote(e)) </dev/null || exit 1")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The folders the rank's output files are in: bound into its container, where the node shares them.
    static func outputFolders(for request: LaunchRequest, slurm: SlurmLaunch) -> [String] {
        guard let files = self.files(for: request, slurm: slurm) else { return [] }
        return Array(Set([files.output, files.error ?? ""].filter { !$0.isEmpty }.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path }))
            .sorted()
    }

    /// A batch script runs in its submit directory, as under Slurm, where the node can give it (`problem` says why
    /// not); else where a job without one runs (`fallback`; Slurm falls back to /tmp), which its log says.
    /// Returns that line of the log, or nothing.
    static func enterSubmitDirectory(_ request: inout LaunchRequest, fallback: String, problem: (String) -> String?) -> String {
        guard request.workingDir == nil, let submit = request.slurm?.options.submitDir else { return "" }
        if let why = problem(submit) { return "echo \(JobShell.quote("allot: \(why); running in \(fallback)")) >&2\n" }
        request.workingDir = submit
        return ""
    }

    /// What a batch rank's container gets besides a plain rank's: `scontrol` and `srun`, its `/etc/hosts` (written
    /// into the rank's folder), the folders of its output files, and on the batch node its step channel.
    static func mounts(for slurm: SlurmLaunch, folder: URL, tools: URL?, outputFolders: [String], stepChannel: String?) throws -> [OCISpec.Mount] {
        var mounts: [OCISpec.Mount] = []
        if let tools {
            mounts.append(.init(destination: self.binInContainer, type: "bind", source: tools.path, options: ["rbind", "ro", "nosuid", "nodev"]))
        }
        let hosts = folder.appendingPathComponent("hosts")
        let base = (try? String(contentsOfFile: "/etc/hosts", encoding: .utf8)) ?? "127.0.0.1\tlocalhost\n"
        try Data(self.hosts(for: slurm, base: base).utf8).write(to: hosts)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: hosts.path)
        mounts.append(.init(destination: "/etc/hosts", type: "bind", source: hosts.path, options: ["bind", "ro", "nosuid", "nodev"]))
        for dir in outputFolders {
            mounts.append(.init(destination: dir, type: "bind", source: dir, options: ["rbind", "rw", "nosuid", "nodev"]))
        }
        if let stepChannel {
            mounts.append(
                .init(
                    destination: SlurmSteps.channelInContainer, type: "bind", source: stepChannel,
                    options: ["rbind", "rw", "nosuid", "nodev", "noexec"]))
        }
        return mounts
    }

    /// `/etc/hosts` for the rank: the node's own, then each node of the allocation by name at the address its
    /// agent is reached at, so a name from `scontrol show hostnames` works as MASTER_ADDR as it does under Slurm.
    static func hosts(for slurm: SlurmLaunch, base: String) -> String {
        var text = base.hasSuffix("\n") || base.isEmpty ? base : base + "\n"
        text += "# the nodes of this Allot job\n"
        var seen: Set<String> = []
        for node in slurm.nodes where node.name != node.address && seen.insert(node.name).inserted && self.isAddress(node.address) {
            text += "\(node.address)\t\(node.name)\n"
        }
        return text
    }

    static func isAddress(_ s: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }

    /// `scontrol` inside a job: the read-only part batch scripts use. Written by hand in POSIX shell because no
    /// Slurm is installed on an Allot node and every rank's root filesystem has a /bin/sh.
    static let scontrol = #"""
        #!/bin/sh
        # scontrol inside an Allot job: show hostnames|hostname|hostlist [LIST], show job [ID]. Nothing else.
        split_top() {
          s=$1; item=; depth=0
          while [ -n "$s" ]; do
            c=${s%"${s#?}"}; s=${s#?}
            case $c in
              \[) depth=$((depth+1)); item=$item$c ;;
              \]) depth=$((depth-1)); item=$item$c ;;
              ,) if [ "$depth" -eq 0 ]; then [ -n "$item" ] && printf '%s\n' "$item"; item=; else item=$item$c; fi ;;
              *) item=$item$c ;;
            esac
          done
          [ -n "$item" ] && printf '%s\n' "$item"
          return 0
        }
        expand_item() {
          case $1 in
            *\[*\]*) ;;
            *) printf '%s\n' "$1"; return 0 ;;
          esac
          local pre rest body post r lo hi w n h
          pre=${1%%\[*}; rest=${1#*\[}; body=${rest%%\]*}; post=${rest#*\]}
          for r in $(printf '%s' "$body" | tr ',' ' '); do
            lo=${r%%-*}; hi=${r#*-}
            case $lo$hi in *[!0-9]*|'') echo "scontrol: invalid hostlist: $1" >&2; return 1 ;; esac
            w=${#lo}
            n=${lo#"${lo%%[!0]*}"}; n=${n:-0}
            h=${hi#"${hi%%[!0]*}"}; h=${h:-0}
            while [ "$n" -le "$h" ]; do
              expand_item "$pre$(printf "%0${w}d" "$n")$post" || return 1
              n=$((n+1))
            done
          done
        }
        hostnames() {
          split_top "${1:-$SLURM_JOB_NODELIST}" | while IFS= read -r it; do expand_item "$it" || exit 1; done
        }
        case "$1 $2" in
          "show hostnames"|"show hostname") hostnames "$3" ;;
          "show hostlist"|"show hostlistsorted")
            if [ -z "$3" ] || [ "$(hostnames "$3" | tr '\n' ' ')" = "$(hostnames "" | tr '\n' ' ')" ]; then echo "$SLURM_JOB_NODELIST"
            else hostnames "$3" | paste -sd, -; fi ;;
          "show job"|"show jobs")
            if [ -n "$3" ] && [ "$3" != "$SLURM_JOB_ID" ]; then echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; fi
            echo "JobId=$SLURM_JOB_ID JobName=$SLURM_JOB_NAME"
            echo "   UserId=$SLURM_JOB_USER Account=$SLURM_JOB_ACCOUNT"
            echo "   JobState=RUNNING Reason=None RestartCnt=${SLURM_RESTART_COUNT:-0}"
            echo "   Partition=$SLURM_JOB_PARTITION NodeList=$SLURM_JOB_NODELIST"
            echo "   NumNodes=$SLURM_NNODES NumTasks=$SLURM_NTASKS CPUs/Task=${SLURM_CPUS_PER_TASK:-1}"
            echo "   TRES=gres/gpu=$SLURM_GPUS_ON_NODE per node"
            echo "   WorkDir=$(pwd) SubmitDir=${SLURM_SUBMIT_DIR:-}" ;;
          *) echo "scontrol: '$*' is not available inside an Allot job (show hostnames, show hostlist and show job are)" >&2; exit 1 ;;
        esac
        """#

    /// Writes `scontrol` and `srun` into the agent's `bin` folder (owned by the agent, readable by all), returning the folder.
    static func installTools(in stateDir: URL) throws -> URL {
        let bin = stateDir.appendingPathComponent("bin")
        let fm = FileManager.default
        try fm.createDirectory(at: bin, withIntermediateDirectories: true)
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin.path)
        for (name, text) in [("scontrol", self.scontrol), ("srun", SlurmSteps.srun)] {
            let file = bin.appendingPathComponent(name)
            try Data((text + "\n").utf8).write(to: file, options: .atomic)
            try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: file.path)
        }
        return bin
    }
}
