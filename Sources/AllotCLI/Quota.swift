import AllotCommandLine
import AllotCore
import AllotHTTPClient
import ArgumentParser
import Foundation

struct QuotaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quota", abstract: "Allocations against use, per organisation × pool: in use, borrowed, queued, GPU-hours, exhaustion.")
    @Option(help: "Only this organisation (members see only their own).") var org: String?
    @Option(help: "Only this pool.") var pool: String?
    @Option(help: "The statement of a calendar month, YYYY-MM (default: now).") var period: String?
    @Flag(help: "Fair share instead: each organisation's share, decayed usage and factor, and who goes first in each pool, and why.")
    var shares = false
    @Flag(help: "The split by project (and their users with limits of their own) where grants declare projects.")
    var byProject = false
    @OptionGroup var connection: Connection

    func run() async throws {
        var query: [String] = []
        for (k, v) in [("org", self.org), ("pool", self.pool), ("period", self.period)] {
            if let v { query.append("\(k)=\(v.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? v)") }
        }
        let rows: [QuotaRow] = try await self.connection.client().get("/v1/quota" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
        let number = { (v: Double) in v == v.rounded() ? String(Int64(v)) : String(format: "%.2f", v) }
        let day = { (d: Date?) -> String in
            guard let d else { return "" }
            let f = ISO8601DateFormatter()
            f.formatOptions = [.withFullDate]
            return f.string(from: d)
        }
        if self.byProject && self.connection.output == .table {
            print(Self.byProject(rows))
            return
        }
        if self.shares && self.connection.output == .table {
            print(Self.shares(rows))
            return
        }
        switch self.connection.output {
        case .json: try printJSON(rows)
        case .csv:
            print(
                "org,pool,guaranteedGPUs,limitGPUs,inUseGPUs,borrowedGPUs,lentGPUs,queuedGPUs,gpuHoursUsed,gpuHours,creditedGPUHours,reservedGPUHours,exhaustsAt,periodStart,periodEnd"
            )
            for r in rows {
                print(
                    [
                        r.org, r.pool, "\(r.guaranteedGPUs)", "\(r.limitGPUs)", number(r.inUseGPUs), number(r.borrowedGPUs), number(r.lentGPUs),
                        number(r.queuedGPUs), String(format: "%.3f", r.gpuHoursUsed), number(r.gpuHours), String(format: "%.3f", r.creditedGPUHours),
                        String(format: "%.3f", r.reservedGPUHours), r.exhaustsAt.map { ISO8601DateFormatter().string(from: $0) } ?? "",
                        day(r.periodStart), day(r.periodEnd),
                    ].map(csvField).joined(separator: ","))
            }
        case .table:
            print(
                table(
                    [
                        "ORG", "POOL", "GUARANTEED", "LIMIT", "IN USE", "BORROWED", "LENT", "QUEUED", "GPU-HOURS", "RESERVED", "CREDITED", "EXHAUSTS",
                        "PERIOD",
                    ],
                    rows.map { r in
                        [
                            r.org, r.pool, "\(r.guaranteedGPUs)", "\(r.limitGPUs)", number(r.inUseGPUs), number(r.borrowedGPUs), number(r.lentGPUs),
                            number(r.queuedGPUs), "\(String(format: "%.2f", r.gpuHoursUsed)) / \(number(r.gpuHours))",
                            String(format: "%.2f", r.reservedGPUHours),
                            String(format: "%.2f", r.creditedGPUHours), day(r.exhaustsAt).isEmpty ? "-" : day(r.exhaustsAt),
                            // The period's end is exclusive; people read the last day.
                            "\(day(r.periodStart))…\(day(r.periodEnd.addingTimeInterval(-1)))",
                        ]
                    }))
        }
    }
}

