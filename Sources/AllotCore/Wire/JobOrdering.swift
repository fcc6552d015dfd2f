public import Foundation

/// A job array (`--array=0-99%8`, `1,3,5`, `0-20:2`): one job per index, at most `limit` of them running at once.
public struct JobArray: Hashable, Codable, Sendable, CustomStringConvertible {
    public var indices: [Int]
    public var limit: Int?
    /// As Slurm's default MaxArraySize: at most 1,001 tasks in one submission.
    public static let maxTasks = 1001
    public static let maxIndex = 4_000_000

    public init(indices: [Int], limit: Int? = nil) {
        self.indices = indices
        self.limit = limit
    }

    /// Slurm's form; nil with the reason when malformed.
    public static func parse(_ text: String) -> Result<JobArray, SlurmText.Problem> {
        var body = Substring(text)
        var limit: Int?
        if let percent = body.firstIndex(of: "%") {
            guard let l = Int(body[body.index(after: percent)...]), l >= 1 else {
                return .failure(SlurmText.Problem("the %limit must be a positive count"))
            }
            limit = l
            body = body[..<percent]
        }
        var indices: [Int] = []
        var seen = Set<Int>()
        for item in body.split(separator: ",", omittingEmptySubsequences: false) {
            let stepParts = item.split(separator: ":", omittingEmptySubsequences: false)
            guard stepParts.count <= 2 else { return .failure(SlurmText.Problem("'\(item.prefix(20))' is not N, N-M or N-M:STEP")) }
            var step = 1
            if stepParts.count == 2 {
                guard let s = Int(stepParts[1]), s >= 1 else {
                    return .failure(SlurmText.Problem("the step of '\(item.prefix(20))' must be a positive count"))
                }
                step = s
            }
            let ends = stepParts[0].split(separator: "-", omittingEmptySubsequences: false)
            guard ends.count <= 2, let low = Int(ends[0]), let high = Int(ends.last!), low >= 0, low <= high else {
                return .failure(SlurmText.Problem("'\(item.prefix(20))' is not N, N-M or N-M:STEP with 0 ≤ N ≤ M"))
            }
            guard high <= Self.maxIndex else { return .failure(SlurmText.Problem("indices go up to \(Self.maxIndex), not \(high)")) }
            guard (high - low) / step + 1 + indices.count <= Self.maxTasks else {
                return .failure(SlurmText.Problem("more than \(Self.maxTasks) tasks"))
            }
            for i in stride(from: low, through: high, by: step) where seen.insert(i).inserted { indices.append(i) }
        }
        guard !indices.isEmpty else { return .failure(SlurmText.Problem("names no task")) }
        return .success(JobArray(indices: indices.sorted(), limit: limit))
    }

    /// `0-99%8`, `1,3,5`, with runs of consecutive indices as ranges.
    public var description: String {
        var parts: [String] = []
        var i = 0
        while i < self.indices.count {
            var j = i
            while j + 1 < self.indices.count, self.indices[j + 1] == self.indices[j] + 1 { j += 1 }
            parts.append(i == j ? "\(self.indices[i])" : "\(self.indices[i])-\(self.indices[j])")
            i = j + 1
        }
        return parts.joined(separator: ",") + (self.limit.map { "%\($0)" } ?? "")
    }

    public init(from decoder: any Decoder) throws { self = try SlurmText.decode(decoder, Self.parse) }

    public func encode(to encoder: any Encoder) throws { try SlurmText.encode(self, to: encoder) }
}

