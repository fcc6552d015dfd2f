public import AllotCore
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
    case spawnFailed(String)
    case unknownRank(RankKey)

    public var description: String {
        switch self {
        case .staleAttempt(let requested, let newest):
            "attempt \(requested) is older than attempt \(newest) of the same job, already run here: refused"
        case .spawnFailed(let why): "cannot start the command: \(why)"
        case .unknownRank(let key): "no rank \(key) on this node"
        }
    }
}

/// Starts, watches and stops job processes, keeping each rank's record and output under the state folder,
/// so that a restarted agent still knows what it ran.
///
/// Each rank runs `/bin/sh -c COMMAND` as the leader of its own process group: a stop signals the whole
/// group (SIGTERM, then SIGKILL after the grace period), and when the leader exits any stragglers are killed.
public actor Supervisor {
    /// What is kept on disk for one rank (`ranks/JOB.ATTEMPT.RANK/meta.json`).
    struct Record: Codable, Sendable {
        var key: RankKey
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
    }

    public let stateDir: URL
    private var records: [RankKey: Record] = [:]
    /// Pids this agent spawned and can reap; adopted processes from before a restart are only watched.
    private var children: Set<Int32> = []
    private let node: String

    public init(stateDir: URL, node: String) throws {
        self.stateDir = stateDir
        self.node = node
        try FileManager.default.createDirectory(at: stateDir.appendingPathComponent("ranks"), withIntermediateDirectories: true)
        // What a previous run of the agent left: processes still alive are adopted, the others have vanished.
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: stateDir.appendingPathComponent("ranks").path)) ?? []
        for folder in folders {
            let meta = stateDir.appendingPathComponent("ranks/\(folder)/meta.json")
            guard let data = try? Data(contentsOf: meta), var record = try? JSONDecoder().decode(Record.self, from: data) else { continue }
            if record.state == .running && !Self.isAlive(pid: record.pid, startTicks: record.startTicks) {
                record.state = .vanished
                record.acknowledged = false
                try? JSONEncoder().encode(record).write(to: meta, options: .atomic)
            }
            self.records[record.key] = record
        }
    }

    public func folder(for key: RankKey) -> URL { self.stateDir.appendingPathComponent("ranks/\(key.jobID).\(key.attempt).\(key.rank)") }
    public func logPath(for key: RankKey) -> String { self.folder(for: key).appendingPathComponent("output.log").path }

    /// Starts a rank, or returns what is known of it when it was started before (a retried dispatch).
    public func launch(_ request: LaunchRequest, agentEnvironment: [String: String] = ProcessInfo.processInfo.environment) throws -> RankStatus {
        if let existing = self.records[request.key] { return self.status(existing) }
        let newest = self.records.keys.filter { $0.jobID == request.key.jobID }.map(\.attempt).max() ?? 0
        if newest > request.key.attempt { throw SupervisorError.staleAttempt(requested: request.key.attempt, newest: newest) }

        let folder = self.folder(for: request.key)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let env = Self.environment(for: request, node: self.node, agent: agentEnvironment)
        var command = request.command
        if command.hasPrefix("#!") {
            // A script with its own interpreter (a batch script, say): its #! line is honoured as the kernel would
            // (interpreter, at most one argument, the script), but the interpreter is run on the file rather than
            // the file executed: a file this process just wrote can still be open for writing in a child another
            // thread is spawning, and executing it then fails with ETXTBSY (exit 126).
            let script = folder.appendingPathComponent("script")
            try Data(command.utf8).write(to: script)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script.path)
            let line = command.dropFirst(2).prefix { $0 != "\n" }.trimmingCharacters(in: .whitespaces)
            let interpreter = line.prefix { $0 != " " && $0 != "\t" }
            let argument = line.dropFirst(interpreter.count).trimmingCharacters(in: .whitespaces)
            let words = [interpreter.isEmpty ? "/bin/sh" : String(interpreter)] + (argument.isEmpty ? [] : [argument]) + [script.path]
            command = "exec " + words.map(JobShell.quote).joined(separator: " ")
        }
        let pid = try Self.spawn(
            command: command, environment: env, workingDir: request.workingDir ?? folder.path, logPath: self.logPath(for: request.key))
        self.children.insert(pid)
        let record = Record(
            key: request.key, pid: pid, startTicks: Self.startTicks(pid: pid), launchedAt: Date(), state: .running,
            gracePeriodSeconds: request.gracePeriodSeconds, acknowledged: false)
        self.save(record)
        return self.status(record)
    }

    /// The environment of a rank: the agent's own (less its ALLOT_ settings), the job's, then what Allot sets.
    static func environment(for request: LaunchRequest, node: String, agent: [String: String]) -> [String: String] {
        var env = agent.filter { !$0.key.hasPrefix("ALLOT_") }
        env.merge(request.env) { _, job in job }
        let gpus = request.gpuIndices.map(String.init).joined(separator: ",")
        let g = request.gang
        let set: [String: String] = [
            "CUDA_VISIBLE_DEVICES": gpus,
            "NVIDIA_VISIBLE_DEVICES": gpus.isEmpty ? "void" : gpus,
            // nvidia-smi numbers GPUs in PCI bus order; CUDA's default order differs, so pin it.
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "ALLOT_JOB_ID": "\(request.key.jobID)",
            "ALLOT_ATTEMPT": "\(request.key.attempt)",
            "ALLOT_NODE_RANK": "\(request.key.rank)",
            "ALLOT_NODE": node,
            "MASTER_ADDR": g.masterAddr, "MASTER_PORT": "\(g.masterPort)",
            "NNODES": "\(g.nnodes)", "NODE_RANK": "\(g.nodeRank)", "NPROC_PER_NODE": "\(g.nprocPerNode)",
            // torchrun reads its flags from PET_* variables, so a bare `torchrun train.py` joins the gang.
            "PET_MASTER_ADDR": g.masterAddr, "PET_MASTER_PORT": "\(g.masterPort)",
            "PET_NNODES": "\(g.nnodes)", "PET_NODE_RANK": "\(g.nodeRank)", "PET_NPROC_PER_NODE": "\(g.nprocPerNode)",
        ]
        env.merge(set) { _, ours in ours }
        return env
    }

    /// SIGTERM to the rank's process group now, SIGKILL once the grace period has passed (see `poll`).
    public func stop(_ key: RankKey, gracePeriodSeconds: Int) throws -> RankStatus {
        guard var record = self.records[key] else { throw SupervisorError.unknownRank(key) }
        if record.state == .running && record.stopRequestedAt == nil {
            record.stopRequestedAt = Date()
            record.gracePeriodSeconds = gracePeriodSeconds
            kill(-record.pid, SIGTERM)
            self.save(record)
        }
        return self.status(record)
    }

    /// Reaps exited children, checks adopted processes, and SIGKILLs groups whose grace period is over.
    public func poll() {
        for pid in self.children {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            guard r == pid || (r == -1 && errno == ECHILD) else { continue }
            self.children.remove(pid)
            guard var record = self.records.values.first(where: { $0.pid == pid && $0.state == .running }) else { continue }
            // Anything the command left behind in its group goes with it.
            kill(-pid, SIGKILL)
            if r == pid {
                let signal = Int(status & 0x7f)
                if signal == 0 {
                    record.exitCode = Int((status >> 8) & 0xff)
                } else {
                    record.signal = signal
                    record.exitCode = 128 + signal
                }
                record.state = .exited
            } else {
                record.state = .vanished
            }
            self.save(record)
        }
        let now = Date()
        for var record in self.records.values where record.state == .running {
            if !self.children.contains(record.pid) && !Self.isAlive(pid: record.pid, startTicks: record.startTicks) {
                record.state = .vanished
                self.save(record)
                continue
            }
            if let asked = record.stopRequestedAt, now.timeIntervalSince(asked) >= Double(record.gracePeriodSeconds) {
                kill(-record.pid, SIGKILL)
            }
        }
    }

    /// What the heartbeat reports: every running rank, and every ended one the scheduler has not acknowledged.
    public func statuses() -> [RankStatus] {
        self.records.values.filter { $0.state == .running || !$0.acknowledged }.sorted { "\($0.key)" < "\($1.key)" }.map(self.status)
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
        RankStatus(key: r.key, state: r.state, exitCode: r.exitCode, signal: r.signal, pid: r.pid)
    }

    private func save(_ record: Record) {
        self.records[record.key] = record
        let url = self.folder(for: record.key).appendingPathComponent("meta.json")
        try? JSONEncoder().encode(record).write(to: url, options: .atomic)
    }

    // MARK: - Processes

    static func spawn(command: String, environment: [String: String], workingDir: String, logPath: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Own process group (so a stop reaches every process of the rank), no blocked or ignored signals inherited.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)

        // The working directory is entered by the shell, so a missing one is reported in the rank's log.
        let script = "cd \(JobShell.quote(workingDir)) || exit 126\n\(command)"
        let argv = ["/bin/sh", "-c", script]
        let envp = environment.map { "\($0.key)=\($0.value)" }
        var pid: Int32 = 0
        let rc = Self.withCStrings(argv) { cArgv in
            Self.withCStrings(envp) { cEnv in posix_spawn(&pid, "/bin/sh", &actions, &attributes, cArgv, cEnv) }
        }
        guard rc == 0 else { throw SupervisorError.spawnFailed(String(cString: strerror(rc))) }
        return pid
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
