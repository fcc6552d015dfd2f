import AllotCommandLine
import AllotCore
import AllotFormats
import AllotHTTPClient
import ArgumentParser
import Foundation

struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Submit a job spec (YAML or JSON) or a batch script with #SBATCH lines.")
    @Argument(help: "The job spec or batch script, or - for standard input.") var file: String
    @Flag(help: "Print the job spec that would be submitted, and exit.") var dryRun = false
    @OptionGroup var connection: Connection

    func run() async throws {
        let text: String
        if self.file == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let data = FileManager.default.contents(atPath: self.file) else { throw CLIError("cannot read \(self.file)") }
            text = String(decoding: data, as: UTF8.self)
        }
        var spec: JobSpec
        do {
            if SbatchParser.isBatchScript(text) {
                // As sbatch: relative paths are the submit directory's, and the shell's variables go with the job.
                let parsed = try SbatchParser.parse(
                    text, file: self.file, submitDir: FileManager.default.currentDirectoryPath, environment: ProcessInfo.processInfo.environment,
                    now: Date(), timeZone: .current)
                for warning in parsed.warnings { FileHandle.standardError.write(Data("allot: warning: \(self.file): \(warning)\n".utf8)) }
                spec = parsed.spec
            } else {
                spec = try JobSpecParser.parse(text, file: self.file)
            }
        } catch {
            throw CLIError(error.issues.map(\.description).joined(separator: "; "))
        }
        if self.dryRun {
            print(JobSpecParser.json(spec))
            return
        }
        let job: JobView = try await self.connection.client().post("/v1/jobs", json: spec)
        if self.connection.output == .json { return try printJSON(job) }
        if let array = spec.array {
            print("submitted job array \(job.id) (\(shownName(job.name))): tasks \(array), \(array.indices.count) jobs from \(job.id)")
        } else {
            print("submitted job \(job.id) (\(shownName(job.name))): \(job.state.rawValue)\(job.heldBy != nil ? ", held" : "")")
        }
    }
}

struct Jobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List jobs, or show one.", subcommands: [ListJobs.self, ShowJob.self], defaultSubcommand: ListJobs.self)
}

struct ListJobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List jobs, newest first.")
    @Option(help: "Only jobs in this state.") var state: JobState?
    @Option(help: "Only this organization's jobs.") var org: String?
    @Option(name: [.customShort("u"), .long], help: "Only jobs this token name submitted (squeue's --user).") var user: String?
    @Option(help: "Only jobs of this name.") var name: String?
    @Option(help: ArgumentHelp("At most this many, newest first (1 to 5000).", valueName: "n")) var limit: Int = 500
    @Option(help: ArgumentHelp("The next page: only jobs older than this job id (the last one listed).", valueName: "id")) var before: Int64?
    @OptionGroup var connection: Connection

    func validate() throws {
        guard (1...5000).contains(self.limit) else { throw ValidationError("--limit must be from 1 to 5000, not \(self.limit)") }
        if let before, before < 1 { throw ValidationError("--before must be a job id (1 or more), not \(before)") }
    }

    func run() async throws {
        var query = ["limit=\(self.limit)"]
        if let before { query.append("before=\(before)") }
        if let state { query.append("state=\(state.rawValue)") }
        for (key, value) in [("org", self.org), ("user", self.user), ("name", self.name)] {
            if let value { query.append("\(key)=\(value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? value)") }
        }
        let jobs: [JobView] = try await self.connection.client().get("/v1/jobs?" + query.joined(separator: "&"))
        switch self.connection.output {
        case .json: try printJSON(jobs)
        default:
            print(
                table(
                    ["ID", "NAME", "ORG", "POOL", "GPUS", "STATE", "SUBMITTED", "REASON"],
                    Self.grouped(jobs).map { j, id in
                        [
                            id, shownName(j.name), j.org, j.pool, gpuText(j), j.degraded == true ? "degraded" : j.state.rawValue, ago(j.submittedAt),
                            reasonText(j),
                        ]
                    }))
            if jobs.count == self.limit, let last = jobs.last {
                FileHandle.standardError.write(Data("allot: \(self.limit) shown; older ones: allot jobs --before \(last.id)\n".utf8))
            }
        }
    }

    /// As squeue shows arrays: each started task as `ARRAY_TASK`, the queued ones of an array in one row
    /// (`12_[5-99%8]`); other jobs by their id.
    static func grouped(_ jobs: [JobView]) -> [(JobView, String)] {
        var rows: [(JobView, String)] = []
        var queuedTasks: [Int64: [JobView]] = [:]
        for j in jobs {
            guard let array = j.arrayJobID, let task = j.arrayTaskID else {
                rows.append((j, String(j.id)))
                continue
            }
            if j.state == .queued {
                if queuedTasks[array] == nil { rows.append((j, "array:\(array)")) }
                queuedTasks[array, default: []].append(j)
            } else {
                rows.append((j, "\(array)_\(task)"))
            }
        }
        return rows.map { j, id in
            guard id.hasPrefix("array:"), let array = j.arrayJobID, let tasks = queuedTasks[array] else { return (j, id) }
            let indices = JobArray(indices: tasks.compactMap(\.arrayTaskID).sorted(), limit: j.arrayLimit)
            return (j, "\(array)_[\(indices)]")
        }
    }
}

