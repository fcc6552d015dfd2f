public import AllotCore
import CAllotSpawn
public import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Whether a process runs (and is no zombie); for tests and diagnostics.
public func processIsAlive(_ pid: Int32) -> Bool { Supervisor.isAlive(pid: pid, startTicks: nil) }

/// Errors the agent's API turns into HTTP statuses.
public enum SupervisorError: Error, CustomStringConvertible, Equatable {
    case staleAttempt(requested: Int, newest: Int)
    /// A rank under the same key from another database still runs here; it is being killed, try again.
    case foreignRankRunning(RankKey)
    case spawnFailed(String)
    case unknownRank(RankKey)
    /// The launch cannot work on this node (no such account, no such image or working directory): retrying
    /// will not mend it.
    case refused(String)
    /// A GPU the launch names is not listed by nvidia-smi now: the node's fault, not the job's, so allotd retries
    /// and then requeues the attempt as a dispatch failure (and quarantines the GPU from the node's next report).
    case gpuMissing(String)

    public var description: String {
        switch self {
        case .staleAttempt(let requested, let newest):
            "attempt \(requested) is older than attempt \(newest) of the same job, already run here: refused"
        case .foreignRankRunning(let key):
            "rank \(key) of another attempt with this number (another database's) still runs here: it is being killed, try again"
        case .spawnFailed(let why): "cannot start the command: \(why)"
        case .unknownRank(let key): "no rank \(key) on this node"
        case .refused(let why): why
        case .gpuMissing(let uuid): "GPU \(uuid.prefix(100)) is not on this node now: nvidia-smi no longer lists it"
        }
    }
}

/// How ranks are confined. `container` is what production and CI run; `none` runs plain processes in the agent's
/// own account, for development on a machine where the agent cannot be root — ranks are then not isolated.
public enum Isolation: Sendable {
    case container(ContainerRuntime)
    case none
}

