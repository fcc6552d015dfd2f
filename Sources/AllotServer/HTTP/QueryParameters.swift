public import AllotCore
import AllotHTTPServer
import Foundation

/// A query parameter a route takes, and the values it accepts.
public struct QueryParameter: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// A whole number in the range.
        case whole(ClosedRange<Int>)
        /// `true` or `false`.
        case flag
        /// One of these words.
        case choice([String])
        /// A name (an organisation, a pool): printable, at most 128 characters.
        case name
        /// A month, `YYYY-MM`.
        case month
        /// A time in ISO 8601 (`2026-11-01T00:00:00Z`).
        case time
    }

    public var name: String
    public var kind: Kind
    public var help: String

    init(_ name: String, _ kind: Kind, _ help: String) {
        self.name = name
        self.kind = kind
        self.help = help
    }

    /// Why `value` is not one this parameter takes, or nil.
    func problem(_ value: Substring) -> String? {
        let shown = value.count > 64 ? value.prefix(64) + "…" : value
        switch self.kind {
        case .whole(let range):
            guard let n = Int(value) else { return "must be a whole number, not '\(shown)'" }
            guard range.contains(n) else {
                return range.upperBound == .max
                    ? "must be at least \(range.lowerBound), not \(n)" : "must be from \(range.lowerBound) to \(range.upperBound), not \(n)"
            }
        case .flag:
            guard value == "true" || value == "false" else { return "must be true or false, not '\(shown)'" }
        case .choice(let words):
            guard words.contains(String(value)) else { return "must be one of \(words.joined(separator: ", ")), not '\(shown)'" }
        case .name:
            guard !value.isEmpty, value.count <= 128, value.unicodeScalars.allSatisfy({ !CharacterSet.controlCharacters.contains($0) }) else {
                return "must be a name of 1 to 128 printable characters"
            }
        case .month:
            let parts = value.split(separator: "-")
            guard parts.count == 2, parts[0].count == 4, let _ = Int(parts[0]), let m = Int(parts[1]), parts[1].count == 2, (1...12).contains(m)
            else {
                return "must be a month as YYYY-MM, not '\(shown)'"
            }
        case .time:
            guard WireJSON.date(String(value)) != nil else {
                return "must be a time in ISO 8601, like 2026-11-01T00:00:00Z, not '\(shown)'"
            }
        }
        return nil
    }
}

extension Endpoint {
    /// The query parameters the route takes: any other is a 400 naming it (a typo never passes silently), and
    /// so is a value the parameter does not take. The OpenAPI document lists the same (a test holds them equal).
    public var queryParameters: [QueryParameter] {
        switch self {
        case .listJobs:
            return [
                QueryParameter("state", .choice(JobState.allCases.map(\.rawValue)), "Only jobs in this state."),
                QueryParameter("org", .name, "Only this organisation's jobs (operators and auditors)."),
                QueryParameter("limit", .whole(1...5000), "At most this many, newest first (default 500)."),
                QueryParameter("user", .name, "Only jobs submitted by this token name (squeue's --user)."),
                QueryParameter("name", .name, "Only jobs of this name (squeue's --name)."),
                QueryParameter("ended", .flag, "Only ended jobs, most recently ended first (allot history, sacct's view)."),
                QueryParameter(
                    "before", .whole(1...Int.max),
                    "The next page: only jobs listed after this one, the last of the page before (its Link header's rel=next names it)."),
            ]
        case .jobLog:
            return [
                QueryParameter("attempt", .whole(1...Int(Int32.max)), "The attempt (default: the latest)."),
                QueryParameter("rank", .whole(0...Int(Int32.max)), "The rank (default 0)."),
                QueryParameter("offset", .whole(0...Int.max), "Bytes of the log to skip (for following it)."),
            ]
        case .quota:
            return [
                QueryParameter("org", .name, "Only this organisation (members: their own)."),
                QueryParameter("pool", .name, "Only this pool."),
                QueryParameter("period", .month, "The month YYYY-MM (default: now)."),
            ]
        case .report:
            return [
                QueryParameter("org", .name, "The organisation (members: their own; required of operators and auditors)."),
                QueryParameter("period", .month, "The month YYYY-MM (default: the current one)."),
                QueryParameter("by", .choice(Statement.Grouping.allCases.map(\.rawValue)), "Lines per pool (default), project, user or grant."),
            ]
        case .listMaintenance, .listTokens:
            return [QueryParameter("all", .flag, "Also the ended (windows) or revoked and expired (tokens).")]
        case .applyPolicy:
            return [QueryParameter("dryRun", .flag, "Report the changes without making them.")]
        case .audit:
            return [
                QueryParameter("since", .time, "Only records from this time on."),
                QueryParameter("limit", .whole(1...10_000), "At most this many, oldest first (default 1000)."),
            ]
        default:
            return []
        }
    }

    /// Refuses a query the route does not take: an unknown or repeated parameter, or a value out of its kind.
    func check(query: some Sequence<(key: Substring, value: Substring)>) throws(APIError) {
        let declared = self.queryParameters
        var seen = Set<Substring>()
        for (key, value) in query {
            guard let parameter = declared.first(where: { $0.name == key }) else {
                let takes = declared.isEmpty ? "takes no query parameters" : "takes \(declared.map(\.name).joined(separator: ", "))"
                throw APIError.badRequest("is not a query parameter of \(self.rawValue), which \(takes)", field: String(key.prefix(64)))
            }
            guard seen.insert(key).inserted else { throw APIError.badRequest("is given more than once", field: parameter.name) }
            if let problem = parameter.problem(value) { throw APIError.badRequest(problem, field: parameter.name) }
        }
    }
}