struct ShowJob: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a job: state, why it waits, its attempts and their GPUs.")
    @Argument(help: "The job id.") var id: Int64
    @OptionGroup var connection: Connection

    func run() async throws {
        let job: JobView = try await self.connection.client().get("/v1/jobs/\(self.id)")
        if self.connection.output == .json { return try printJSON(job) }
        print(render(job))
    }
}

/// Why a job waits or how it ended, with Slurm's name for the reason (squeue's REASON) where there is one.
func reasonText(_ job: JobView) -> String {
    guard let reason = job.reason else { return "-" }
    if job.state == .queued, let code = job.reasonCode, let slurm = WaitReason.slurmName(code: code) { return "\(reason) (\(slurm))" }
    return reason
}

/// A job's name as tables show it: quoted where it has spaces or quotes (Slurm's names are free text).
func shownName(_ name: String) -> String {
    name.contains(where: { $0 == " " || $0 == "\t" || $0 == "\"" || $0 == "'" })
        ? "\"" + name.replacingOccurrences(of: "\"", with: "\\\"") + "\"" : name
}

/// The `allot jobs show` text.
func render(_ job: JobView) -> String {
    var lines = [
        "Job \(job.id): \(shownName(job.name))",
        "  state:     \(shownState(job))" + (job.exitCode.map { " (exit code \($0))" } ?? ""),
        "  reason:    \(reasonText(job))"
            + (job.state == .queued
                ? "\n  estimated start: \(job.estimatedStart.map { "\(ISO8601DateFormatter().string(from: $0)) (\(ago($0)))" } ?? "not in sight (running jobs without time limits, or it never fits)")"
                : ""),
        "  org:       \(job.org)\(job.project.map { " / \($0)" } ?? "")   owner: \(job.owner)",
        "  pool:      \(job.pool)   shape: \(job.nodes) \(job.kind == .inference ? "replica(s), one node each" : "node(s)") × \(job.gpuMilli.map { "\(Double($0) / 1000) GPU" } ?? job.migProfile.map { "\(job.gpusPerNode) MIG \($0)" } ?? "\(job.gpusPerNode) GPUs")\(job.gpuMemoryMiB.map { " of ≥ \(Double($0) / 1024) GiB" } ?? "")",
        "  priority:  \(job.priorityClass) (\(job.priority))   time limit: \(job.timeLimitSeconds.map { human(seconds: Int($0)) } ?? "none")"
            + (job.timeMinSeconds.map { "   time min: \(human(seconds: Int($0)))" } ?? "") + (job.signal.map { "   signal: \($0)" } ?? "")
            + (job.movable == true ? "   movable" : ""),
        "  submitted: \(ISO8601DateFormatter().string(from: job.submittedAt)) (\(ago(job.submittedAt)))",
        "  command:   \(job.command.split(separator: "\n").first.map(String.init) ?? "")\(job.command.contains("\n") ? " …" : "")",
        "  attempts:  \(job.attempts.count)\(attemptsNote(job))",
    ]
    if let array = job.arrayJobID, let task = job.arrayTaskID {
        lines.insert("  array:     task \(task) of array \(array)\(job.arrayLimit.map { " (at most \($0) at once)" } ?? "")", at: 2)
    }
    if let d = job.dependency { lines.insert("  depends:   \(d)", at: 2) }
    if let h = job.heldBy { lines.insert("  held by:   \(h) (allot release \(job.id))", at: 2) }
    if let b = job.beginAt, job.state == .queued { lines.insert("  begins:    not before \(iso(b)) (\(ago(b)))", at: 2) }
    for a in job.attempts {
        var head = "    #\(a.number) \(a.state.rawValue)"
        if let e = a.exitCode { head += " exit \(e)" }
        if let r = a.reason { head += " — \(r)" }
        lines.append(head)
        for r in a.nodes {
            let gpus =
                r.gpus.isEmpty
                ? "no GPUs" : "GPUs " + r.gpus.map(String.init).joined(separator: ",") + (r.gpuMilli < 1000 ? " (\(r.gpuMilli) milli)" : "")
            // An inference service's ranks are its replicas, each with its restarts.
            let what = job.kind == .inference ? "replica" : "rank"
            var line = "       \(what) \(r.rank) on \(r.node): \(gpus), \(r.state)\(r.exitCode.map { " (exit code \($0))" } ?? "")"
            if let n = r.restarts { line += ", restarted \(n) time\(n == 1 ? "" : "s")" }
            if let at = r.restartAt { line += ", starts again \(ago(at))" }
            lines.append(line)
        }
        for s in a.steps ?? [] {
            let how = s.state == .running ? "running" : "exited \(s.exitCode.map(String.init) ?? "?")"
            let took = human(seconds: Int((s.endedAt ?? Date()).timeIntervalSince(s.startedAt)))
            lines.append("       step \(job.id).\(s.step): \(s.command) — \(s.nodes) node(s), \(s.tasks) task(s), \(how), \(took)")
        }
    }
    return lines.joined(separator: "\n")
}

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a job: a queued one at once, a running one with its grace period.")
    @Argument(help: "The job id.") var id: Int64
    @OptionGroup var connection: Connection

    func run() async throws {
        let job: JobView = try await self.connection.client().post("/v1/jobs/\(self.id)/cancel", json: [String: String]())
        if self.connection.output == .json { return try printJSON(job) }
        print(job.state == .cancelled ? "job \(job.id) cancelled" : "job \(job.id) is being stopped (\(job.state.rawValue))")
    }
}

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a job's output (rank 0 of its latest attempt by default).")
    @Argument(help: "The job id.") var id: Int64
    @Option(help: "Which attempt (default: the latest).") var attempt: Int?
    @Option(help: "Which rank (node) of the attempt.") var rank: Int = 0
    @Flag(name: .shortAndLong, help: "Keep printing until the job ends.") var follow = false
    @OptionGroup var connection: Connection

    func run() async throws {
        let client = try self.connection.client()
        var offset = 0
        while true {
            var path = "/v1/jobs/\(self.id)/log?rank=\(self.rank)&offset=\(offset)"
            if let attempt { path += "&attempt=\(attempt)" }
            do {
                let data: Data = try await client.get(path)
                if !data.isEmpty {
                    FileHandle.standardOutput.write(data)
                    offset += data.count
                }
            } catch APIClient.Failure.api(let status, let body) where status == 404 && self.follow {
                _ = body  // not started yet: keep waiting
            }
            guard self.follow else { return }
            let job: JobView = try await client.get("/v1/jobs/\(self.id)")
            if job.state.isTerminal {
                // One last read for what was written just before the end.
                if let data: Data = try? await client.get("/v1/jobs/\(self.id)/log?rank=\(self.rank)&offset=\(offset)"), !data.isEmpty {
                    FileHandle.standardOutput.write(data)
                }
                return
            }
            try await Task.sleep(for: .seconds(1))
        }
    }
}