/// Starts, watches and stops ranks, keeping each rank's record under the state folder, so that a restarted
/// agent still knows what it ran.
///
/// With containers, each rank is `runc run --keep` of a bundle the agent writes: runc stays the agent's child for
/// as long as the container runs, forwards the stop signal to the rank's init, and exits with the rank's status;
/// the container's cgroup is read (limits hit?) before it is deleted. A stop is SIGTERM to runc (forwarded into
/// the container), then SIGKILL to the container's init once the grace period is over, which ends every process
/// of its pid namespace. Without containers, a rank is `/bin/sh -c COMMAND` leading its own process group.
public actor Supervisor {
    /// What is kept on disk for one rank (`ranks/JOB.ATTEMPT.RANK/meta.json`).
    struct Record: Codable, Sendable {
        var key: RankKey
        /// runc's pid with containers, the shell's without.
        var pid: Int32
        /// The process's start time in clock ticks (/proc/PID/stat), so a reused pid is not mistaken for it.
        var startTicks: UInt64?
        var launchedAt: Date
        var state: RankStatus.State
        var exitCode: Int?
        var signal: Int?
        var gracePeriodSeconds: Int
        var stopRequestedAt: Date?
        var acknowledged: Bool
        var contained: Bool?
        var logPath: String?
        var memoryMiB: Int?
        var detail: String?
        /// The container is ended but runc has not removed it yet: tried again at every poll.
        var awaitsDelete: Bool?
        /// The attempt's random id from allotd (nil for ranks launched before ids were sent).
        var launchID: String?
        /// Another database's rank, found under a launch's key: killed, never reported (allotd would take its end
        /// for its own attempt's).
        var foreign: Bool?
        /// The job's warning signal (`--signal`), when it is due (its time limit less the lead), whether it was sent.
        var warning: JobSignal?
        var warnAt: Date?
        var warned: Bool?
        /// A drain's or reclaim's stop that warned first: SIGTERM is due then; its grace counts from the warning.
        var terminateAt: Date?
        var warnedAt: Date?
        /// A batch job's launch (its steps' tasks run with its environment and account) and the folder it runs in.
        var batch: LaunchRequest?
        var workingDir: String?
        /// The GPU (UUID) whose MPS daemon serves this shared rank.
        var mpsGPU: String?
        /// A restarted replica's launch, echoed in its reports.
        var launch: Int?
    }

    public let stateDir: URL
    public let isolation: Isolation
    var records: [RankKey: Record] = [:]
    /// Pids this agent spawned and can reap; adopted processes from before a restart are only watched.
    var children: Set<Int32> = []
    let node: String
    private var gpus: [GPUInfo] = []
    /// Where ranks' output goes: a folder per organisation that only it (and the agent) may enter.
    private let outputDir: URL
    /// `scontrol` and `srun` for batch scripts' ranks (nil if they could not be written).
    let toolsDir: URL?
    /// The steps' tasks this agent runs: by pid, which step of which rank each is and which task.
    var taskPids: [Int32: (rank: RankKey, step: Int, task: Int)] = [:]
    /// The steps run here, by rank and step number.
    var stepRuns: [RankKey: [Int: StepRun]] = [:]

    /// MPS for shared GPUs (soft sharing where the node has none), and the shared ranks each GPU's daemon serves.
    public let sharing: GPUSharingControl
    var mpsClients: [String: Set<RankKey>] = [:]

    public init(stateDir: URL, node: String, isolation: Isolation = .none, outputDir: URL? = nil, sharing: GPUSharingControl? = nil) throws {
        self.stateDir = stateDir
        self.node = node
        self.isolation = isolation
        self.sharing = sharing ?? GPUSharingControl(control: nil, root: stateDir.appendingPathComponent("mps"))
        self.outputDir = outputDir ?? stateDir.appendingPathComponent("output")
        // The state folder holds the agent's records (and, by default, the ranks' output): the agent's alone.
        try FileManager.default.createDirectory(at: stateDir.appendingPathComponent("ranks"), withIntermediateDirectories: true)
        try? FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: stateDir.path)
        try? FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: stateDir.appendingPathComponent("ranks").path)
        self.toolsDir = try? SlurmEnvironment.installTools(in: stateDir)
        // What a previous run of the agent left: processes still alive are adopted, the others have vanished.
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: stateDir.appendingPathComponent("ranks").path)) ?? []
        for folder in folders {
            let meta = stateDir.appendingPathComponent("ranks/\(folder)/meta.json")
            guard let data = try? Data(contentsOf: meta), var record = try? JSONDecoder().decode(Record.self, from: data) else { continue }
            if record.state == .running && !Self.isAlive(pid: record.pid, startTicks: record.startTicks) {
                record.state = .vanished
                record.acknowledged = false
                if record.contained == true, case .container(let runtime) = isolation { record.awaitsDelete = !runtime.delete(record.key) }
                try? JSONEncoder().encode(record).write(to: meta, options: .atomic)
            }
            self.records[record.key] = record
            if record.state == .running, let gpu = record.mpsGPU { self.mpsClients[gpu, default: []].insert(record.key) }
        }
    }

    /// The node's GPUs as last discovered: their device nodes are what containers are given.
    public func setGPUs(_ gpus: [GPUInfo]) { self.gpus = gpus }

    public func folder(for key: RankKey) -> URL { self.stateDir.appendingPathComponent("ranks/\(key.jobID).\(key.attempt).\(key.rank)") }

    public func logPath(for key: RankKey) -> String {
        self.records[key]?.logPath ?? self.folder(for: key).appendingPathComponent("output.log").path
    }

    /// Starts a rank, or returns what is known of it when it was started before (a retried dispatch).
    public func launch(_ request: LaunchRequest, agentEnvironment: [String: String] = ProcessInfo.processInfo.environment) throws -> RankStatus {
        if let existing = self.records[request.key] {
            guard Self.isForeign(existing, to: request) else { return self.status(existing) }
            // Another database's rank under the same numbers (a restored backup, a cluster made anew over this
            // node): never answered for this attempt. A running one is killed first; an ended one is set aside.
            if existing.state == .running {
                var marked = existing
                marked.foreign = true
                marked.acknowledged = true
                self.save(marked)
                self.signal(marked, SIGKILL)
                throw SupervisorError.foreignRankRunning(request.key)
            }
            try self.retire(existing)
        }
        // Ranks allotd has heard end are history: they do not make a launch stale (they may be another database's).
        let newest =
            self.records.values.filter { $0.key.jobID == request.key.jobID && ($0.state == .running || !$0.acknowledged) }.map(\.key.attempt).max()
            ?? 0
        if newest > request.key.attempt { throw SupervisorError.staleAttempt(requested: request.key.attempt, newest: newest) }

        let folder = self.folder(for: request.key)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var request = request
        request.gpuIndices = try self.currentIndices(of: request)
        let mps = try self.joinMPS(&request)
        if let slurm = request.slurm, slurm.options.batchStep {
            if request.key.rank > 0 {
                // Slurm's batch step runs on the first node; the others host its steps until the script ends.
                request.command = SlurmSteps.holder
                request.slurm?.options.output = nil
                request.slurm?.options.error = nil
            } else {
                let channel = try self.stepChannel(for: request.key, create: true)
                request.env["ALLOT_STEP_DIR"] = self.isContained ? SlurmSteps.channelInContainer : channel.path
            }
        }
        let record: Record
        switch self.isolation {
        case .none: record = try self.launchProcess(request, folder: folder, agentEnvironment: agentEnvironment)
        case .container(let runtime): record = try self.launchContainer(request, folder: folder, runtime: runtime)
        }
        var launched = record
        launched.mpsGPU = mps
        launched.launch = request.launch
        launched.launchID = request.launchID
        if request.slurm?.options.batchStep == true { launched.batch = request }
        // `B:` is for the batch script's shell alone: a rank that only hosts steps gets none.
        if let signal = request.signal, !(signal.batchOnly && request.slurm?.options.batchStep == true && request.key.rank > 0) {
            launched.warning = signal
            launched.warnAt = request.timeLimitSeconds.map {
                launched.launchedAt.addingTimeInterval(Double(max(0, $0 - Int64(signal.secondsBefore))))
            }
        }
        self.children.insert(launched.pid)
        self.save(launched)
        return self.status(launched)
    }

    /// Where nvidia-smi lists the launch's GPUs now, found by UUID (allotd's slots stay put when the numbering
    /// shifts); the slots themselves when the launch names no UUIDs or the node knows none. A MIG device is found
    /// among its GPU's devices: its index is its GPU's.
    func currentIndices(of request: LaunchRequest) throws -> [Int] {
        guard let uuids = request.gpuUUIDs, uuids.count == request.gpuIndices.count, !self.gpus.isEmpty else { return request.gpuIndices }
        return try uuids.map { uuid in
            guard let gpu = self.gpus.first(where: { $0.uuid == uuid || ($0.migDevices ?? []).contains { $0.uuid == uuid } }) else {
                throw SupervisorError.gpuMissing(uuid)
            }
            return gpu.index
        }
    }

    /// A shared rank joins its GPU's MPS daemon (started for its first client) and is told its share; returns the
    /// GPU's UUID. Nothing where the node shares softly or the rank holds whole GPUs.
    private func joinMPS(_ request: inout LaunchRequest) throws -> String? {
        guard let share = request.shareMilli, share < 1000, self.sharing.control != nil, request.gpuIndices.count == 1,
            let gpu = self.gpus.first(where: { $0.index == request.gpuIndices[0] })
        else { return nil }
        if self.mpsClients[gpu.uuid, default: []].isEmpty { try self.sharing.start(gpu: gpu.uuid) }
        self.mpsClients[gpu.uuid, default: []].insert(request.key)
        let pipe = self.isContained ? Self.mpsPipeInContainer : self.sharing.pipeDirectory(gpu: gpu.uuid).path
        request.env.merge(GPUSharingControl.clientEnvironment(shareMilli: share, gpuMemoryMiB: gpu.memoryMiB, pipe: pipe)) { _, ours in ours }
        return gpu.uuid
    }

    /// Where a contained rank finds its GPU's MPS pipes.
    static let mpsPipeInContainer = "/run/allot-mps"

    /// A shared rank has ended: its GPU's daemon quits after its last client.
    func leaveMPS(_ record: Record) {
        guard let gpu = record.mpsGPU, self.mpsClients[gpu]?.remove(record.key) != nil else { return }
        if self.mpsClients[gpu]?.isEmpty == true {
            self.mpsClients[gpu] = nil
            self.sharing.stop(gpu: gpu)
        }
    }

    /// Whether the rank held under a launch's key is another attempt's: its id differs, or — for a rank from
    /// before ids — allotd already heard it end, so no launch of that attempt can come again.
    static func isForeign(_ record: Record, to request: LaunchRequest) -> Bool {
        guard let asked = request.launchID else { return false }
        if let held = record.launchID { return held != asked }
        return record.state != .running && record.acknowledged
    }

    /// Moves an ended rank's folder aside (kept for the operator, under `ranks/retired/`) and forgets it.
    private func retire(_ record: Record) throws {
        let fm = FileManager.default
        let retired = self.stateDir.appendingPathComponent("ranks/retired")
        try fm.createDirectory(at: retired, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let folder = self.folder(for: record.key)
        try fm.moveItem(at: folder, to: retired.appendingPathComponent("\(folder.lastPathComponent).\(Int(Date().timeIntervalSince1970))"))
        self.records[record.key] = nil
    }

    /// A command starting with `#!` is written to a file and run by its own interpreter (at most one argument, as
    /// the kernel does), never executed: a file just written may still be open for writing in a child another
    /// thread is spawning, and executing it then fails with ETXTBSY. Returns the command to run and the file.
    private func scriptCommand(_ command: String, folder: URL, visibleAt path: String?) throws -> (String, String?) {
        guard command.hasPrefix("#!") else { return (command, nil) }
        let script = folder.appendingPathComponent("script")
        try Data(command.utf8).write(to: script)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: script.path)
        let line = command.dropFirst(2).prefix { $0 != "\n" }.trimmingCharacters(in: .whitespaces)
        let interpreter = line.prefix { $0 != " " && $0 != "\t" }
        let argument = line.dropFirst(interpreter.count).trimmingCharacters(in: .whitespaces)
        let words = [interpreter.isEmpty ? "/bin/sh" : String(interpreter)] + (argument.isEmpty ? [] : [argument]) + [path ?? script.path]
        return ("exec " + words.map(JobShell.quote).joined(separator: " "), script.path)
    }

    private func launchProcess(_ request: LaunchRequest, folder: URL, agentEnvironment: [String: String]) throws -> Record {
        var env = agentEnvironment.filter { !$0.key.hasPrefix("ALLOT_") }
        env.merge(Self.environment(for: request, node: self.node, account: nil)) { _, ours in ours }
        if request.slurm != nil, let tools = self.toolsDir { env["PATH"] = tools.path + ":" + (env["PATH"] ?? "/usr/bin:/bin") }
        let (command, _) = try self.scriptCommand(request.command, folder: folder, visibleAt: nil)
        let log = folder.appendingPathComponent("output.log").path
        // A batch script runs in its submit directory where the node has it, as under Slurm; else in its folder.
        var request = request
        var preamble = SlurmEnvironment.enterSubmitDirectory(&request, fallback: folder.path) { submit in
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: submit, isDirectory: &isDir) && isDir.boolValue
                ? nil : "the submit directory \(submit) is not on node \(self.node)"
        }
        let dir = request.workingDir ?? folder.path
        if let slurm = request.slurm { preamble += SlurmEnvironment.redirection(for: request, slurm: slurm) }
        // The working directory is entered by the shell, so a missing one is reported in the rank's log.
        let script = "cd \(JobShell.quote(dir)) || exit 126\n\(preamble)\(command)"
        let pid = try Self.spawn(["/bin/sh", "-c", script], environment: env, logPath: log)
        var record = Record(
            key: request.key, pid: pid, startTicks: Self.startTicks(pid: pid), launchedAt: Date(), state: .running,
            gracePeriodSeconds: request.gracePeriodSeconds, acknowledged: false, contained: false, logPath: log)
        record.workingDir = dir
        return record
    }

    private func launchContainer(_ asked: LaunchRequest, folder: URL, runtime: ContainerRuntime) throws -> Record {
        var request = asked
        // Where the node shares it with jobs: else its own /work.
        var preamble = SlurmEnvironment.enterSubmitDirectory(&request, fallback: "/work") { submit in
            runtime.workingDirectoryProblem(submit, node: self.node)?.replacingOccurrences(of: "the working directory", with: "the submit directory")
        }
        var outputFolders: [String] = []
        if let slurm = request.slurm {
            for dir in SlurmEnvironment.outputFolders(for: request, slurm: slurm) {
                let within = request.workingDir.map { dir == $0 || dir.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") } ?? false
                if within { continue }
                if let why = runtime.workingDirectoryProblem(dir, node: self.node) {
                    throw SupervisorError.refused(
                        "the output folder of --output/--error: \(why.replacingOccurrences(of: "the working directory ", with: ""))")
                }
                outputFolders.append(dir)
            }
            preamble += SlurmEnvironment.redirection(for: request, slurm: slurm)
        }
        let account: Account
        do {
            account = try Account.resolve(request.tenant.account)
        } catch {
            throw SupervisorError.refused(error.description)
        }
        if let dir = request.workingDir, let why = runtime.workingDirectoryProblem(dir, node: self.node) { throw SupervisorError.refused(why) }
        let unknown = request.gpuIndices.filter { i in self.gpus.first { $0.index == i }?.minorNumber == nil }
        if !self.gpus.isEmpty, !unknown.isEmpty {
            throw SupervisorError.refused(
                "node \(self.node) does not know the device of GPU \(unknown.map(String.init).joined(separator: ", ")) (nvidia-smi gave no minor number)"
            )
        }
        let fm = FileManager.default
        // The rank's own writable /work, its account's alone.
        let scratch = self.stateDir.appendingPathComponent("work/\(request.key.jobID).\(request.key.attempt).\(request.key.rank)")
        try fm.createDirectory(at: scratch, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try Self.own(scratch.path, uid: account.uid, gid: account.gid, mode: 0o700)
        // Output: written by the rank's account, readable by its group, in its organisation's folder.
        let orgDir = self.outputDir.appendingPathComponent(request.tenant.org)
        try fm.createDirectory(at: self.outputDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        try Self.own(self.outputDir.path, uid: 0, gid: 0, mode: 0o711)
        try fm.createDirectory(at: orgDir, withIntermediateDirectories: true)
        // Owner and mode set again at every launch: a folder someone changed since is put right, not trusted.
        try Self.own(orgDir.path, uid: 0, gid: account.gid, mode: 0o750)
        let log = orgDir.appendingPathComponent("\(request.key.jobID).\(request.key.attempt).\(request.key.rank).log").path
        try? fm.removeItem(atPath: log)  // never follow what someone left at that name
        let fd = open(log, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw SupervisorError.spawnFailed("cannot create \(log): \(String(cString: strerror(errno)))") }
        close(fd)
        try Self.own(log, uid: account.uid, gid: account.gid, mode: 0o640)

        let bundle = folder.appendingPathComponent("bundle")
        try fm.createDirectory(at: bundle.appendingPathComponent("rootfs"), withIntermediateDirectories: true)
        var rootfs = bundle.appendingPathComponent("rootfs").path
        var cdi = CDIEdits.none
        let mine = self.gpus.filter { request.gpuIndices.contains($0.index) }
        if let image = request.tenant.image {
            guard let dir = runtime.imageDir else { throw SupervisorError.refused("node \(self.node) has no image folder (allot-agent --image-dir)") }
            rootfs = try ImageCache(imageDir: dir, cacheDir: self.stateDir.appendingPathComponent("images").path).rootfs(for: image)
            cdi = try CDIEdits.load(runtime.cdiSpec, gpus: mine)
        }
        let (command, script) = try self.scriptCommand(request.command, folder: folder, visibleAt: "/.allot-script")
        var slurmMounts: [OCISpec.Mount] = []
        if let slurm = request.slurm {
            var channel: String?
            if slurm.options.batchStep, request.key.rank == 0 {
                channel = try self.stepChannel(for: request.key, create: false).path
                try Self.own(channel!, uid: account.uid, gid: account.gid, mode: 0o700)
            }
            slurmMounts = try SlurmEnvironment.mounts(
                for: slurm, folder: folder, tools: self.toolsDir, outputFolders: outputFolders, stepChannel: channel)
        }
        // A shared rank reaches its GPU's MPS daemon through the daemon's pipe folder.
        if let uuid = self.gpus.first(where: { request.gpuIndices == [$0.index] })?.uuid, self.mpsClients[uuid]?.contains(request.key) == true {
            slurmMounts.append(
                .init(
                    destination: Self.mpsPipeInContainer, type: "bind", source: self.sharing.pipeDirectory(gpu: uuid).path,
                    options: ["rbind", "rw", "nosuid", "nodev", "noexec"]))
        }
        let spec = runtime.spec(
            for: request, account: account, rootfs: rootfs, rootIsImage: request.tenant.image != nil, scratch: scratch.path, script: script,
            command: preamble + command,
            gpus: self.gpus.isEmpty ? request.gpuIndices.map { GPUInfo(index: $0, uuid: "", model: "", memoryMiB: 0) } : self.gpus,
            cdi: cdi, node: self.node, extraMounts: slurmMounts)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try encoder.encode(spec).write(to: bundle.appendingPathComponent("config.json"))
        runtime.delete(request.key)  // a container of this name left by a crash would refuse the new one
        let pid = try Self.spawn(
            [
                runtime.runc, "run", "--keep", "--pid-file", folder.appendingPathComponent("init.pid").path, "--bundle", bundle.path,
                ContainerRuntime.containerID(request.key),
            ], environment: ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], logPath: log)
        var record = Record(
            key: request.key, pid: pid, startTicks: Self.startTicks(pid: pid), launchedAt: Date(), state: .running,
            gracePeriodSeconds: request.gracePeriodSeconds, acknowledged: false, contained: true, logPath: log,
            memoryMiB: request.tenant.memoryMiB > 0 ? request.tenant.memoryMiB : runtime.offeredMemoryMiB)
        record.workingDir = request.workingDir ?? "/work"
        return record
    }

    /// The environment of a rank: the job's, then what Allot sets. In a container that is all it has (no variable
    /// of the agent's reaches it); without one, the agent's own environment less its `ALLOT_` settings comes first.
    static func environment(for request: LaunchRequest, node: String, account: Account?) -> [String: String] {
        var env: [String: String] = [:]
        if let account {
            env = [
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/work", "USER": account.name,
                "LOGNAME": account.name, "TMPDIR": "/tmp", "LANG": "C.UTF-8",
            ]
        }
        env.merge(request.env) { _, job in job }
        // A container's device cgroup opens only the rank's GPUs, and CUDA (like nvidia-smi) numbers what it can
        // open from 0, in PCI order — as Slurm does under ConstrainDevices. A plain process sees the node's numbering.
        // MIG devices are named by UUID, as CUDA takes them.
        let visible = account == nil ? request.gpuIndices : Array(request.gpuIndices.indices)
        let mig = (request.gpuUUIDs ?? []).filter { $0.hasPrefix("MIG-") }
        var gpus = mig.isEmpty ? visible.map(String.init).joined(separator: ",") : mig.joined(separator: ",")
        // An MPS client names its GPU by UUID: the daemon was started seeing that GPU alone, and an index would be
        // read against its numbering, not the node's (NVIDIA's MPS guide recommends UUIDs).
        if request.shareMilli != nil, request.env["CUDA_MPS_PIPE_DIRECTORY"] != nil, let uuid = request.gpuUUIDs?.first,
            request.gpuUUIDs?.count == 1
        {
            gpus = uuid
        }
        let g = request.gang
        let set: [String: String] = [
            "CUDA_VISIBLE_DEVICES": gpus,
            "NVIDIA_VISIBLE_DEVICES": gpus.isEmpty ? "void" : gpus,
            // nvidia-smi numbers GPUs in PCI bus order; CUDA's default order differs, so pin it.
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "ALLOT_JOB_ID": "\(request.key.jobID)",
            "ALLOT_ATTEMPT": "\(request.key.attempt)",
            "ALLOT_NODE_RANK": "\(request.key.rank)",
            // Which start of an inference replica this is: 0, then 1, 2, … as it is restarted (Kubernetes' restartCount).
            "ALLOT_LAUNCH": "\(request.launch ?? 0)",
            "ALLOT_NODE": node,
            "ALLOT_USER": request.tenant.owner,
            "ALLOT_ORG": request.tenant.org,
            "MASTER_ADDR": g.masterAddr, "MASTER_PORT": "\(g.masterPort)",
            "NNODES": "\(g.nnodes)", "NODE_RANK": "\(g.nodeRank)", "NPROC_PER_NODE": "\(g.nprocPerNode)",
            // torchrun reads its flags from PET_* variables, so a bare `torchrun train.py` joins the gang.
            "PET_MASTER_ADDR": g.masterAddr, "PET_MASTER_PORT": "\(g.masterPort)",
            "PET_NNODES": "\(g.nnodes)", "PET_NODE_RANK": "\(g.nodeRank)", "PET_NPROC_PER_NODE": "\(g.nprocPerNode)",
        ]
        env.merge(set) { _, ours in ours }
        if let slurm = request.slurm {
            env.merge(SlurmEnvironment.variables(for: request, slurm: slurm)) { _, ours in ours }
            if account != nil { env["PATH"] = SlurmEnvironment.binInContainer + ":" + (env["PATH"] ?? "/usr/bin:/bin") }
        }
        return env
    }

    /// SIGTERM to the rank now, SIGKILL once the grace period has passed (see `poll`). A drain's or reclaim's
    /// stop (`warnFirst`) of a rank with a warning signal sends that signal now and SIGTERM its lead later.
    public func stop(_ key: RankKey, gracePeriodSeconds: Int, warnFirst: Bool = false) throws -> RankStatus {
        guard var record = self.records[key] else { throw SupervisorError.unknownRank(key) }
        if warnFirst, let warning = record.warning, warning.secondsBefore > 0, record.state == .running, record.stopRequestedAt == nil {
            if record.terminateAt == nil {
                if record.warned != true { self.warn(record) }
                record.warned = true
                // Within the stop's grace (a reclaim's deadline bounds it): SIGTERM at most half of it later, and
                // SIGKILL when the grace counted from the warning is over.
                let lead = min(Double(warning.secondsBefore), Double(gracePeriodSeconds) / 2)
                record.terminateAt = Date().addingTimeInterval(lead)
                record.warnedAt = Date()
                record.gracePeriodSeconds = gracePeriodSeconds
                self.save(record)
            }
            return self.status(record)
        }
        if record.state == .running && record.stopRequestedAt == nil {
            record.stopRequestedAt = Date()
            record.gracePeriodSeconds = gracePeriodSeconds
            self.signal(record, SIGTERM)
            self.save(record)
        }
        return self.status(record)
    }

    /// A contained rank's stop reaches runc, which hands it to the container's init; its kill reaches the init
    /// itself, which takes every process of the container with it. A plain rank's, its process group.
    private func signal(_ record: Record, _ signal: Int32) {
        guard record.contained == true else {
            kill(-record.pid, signal)
            return
        }
        if signal == SIGKILL,
            let text = try? String(contentsOf: self.folder(for: record.key).appendingPathComponent("init.pid"), encoding: .utf8),
            let initPid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), initPid > 0, ContainerRuntime.belongs(initPid, to: record.key)
        {
            kill(initPid, SIGKILL)
        }
        // runc's own pid is checked against its start time: a reused number is left alone.
        if Self.isAlive(pid: record.pid, startTicks: record.startTicks) { kill(record.pid, signal) }
    }

    /// Reaps exited children, checks adopted processes, and SIGKILLs ranks whose grace period is over.
    public func poll() {
        for pid in self.children {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            guard r == pid || (r == -1 && errno == ECHILD) else { continue }
            self.children.remove(pid)
            if let task = self.taskPids.removeValue(forKey: pid) {
                self.taskEnded(task, status: r == pid ? status : nil)
                continue
            }
            guard var record = self.records.values.first(where: { $0.pid == pid && $0.state == .running }) else { continue }
            if record.contained != true { kill(-pid, SIGKILL) }  // anything the command left behind in its group goes with it
            if r == pid {
                let signal = Int(status & 0x7f)
                if signal == 0 {
                    record.exitCode = Int((status >> 8) & 0xff)
                    // runc exits 128 + N when the rank's init died of signal N (as shells report it).
                    if record.contained == true, let code = record.exitCode, code > 128, code < 160 { record.signal = code - 128 }
                } else {
                    record.signal = signal
                    record.exitCode = 128 + signal
                }
                record.state = .exited
            } else {
                record.state = .vanished
            }
            self.stepRuns[record.key] = nil  // its steps' tasks ended with its container
            self.leaveMPS(record)
            if record.contained == true, case .container(let runtime) = self.isolation {
                if record.exitCode != 0 { record.detail = runtime.limitsHit(record.key, memoryMiB: record.memoryMiB ?? 0) }
                record.awaitsDelete = !runtime.delete(record.key)
            }
            self.save(record)
        }
        if case .container(let runtime) = self.isolation {
            for var record in self.records.values where record.awaitsDelete == true {
                record.awaitsDelete = !runtime.delete(record.key)
                if record.awaitsDelete == false { self.save(record) }
            }
        }
        let now = Date()
        for var record in self.records.values where record.state == .running {
            if !self.children.contains(record.pid) && !Self.isAlive(pid: record.pid, startTicks: record.startTicks) {
                record.state = .vanished
                if record.contained == true, case .container(let runtime) = self.isolation { record.awaitsDelete = !runtime.delete(record.key) }
                self.leaveMPS(record)
                self.save(record)
                continue
            }
            if let asked = record.stopRequestedAt, now.timeIntervalSince(asked) >= Double(record.gracePeriodSeconds) {
                self.signal(record, SIGKILL)
            }
            if record.stopRequestedAt == nil, let due = record.terminateAt, due <= now {
                record.stopRequestedAt = record.warnedAt ?? now
                self.signal(record, SIGTERM)
                self.save(record)
            } else if record.stopRequestedAt == nil, record.warned != true, let due = record.warnAt, due <= now {
                self.warn(record)
                record.warned = true
                self.save(record)
            }
        }
    }

    /// Sends the job's warning signal: with `B:` to the batch script's shell only (through the container's init,
    /// which forwards it); without, to a batch job's step tasks on this node, or to every process of any other
    /// job's rank but its init.
    private func warn(_ record: Record) {
        guard let warning = record.warning else { return }
        let number = warning.number
        // A batch job without `B:`: Slurm signals its steps, not the script's shell (which would die of it).
        if record.batch != nil && !warning.batchOnly {
            for (pid, task) in self.taskPids where task.rank == record.key { kill(pid, number) }
            return
        }
        guard record.contained == true, case .container(let runtime) = self.isolation else {
            if warning.batchOnly { kill(record.pid, number) } else { kill(-record.pid, number) }
            return
        }
        let initPid = (try? String(contentsOf: self.folder(for: record.key).appendingPathComponent("init.pid"), encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        if !warning.batchOnly, let initPid, let pids = runtime.processes(record.key), !pids.isEmpty {
            for pid in pids where pid != initPid { kill(pid, number) }
            return
        }
        // runc hands what it gets to the container's init, which passes it to the script.
        if Self.isAlive(pid: record.pid, startTicks: record.startTicks) { kill(record.pid, number) }
    }

    /// What the heartbeat reports: every running rank, and every ended one the scheduler has not acknowledged.
    public func statuses() -> [RankStatus] {
        self.records.values.filter { $0.foreign != true && ($0.state == .running || !$0.acknowledged) }.sorted { "\($0.key)" < "\($1.key)" }.map(
            self.status)
    }

    public func all() -> [RankStatus] { self.records.values.sorted { "\($0.key)" < "\($1.key)" }.map(self.status) }

    public func acknowledge(_ keys: [RankKey]) {
        for key in keys {
            guard var record = self.records[key], record.state != .running, !record.acknowledged else { continue }
            record.acknowledged = true
            self.save(record)
        }
    }

    /// Stops every running rank that the scheduler no longer holds live, if it was started before the
    /// heartbeat that carried the answer was sent (a rank launched since may not be in the answer yet).
    public func reconcile(live: Set<RankKey>, heartbeatSentAt: Date) -> [RankKey] {
        var stopped: [RankKey] = []
        for record in self.records.values
        where record.state == .running && record.stopRequestedAt == nil && !live.contains(record.key) && record.launchedAt < heartbeatSentAt {
            _ = try? self.stop(record.key, gracePeriodSeconds: min(record.gracePeriodSeconds, 10))
            stopped.append(record.key)
        }
        return stopped
    }

    private func status(_ r: Record) -> RankStatus {
        var status = RankStatus(key: r.key, state: r.state, exitCode: r.exitCode, signal: r.signal, pid: r.pid, detail: r.detail)
        status.launch = r.launch
        return status
    }

    /// Counts the changes to what the heartbeat reports (a rank launched, ended, stopped), so that a change is
    /// reported at once rather than at the next beat.
    public private(set) var changes = 0

    private func save(_ record: Record) {
        self.changes += 1
        self.records[record.key] = record
        let url = self.folder(for: record.key).appendingPathComponent("meta.json")
        try? JSONEncoder().encode(record).write(to: url, options: .atomic)
    }

    // MARK: - Processes

    /// Starts `argv` in its own process group with no signal blocked or ignored, standard input from /dev/null and
    /// its output appended to `logPath`.
    static func spawn(_ argv: [String], environment: [String: String], logPath: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o640)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of the agent's is inherited: not its listening socket (a rank, or runc, would hold the port
        // past the agent's restart), not its connections to allotd.
        allot_spawn_close_from(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)

        let envp = environment.map { "\($0.key)=\($0.value)" }
        var pid: Int32 = 0
        let rc = Self.withCStrings(argv) { cArgv in
            Self.withCStrings(envp) { cEnv in posix_spawn(&pid, argv[0], &actions, &attributes, cArgv, cEnv) }
        }
        guard rc == 0 else { throw SupervisorError.spawnFailed(String(cString: strerror(rc))) }
        return pid
    }

    /// Gives a file or folder to an account, with `mode`.
    static func own(_ path: String, uid: UInt32, gid: UInt32, mode: mode_t) throws {
        guard chown(path, uid, gid) == 0, chmod(path, mode) == 0 else {
            throw SupervisorError.spawnFailed("cannot give \(path) to \(uid):\(gid): \(String(cString: strerror(errno)))")
        }
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers = strings.map { strdup($0) }
        pointers.append(nil)
        defer { pointers.forEach { free($0) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// The start time of a process in clock ticks since boot, field 22 of /proc/PID/stat.
    static func startTicks(pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command name, field 3 (state) is fields[0], so field 22 is fields[19].
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Whether the process still runs: it exists, is the same process (same start time), and is not a zombie
    /// (an exited process its parent has not reaped yet, such as one adopted from before a restart).
    static func isAlive(pid: Int32, startTicks: UInt64?) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.first == "Z" || fields.first == "X" { return false }
            if let startTicks, fields.count > 19, let now = UInt64(fields[19]) { return now == startTicks }
        }
        return true
    }
}

/// Shell quoting for the one place the agent writes shell text itself.
enum JobShell {
    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}