extension QuotaCommand {
    /// The fair-share table and, per pool, the order it gives among jobs of one priority class, in words; then,
    /// inside each organisation whose grant has projects, the projects' order.
    static func shares(_ rows: [QuotaRow]) -> String {
        let pct = { (v: Double) in String(format: "%.1f%%", v * 100) }
        var out = table(
            ["ORG", "POOL", "SHARE", "DECAYED GPU-H", "USAGE SHARE", "FACTOR"],
            rows.map {
                [
                    $0.org, $0.pool, pct($0.guaranteeShare), String(format: "%.2f", $0.decayedGPUHours), pct($0.usageShare),
                    String(format: "%.3f", $0.fairShareFactor),
                ]
            })
        for (pool, inPool) in Dictionary(grouping: rows, by: \.pool).sorted(by: { $0.key < $1.key }) {
            let ordered = inPool.sorted { ($0.fairShareFactor, $1.org) > ($1.fairShareFactor, $0.org) }
            out += "\n\(pool): among jobs of one priority class, "
            out += ordered.map(\.org).joined(separator: " before ") + "."
            for (ahead, behind) in zip(ordered, ordered.dropFirst()) where ahead.fairShareFactor > behind.fairShareFactor {
                out +=
                    "\n  \(behind.org) is behind \(ahead.org): it used \(pct(behind.usageShare)) of the pool's decayed usage against a \(pct(behind.guaranteeShare)) share"
                out +=
                    " (factor \(String(format: "%.3f", behind.fairShareFactor))); \(ahead.org) used \(pct(ahead.usageShare)) against \(pct(ahead.guaranteeShare))"
                out += " (factor \(String(format: "%.3f", ahead.fairShareFactor)))."
            }
        }
        // Inside an organisation, its projects by their own factors: their part of its decayed usage against
        // their part of its shares.
        for r in rows where !r.projects.isEmpty {
            let total = r.projects.reduce(0) { $0 + $1.share }
            let used = r.projects.reduce(0) { $0 + max(0, $1.decayedGPUHours) }
            let ordered = r.projects.sorted { ($0.fairShareFactor, $1.name) > ($1.fairShareFactor, $0.name) }
            out += "\n\(r.org) in \(r.pool), its projects: "
            out +=
                ordered.map { p in
                    "\(p.name) (share \(pct(total > 0 ? p.share / total : 0)), used \(pct(used > 0 ? max(0, p.decayedGPUHours) / used : 0)), "
                        + "\(String(format: "%.2f", p.decayedGPUHours)) decayed GPU-h, factor \(String(format: "%.3f", p.fairShareFactor)))"
                }.joined(separator: " before ") + "."
        }
        return out
    }
}

extension QuotaCommand {
    /// One line per project (and per user with limits of their own) of each organisation × pool.
    static func byProject(_ rows: [QuotaRow]) -> String {
        let f = { (v: Double) in String(format: "%.2f", v) }
        var lines: [[String]] = []
        for r in rows {
            for p in r.projects {
                lines.append([
                    r.org, r.pool, p.name, "", p.limitGPUs.map(String.init) ?? "-", f(p.inUseGPUs),
                    "\(f(p.gpuHoursUsed)) / \(p.gpuHours.map(String.init) ?? "-")",
                    f(p.reservedGPUHours), String(format: "%g", p.share), String(format: "%.3f", p.fairShareFactor),
                ])
                for u in p.users {
                    lines.append([
                        r.org, r.pool, p.name, u.name, u.limitGPUs.map(String.init) ?? "-", f(u.inUseGPUs),
                        "\(f(u.gpuHoursUsed)) / \(u.gpuHours.map(String.init) ?? "-")", f(u.reservedGPUHours), "", "",
                    ])
                }
            }
        }
        if lines.isEmpty { return "no grant declares projects" }
        return table(["ORG", "POOL", "PROJECT", "USER", "LIMIT", "IN USE", "GPU-HOURS", "RESERVED", "SHARE", "FACTOR"], lines)
    }
}

/// RFC 4180: quote fields holding commas, quotes or line breaks.
func csvField(_ s: String) -> String {
    s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
}