/// `allot hold|release|requeue ID…`: Slurm's `scontrol hold|release|requeue`, one call per job.
struct JobControl {
    static func apply(_ action: String, ids: [Int64], connection: Connection, done: String) async throws {
        let client = try connection.client()
        var failed: [String] = []
        for id in ids {
            do {
                let job: JobView = try await client.post("/v1/jobs/\(id)/\(action)", json: [String: String]())
                if connection.output == .json { try printJSON(job) } else { print("job \(id) \(done): \(job.state.rawValue)") }
            } catch {
                failed.append("job \(id): \(error)")
            }
        }
        if !failed.isEmpty { throw CLIError(failed.joined(separator: "; ")) }
    }
}

struct Hold: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Hold queued jobs: they wait until released (Slurm's scontrol hold).")
    @Argument(help: "The job ids.") var ids: [Int64]
    @OptionGroup var connection: Connection
    func run() async throws { try await JobControl.apply("hold", ids: self.ids, connection: self.connection, done: "held") }
}

struct Release: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Release held jobs (Slurm's scontrol release).")
    @Argument(help: "The job ids.") var ids: [Int64]
    @OptionGroup var connection: Connection
    func run() async throws { try await JobControl.apply("release", ids: self.ids, connection: self.connection, done: "released") }
}

struct Requeue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Requeue running jobs: stopped with their grace period, they wait again with their submit time (Slurm's scontrol requeue).")
    @Argument(help: "The job ids.") var ids: [Int64]
    @OptionGroup var connection: Connection
    func run() async throws { try await JobControl.apply("requeue", ids: self.ids, connection: self.connection, done: "requeued") }
}

struct Update: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change a queued job: its name, time limit or priority class (Slurm's scontrol update).")
    @Argument(help: "The job id.") var id: Int64
    @Option(help: "The new name.") var name: String?
    @Option(help: "The new time limit (90m, 2h, 1-00:00:00; a member may only shorten it).") var timeLimit: String?
    @Option(help: "The new priority class.") var priorityClass: String?
    @OptionGroup var connection: Connection

    func run() async throws {
        var body: [String: String] = [:]
        if let name { body["name"] = name }
        if let timeLimit { body["timeLimit"] = timeLimit }
        if let priorityClass { body["priorityClass"] = priorityClass }
        guard !body.isEmpty else { throw CLIError("give --name, --time-limit or --priority-class") }
        let job: JobView = try await self.connection.client().patch("/v1/jobs/\(self.id)", json: body)
        if self.connection.output == .json { return try printJSON(job) }
        print(render(job))
    }
}