/// What a job waits for before it may start (`--dependency`, Slurm's forms): `afterok:12:13,afterany:14` (all),
/// `afterok:12?afternotok:13` (any), `after:12+5` (5 minutes after 12 started), `singleton`.
public struct JobDependency: Hashable, Codable, Sendable, CustomStringConvertible {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case after, afterany, afterok, afternotok, singleton
    }
    public struct Condition: Hashable, Codable, Sendable {
        public var kind: Kind
        public var jobs: [Int64]
        /// `after:ID+MINUTES`, each id its own (0 where none is given).
        public var minutes: [Int64: Int]
        public init(kind: Kind, jobs: [Int64] = [], minutes: [Int64: Int] = [:]) {
            self.kind = kind
            self.jobs = jobs
            self.minutes = minutes
        }
    }
    /// The longest `after:ID+MINUTES` taken: a year.
    public static let maxMinutes = 525_600
    public var conditions: [Condition]
    /// `?` between conditions: any one is enough.
    public var anyOf: Bool

    public init(conditions: [Condition], anyOf: Bool = false) {
        self.conditions = conditions
        self.anyOf = anyOf
    }

    /// Every job a condition names.
    public var jobs: [Int64] { Array(Set(self.conditions.flatMap(\.jobs))).sorted() }

    public static func parse(_ text: String) -> Result<JobDependency, SlurmText.Problem> {
        let anyOf = text.contains("?")
        if anyOf && text.contains(",") { return .failure(.init("mixes ',' (all) and '?' (any)")) }
        var conditions: [Condition] = []
        for item in text.split(separator: anyOf ? "?" : ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard let kind = Kind(rawValue: parts[0].lowercased()) else {
                let known = Kind.allCases.map(\.rawValue).joined(separator: ", ")
                return .failure(.init("'\(parts[0].prefix(20))' is not one of \(known) (aftercorr and afterburstbuffer are not supported)"))
            }
            if kind == .singleton {
                guard parts.count == 1 else { return .failure(.init("singleton takes no job ids")) }
                conditions.append(Condition(kind: .singleton))
                continue
            }
            guard parts.count >= 2 else { return .failure(.init("\(kind.rawValue) needs job ids (\(kind.rawValue):ID[:ID…])")) }
            var jobs: [Int64] = []
            var minutes: [Int64: Int] = [:]
            for word in parts.dropFirst() {
                var id = Substring(word)
                var m = 0
                if kind == .after, let plus = word.firstIndex(of: "+") {
                    guard let given = Int(word[word.index(after: plus)...]), given >= 0, given <= Self.maxMinutes else {
                        return .failure(.init("'\(word.prefix(20))': +time is minutes, at most \(Self.maxMinutes)"))
                    }
                    m = given
                    id = word[..<plus]
                }
                if id.contains("_") {
                    return .failure(.init("'\(id.prefix(20))': a dependency on one array task is not supported; name the array's job id"))
                }
                guard let n = Int64(id), n >= 1 else { return .failure(.init("'\(id.prefix(20))' is not a job id")) }
                jobs.append(n)
                if m > 0 { minutes[n] = m }
            }
            conditions.append(Condition(kind: kind, jobs: jobs, minutes: minutes))
        }
        guard conditions.count <= 64, conditions.reduce(0, { $0 + $1.jobs.count }) <= 500 else {
            return .failure(.init("names too many jobs (at most 500)"))
        }
        return .success(JobDependency(conditions: conditions, anyOf: anyOf))
    }

    public var description: String {
        self.conditions.map { c in
            c.kind == .singleton ? "singleton" : c.kind.rawValue + ":" + c.jobs.map { id in Self.word(id, c.minutes[id]) }.joined(separator: ":")
        }.joined(separator: self.anyOf ? "?" : ",")
    }

    private static func word(_ id: Int64, _ minutes: Int?) -> String { minutes.map { "\(id)+\($0)" } ?? "\(id)" }

    public init(from decoder: any Decoder) throws { self = try SlurmText.decode(decoder, Self.parse) }

    public func encode(to encoder: any Encoder) throws { try SlurmText.encode(self, to: encoder) }

    /// What a depended-on job is at the moment: its state, when it started and when it ended.
    public struct Depended: Hashable, Sendable {
        public var state: JobState
        public var startedAt: Date?
        public var endedAt: Date?
        public init(state: JobState, startedAt: Date? = nil, endedAt: Date? = nil) {
            self.state = state
            self.startedAt = startedAt
            self.endedAt = endedAt
        }
    }

    public enum Outcome: Hashable, Sendable {
        case satisfied
        case waiting(String)
        /// It can never be met (Slurm's DependencyNeverSatisfied): why.
        case never(String)
    }

    /// Where the dependency stands, given the jobs it names (an array's id stands for all its tasks: each is
    /// listed under it) and whether an earlier job of the same name and user is still queued or live (singleton).
    public func evaluate(_ jobs: [Int64: [Depended]], singletonBlocked: Bool, now: Date) -> Outcome {
        var outcomes: [Outcome] = []
        for c in self.conditions {
            if c.kind == .singleton {
                outcomes.append(singletonBlocked ? .waiting("singleton: an earlier job of this name and user has not ended") : .satisfied)
                continue
            }
            var each: [Outcome] = []
            for id in c.jobs {
                guard let tasks = jobs[id], !tasks.isEmpty else {
                    each.append(.never("job \(id) does not exist"))
                    continue
                }
                for d in tasks { each.append(Self.one(c, id: id, d, now: now)) }
            }
            outcomes.append(Self.all(each))
        }
        return self.anyOf ? Self.any(outcomes) : Self.all(outcomes)
    }

    private static func one(_ c: Condition, id: Int64, _ d: Depended, now: Date) -> Outcome {
        let ended = d.state.isTerminal
        switch c.kind {
        case .after:
            // Started (or ended without starting, as Slurm counts a cancelled job), plus the minutes asked.
            guard let since = d.startedAt ?? (ended ? d.endedAt ?? now : nil) else { return .waiting("after:\(id): job \(id) has not started") }
            let minutes = c.minutes[id] ?? 0
            let due = since.addingTimeInterval(Double(minutes) * 60)
            return due <= now ? .satisfied : .waiting("after:\(id)+\(minutes): job \(id) started \(Int(now.timeIntervalSince(since))) s ago")
        case .afterany:
            return ended ? .satisfied : .waiting("afterany:\(id): job \(id) is \(d.state.rawValue)")
        case .afterok:
            if d.state == .succeeded { return .satisfied }
            return ended ? .never("afterok:\(id): job \(id) ended \(d.state.rawValue)") : .waiting("afterok:\(id): job \(id) is \(d.state.rawValue)")
        case .afternotok:
            if d.state == .succeeded { return .never("afternotok:\(id): job \(id) succeeded") }
            return ended ? .satisfied : .waiting("afternotok:\(id): job \(id) is \(d.state.rawValue)")
        case .singleton:
            return .satisfied
        }
    }

    private static func all(_ outcomes: [Outcome]) -> Outcome {
        if let never = outcomes.first(where: { if case .never = $0 { return true } else { return false } }) { return never }
        return outcomes.first { $0 != .satisfied } ?? .satisfied
    }

    private static func any(_ outcomes: [Outcome]) -> Outcome {
        if outcomes.contains(.satisfied) { return .satisfied }
        if outcomes.allSatisfy({ if case .never = $0 { return true } else { return false } }) {
            return .never(outcomes.compactMap { if case .never(let w) = $0 { return w } else { return nil } }.joined(separator: "; "))
        }
        return outcomes.first { if case .waiting = $0 { return true } else { return false } } ?? .waiting("")
    }
}
