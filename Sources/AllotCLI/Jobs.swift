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
                    text, file: self.file, submitDir: FileManager.default.currentDirectoryPath, environment: ProcessInfo.processInfo.environment)
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
        if self.connection.output == .json { try printJSON(job) } else { print("submitted job \(job.id) (\(job.name)): \(job.state.rawValue)") }
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
    @OptionGroup var connection: Connection

    func run() async throws {
        var query: [String] = []
        if let state { query.append("state=\(state.rawValue)") }
        if let org { query.append("org=\(org.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? org)") }
        let jobs: [JobView] = try await self.connection.client().get("/v1/jobs" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
        switch self.connection.output {
        case .json: try printJSON(jobs)
        default:
            print(
                table(
                    ["ID", "NAME", "ORG", "POOL", "GPUS", "STATE", "SUBMITTED", "REASON"],
                    jobs.map { j in
                        [String(j.id), shownName(j.name), j.org, j.pool, gpuText(j), j.state.rawValue, ago(j.submittedAt), j.reason ?? ""]
                    }))
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

/// A job's name as tables show it: quoted where it has spaces or quotes (Slurm's names are free text).
func shownName(_ name: String) -> String {
    name.contains(where: { $0 == " " || $0 == "\t" || $0 == "\"" || $0 == "'" })
        ? "\"" + name.replacingOccurrences(of: "\"", with: "\\\"") + "\"" : name
}

/// The `allot jobs show` text.
func render(_ job: JobView) -> String {
    var lines = [
        "Job \(job.id): \(shownName(job.name))",
        "  state:     \(job.state.rawValue)" + (job.exitCode.map { " (exit code \($0))" } ?? ""),
        "  reason:    \(job.reason ?? "-")"
            + (job.state == .queued
                ? "\n  estimated start: \(job.estimatedStart.map { "\(ISO8601DateFormatter().string(from: $0)) (\(ago($0)))" } ?? "not in sight (running jobs without time limits, or it never fits)")"
                : ""),
        "  org:       \(job.org)\(job.project.map { " / \($0)" } ?? "")   owner: \(job.owner)",
        "  pool:      \(job.pool)   shape: \(job.nodes) \(job.kind == .inference ? "replica(s), one node each" : "node(s)") × \(job.gpuMilli.map { "\(Double($0) / 1000) GPU" } ?? "\(job.gpusPerNode) GPUs")",
        "  priority:  \(job.priorityClass) (\(job.priority))   time limit: \(job.timeLimitSeconds.map { human(seconds: Int($0)) } ?? "none")",
        "  submitted: \(ISO8601DateFormatter().string(from: job.submittedAt)) (\(ago(job.submittedAt)))",
        "  command:   \(job.command.split(separator: "\n").first.map(String.init) ?? "")\(job.command.contains("\n") ? " …" : "")",
        "  attempts:  \(job.attempts.count) of at most \(job.maxAttempts)",
    ]
    for a in job.attempts {
        var head = "    #\(a.number) \(a.state.rawValue)"
        if let e = a.exitCode { head += " exit \(e)" }
        if let r = a.reason { head += " — \(r)" }
        lines.append(head)
        for r in a.nodes {
            let gpus =
                r.gpus.isEmpty
                ? "no GPUs" : "GPUs " + r.gpus.map(String.init).joined(separator: ",") + (r.gpuMilli < 1000 ? " (\(r.gpuMilli) milli)" : "")
            lines.append("       rank \(r.rank) on \(r.node): \(gpus), \(r.state)\(r.exitCode.map { " (exit code \($0))" } ?? "")")
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