/// `allot history`: ended jobs, as sacct shows them.
struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ended jobs with their elapsed time, GPUs, exit code and state (Slurm's sacct).")
    @Option(name: [.customShort("u"), .long], help: "Only jobs this token name submitted.") var user: String?
    @Option(help: "Only this organization's jobs.") var org: String?
    @Option(help: "Only jobs of this name.") var name: String?
    @Option(help: "At most this many, most recently ended first.") var limit: Int = 100
    @Option(
        help: "The columns, comma-separated: \(History.columns.map(\.name).joined(separator: ","))")
    var format: String = "JobID,JobName,State,ExitCode,Elapsed,AllocGPUs,NNodes,Org,User,End"
    @OptionGroup var connection: Connection

    static let columns: [(name: String, value: @Sendable (JobView) -> String)] = [
        ("JobID", { j in j.arrayJobID.map { "\($0)_\(j.arrayTaskID ?? 0)" } ?? String(j.id) }), ("JobIDRaw", { String($0.id) }),
        ("JobName", { $0.name }), ("State", { $0.state.rawValue.uppercased() }), ("ExitCode", { "\($0.exitCode ?? 0):0" }),
        ("Elapsed", { j in History.elapsed(j) }), ("AllocGPUs", { j in j.gpuMilli.map { "\(Double($0) / 1000)" } ?? "\(j.nodes * j.gpusPerNode)" }),
        ("NNodes", { "\($0.nodes)" }), ("Org", { $0.org }), ("Account", { j in j.project.map { "\(j.org)/\($0)" } ?? j.org }),
        ("User", { $0.owner }), ("Partition", { $0.pool }), ("Submit", { iso($0.submittedAt) }), ("End", { iso($0.endedAt) }),
        ("Start", { j in iso(j.attempts.last?.startedAt) }),
        ("Timelimit", { j in j.timeLimitSeconds.map { human(seconds: Int($0)) } ?? "UNLIMITED" }),
        ("Restarts", { "\(max(0, $0.attempts.count - 1))" }), ("Reason", { $0.reason ?? "" }),
    ]

    static func elapsed(_ j: JobView) -> String {
        guard let a = j.attempts.last, let start = a.startedAt else { return "00:00:00" }
        let s = Int((a.endedAt ?? j.endedAt ?? Date()).timeIntervalSince(start))
        return String(format: "%02d:%02d:%02d", s / 3600, s % 3600 / 60, s % 60)
    }

    func run() async throws {
        let wanted = self.format.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let columns = try wanted.map { name in
            guard let c = History.columns.first(where: { $0.name.caseInsensitiveCompare(name) == .orderedSame }) else {
                throw CLIError("--format: '\(name.prefix(40))' is not a column (\(History.columns.map(\.name).joined(separator: ", ")))")
            }
            return c
        }
        var query = ["ended=true", "limit=\(max(1, min(self.limit, 5000)))"]
        for (key, value) in [("org", self.org), ("user", self.user), ("name", self.name)] {
            if let value { query.append("\(key)=\(value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? value)") }
        }
        let jobs: [JobView] = try await self.connection.client().get("/v1/jobs?" + query.joined(separator: "&"))
        switch self.connection.output {
        case .json: try printJSON(jobs)
        case .csv:
            print(columns.map(\.name).joined(separator: ","))
            for j in jobs { print(columns.map { csvField($0.value(j)) }.joined(separator: ",")) }
        case .table: print(table(columns.map(\.name), jobs.map { j in columns.map { $0.value(j) } }))
        }
    }
}

func iso(_ date: Date?) -> String { date.map { ISO8601DateFormatter().string(from: $0) } ?? "-" }

/// How many of a job's attempts the infrastructure ended (they spend nothing), or that it is never requeued.
private func attemptsNote(_ job: JobView) -> String {
    if job.maxAttempts <= 1 { return "   never requeued (--no-requeue)" }
    let interrupted = job.attempts.filter(\.state.requeuesJob).count
    return interrupted == 0 ? "" : "   (\(interrupted) ended by the infrastructure, requeued at no cost)"
}

/// A job's state as people read it: a running service short of replicas is `degraded` (N of M running).
func shownState(_ job: JobView) -> String {
    guard job.degraded == true else { return job.state.rawValue }
    let running = job.attempts.last { $0.state == .running }?.nodes.filter { $0.state == .running }.count ?? 0
    return "degraded (\(running) of \(job.nodes) replicas running)"
}
