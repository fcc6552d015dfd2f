import AllotCommandLine
import AllotCore
import AllotHTTPClient
import ArgumentParser
import Foundation

/// `allot report`: an organisation's monthly statement from the ledger, like Slurm's `sreport cluster
/// AccountUtilizationByUser`, with its credits itemised and a digest that shows any later change.
struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An organisation's statement for a month, from the ledger: charged, credited, adjusted GPU-hours, with a digest.",
        subcommands: [Show.self, Adjust.self], defaultSubcommand: Show.self)

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Print the statement (the default).")
        @Option(help: "The organisation (members: their own, the default).") var org: String?
        @Option(help: "The calendar month, YYYY-MM (UTC; default: the current one).") var period: String?
        @Option(help: "Lines per: \(Statement.Grouping.allCases.map(\.rawValue).joined(separator: ", ")).") var by: Statement.Grouping = .pool
        @OptionGroup var connection: Connection

        func run() async throws {
            var query = ["by=\(self.by.rawValue)"]
            for (k, v) in [("org", self.org), ("period", self.period)] {
                if let v { query.append("\(k)=\(v.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? v)") }
            }
            let s: Statement = try await self.connection.client().get("/v1/report?" + query.joined(separator: "&"))
            let hours = { (v: Double) in String(format: "%.3f", v) }
            let time = { (d: Date) in ISO8601DateFormatter().string(from: d) }
            switch self.connection.output {
            case .json: try printJSON(s)
            case .csv:
                print("\(s.by.rawValue),chargedGPUHours,creditedGPUHours,adjustedGPUHours,netGPUHours")
                for l in s.lines + [s.total] {
                    print(
                        [l.key, hours(l.chargedGPUHours), hours(l.creditedGPUHours), hours(l.adjustedGPUHours), hours(l.netGPUHours)].map(csvField)
                            .joined(separator: ","))
                }
                print("# digest \(s.digest)")
            case .table:
                print(
                    "Statement of \(s.org) for \(s.period) (\(time(s.periodStart)) to \(time(s.periodEnd)))\(s.final ? "" : ", not final: the month is not over")"
                )
                print(
                    table(
                        [s.by.rawValue.uppercased(), "CHARGED GPU-H", "CREDITED GPU-H", "ADJUSTED GPU-H", "NET GPU-H"],
                        (s.lines + [s.total]).map {
                            [$0.key, hours($0.chargedGPUHours), hours($0.creditedGPUHours), hours($0.adjustedGPUHours), hours($0.netGPUHours)]
                        }))
                if !s.credits.isEmpty {
                    print("\nCredits (GPU time the infrastructure lost, given back):")
                    print(
                        table(
                            ["JOB", "ATTEMPT", "RANK", "NODE", "POOL", "FROM", "TO", "GPU-H", "CAUSE"],
                            s.credits.map {
                                [
                                    "\($0.jobID)", "\($0.attempt)", $0.rank.map(String.init) ?? "-", $0.node ?? "-", $0.pool, time($0.from),
                                    time($0.to), hours($0.gpuHours), $0.cause,
                                ]
                            }))
                }
                if !s.adjustments.isEmpty {
                    print("\nAdjustments:")
                    print(
                        table(
                            ["ID", "POOL", "GPU-H", "APPLIES AT", "BY", "REASON"],
                            s.adjustments.map { ["\($0.id)", $0.pool, hours($0.gpuHours), time($0.appliesAt), $0.actor, $0.reason] }))
                }
                if !s.reclaims.isEmpty {
                    print("\nReclaims (guaranteed GPUs asked back from borrowers):")
                    print(
                        table(
                            ["JOB", "POOL", "GPUS", "VICTIMS", "REQUESTED", "DEADLINE", "SATISFIED", "OUTCOME"],
                            s.reclaims.map {
                                [
                                    "\($0.jobID)", $0.pool, String(format: "%g", $0.requestedGPUs),
                                    $0.victims.map(String.init).joined(separator: ","),
                                    time($0.requestedAt), time($0.deadlineAt), $0.satisfiedAt.map(time) ?? "-", $0.outcome.rawValue,
                                ]
                            }))
                }
                print("\ndigest \(s.digest)")
            }
        }
    }

    struct Adjust: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Correct the ledger (operators): a new row of GPU-hours charged, or given back when negative; nothing is edited.")
        @Option(help: "The organisation.") var org: String
        @Option(help: "The pool.") var pool: String
        // Unconditional: a negative amount (-2.5) is the value, not an option.
        @Option(parsing: .unconditional, help: "GPU-hours to charge (negative: to give back).") var gpuHours: Double
        @Option(help: "When it applies (ISO 8601; default now): the month whose statement shows it.") var at: String?
        @Option(help: "Why (required, on the statement and in the audit log).") var reason: String
        @Option(help: "The project it is for.") var project: String?
        @Option(help: "The user it is for.") var user: String?
        @OptionGroup var connection: Connection

        func run() async throws {
            var when = Date()
            if let at = self.at {
                guard let parsed = WireJSON.date(at) else { throw ValidationError("--at: '\(at.prefix(64))' is not an ISO 8601 time") }
                when = parsed
            }
            let seconds = (self.gpuHours * 3600).rounded()
            guard seconds != 0, abs(seconds) < 1e15 else { throw ValidationError("--gpu-hours: must be a non-zero number of GPU-hours") }
            let made: [String: Int64] = try await self.connection.client().post(
                "/v1/adjustments",
                json: AdjustUsageRequest(
                    org: self.org, pool: self.pool, gpuSeconds: Int64(seconds), appliesAt: when, reason: self.reason, project: self.project,
                    user: self.user))
            print("adjustment \(made["id"] ?? 0) recorded")
        }
    }
}
