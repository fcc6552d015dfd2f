public import Foundation

/// What a job submitted as a Slurm batch script keeps of Slurm's options: enough for its ranks to see the
/// `SLURM_*` environment a script reads and to write the `--output`/`--error` files it names.
public struct SlurmOptions: Hashable, Codable, Sendable {
    /// Where `sbatch` was run (`SLURM_SUBMIT_DIR`); the working directory unless `--chdir` names another.
    public var submitDir: String?
    /// Tasks per node (`--ntasks-per-node`, or `--ntasks` spread over the nodes) and CPUs per task.
    public var tasksPerNode: Int
    public var cpusPerTask: Int?
    /// `--output`/`--error`: absolute paths, with Slurm's `%j %x %N %A %a %u %%` still to be filled in.
    public var output: String?
    public var error: String?
    /// `--open-mode=append`: the files are appended to, not truncated (a requeued attempt always appends).
    public var appendOutput: Bool
    /// Slurm's batch step: the command runs once, on the first node, and `srun` inside it runs steps on the
    /// allocation's nodes (the others wait for them). A batch script always has one; a job spec asks for it.
    public var batchStep: Bool
    /// `--ntasks`, where given: the job's tasks in all (`SLURM_NTASKS`, srun's default), which the nodes'
    /// `tasksPerNode` may exceed where it does not divide.
    public var ntasks: Int?

    public init(
        submitDir: String? = nil, tasksPerNode: Int = 1, cpusPerTask: Int? = nil, output: String? = nil, error: String? = nil,
        appendOutput: Bool = false, batchStep: Bool = false, ntasks: Int? = nil
    ) {
        self.ntasks = ntasks
        self.batchStep = batchStep
        self.submitDir = submitDir
        self.tasksPerNode = tasksPerNode
        self.cpusPerTask = cpusPerTask
        self.output = output
        self.error = error
        self.appendOutput = appendOutput
    }

    /// Fills Slurm's filename pattern (`man sbatch`, "filename pattern"): `%j`/`%J` job id, `%x` job name, `%N`
    /// the node's short name, `%n` node rank, `%A` the array's job id (the job's own outside an array), `%a` the
    /// task id (4294967294, Slurm's NO_VAL, outside an array), `%u` user, `%t` task 0, `%s` the batch step, `%%`.
    /// A number between `%` and the letter zero-pads, as Slurm does (`%4j`).
    public static func fill(
        _ pattern: String, jobID: Int64, name: String, node: String, nodeRank: Int, user: String, arrayJobID: Int64? = nil,
        arrayTaskID: Int? = nil
    ) -> String {
        var out = ""
        var chars = pattern.makeIterator()
        while let c = chars.next() {
            guard c == "%" else {
                out.append(c)
                continue
            }
            var width = ""
            var letter = chars.next()
            while let l = letter, l.isASCII, l.isNumber {
                width.append(l)
                letter = chars.next()
            }
            func padded(_ s: String) -> String {
                guard let w = Int(width), w > s.count, w <= 10 else { return s }
                return String(repeating: "0", count: w - s.count) + s
            }
            switch letter {
            case "j", "J": out += padded("\(jobID)")
            case "x": out += name
            case "N": out += String(node.prefix { $0 != "." })
            case "n": out += padded("\(nodeRank)")
            case "A": out += padded("\(arrayJobID ?? jobID)")
            case "a": out += padded(arrayTaskID.map(String.init) ?? "4294967294")
            case "u": out += user
            case "t": out += padded("0")
            case "s": out += "batch"
            case "%": out += "%"
            case let other?: out += "%" + width + String(other)
            case nil: out += "%" + width
            }
        }
        return out
    }
}

/// A signal sent ahead of a job's end (`--signal=[B:]SIG[@SECONDS]`): that long before its time limit, and
/// before a drain or a reclaim stops it.
public struct JobSignal: Hashable, Codable, Sendable, CustomStringConvertible {
    /// The signal's number (Linux numbering).
    public var number: Int32
    public var secondsBefore: Int
    /// `B:`: only the batch script's shell gets it; otherwise every process of the job but its init.
    public var batchOnly: Bool

    public init(number: Int32, secondsBefore: Int = 60, batchOnly: Bool = false) {
        self.number = number
        self.secondsBefore = secondsBefore
        self.batchOnly = batchOnly
    }

    /// Linux's signal numbers for the names Slurm accepts (`man 7 signal`, x86 and arm64 alike).
    public static let names: [String: Int32] = [
        "HUP": 1, "INT": 2, "QUIT": 3, "ABRT": 6, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
        "CONT": 18, "STOP": 19, "TSTP": 20, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
        "PWR": 30, "SYS": 31,
    ]

    /// Slurm's form: `[{R|B}:]SIG[@SECONDS]`, SIG a name (with or without `SIG`) or a number, seconds 0…65535
    /// (default 60). `R:` (also on requeue) is accepted and reads as the plain form. Nil when malformed.
    public init?(slurm text: String) {
        var rest = Substring(text).drop { $0 == " " || $0 == "\t" }
        while rest.last == " " || rest.last == "\t" { rest = rest.dropLast() }
        var batchOnly = false
        while let colon = rest.firstIndex(of: ":"), rest[..<colon].allSatisfy({ "BRbr".contains($0) }),
            rest.distance(from: rest.startIndex, to: colon) <= 2
        {
            batchOnly = batchOnly || rest[..<colon].uppercased().contains("B")
            rest = rest[rest.index(after: colon)...]
        }
        let parts = rest.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        guard let sig = parts.first, !sig.isEmpty else { return nil }
        var name = sig.uppercased()
        if name.hasPrefix("SIG") { name = String(name.dropFirst(3)) }
        guard let number = Self.names[name] ?? Int32(name).flatMap({ (1...64).contains($0) ? $0 : nil }) else { return nil }
        var seconds = 60
        if parts.count == 2 {
            guard let s = Int(parts[1]), (0...65535).contains(s) else { return nil }
            seconds = s
        }
        self.init(number: number, secondsBefore: seconds, batchOnly: batchOnly)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = JobSignal(slurm: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not [B:]SIG[@SECONDS]: \(text.prefix(40))"))
        }
        self = parsed
    }

    /// Encoded in Slurm's own form (`B:USR1@90`), as people write it.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(self.description)
    }

    public var name: String { Self.names.first { $0.value == self.number }.map { "SIG" + $0.key } ?? "signal \(self.number)" }
    public var description: String {
        "\(self.batchOnly ? "B:" : "")\(self.name.hasPrefix("SIG") ? String(self.name.dropFirst(3)) : "\(self.number)")@\(self.secondsBefore)"
    }
}

/// Slurm's hostlist form (`man scontrol`, HOSTLIST): `gpu-[001-003,007],login1`. Written by hand: Slurm's own
/// code is the only implementation, and a rank needs it without Slurm installed.
public enum Hostlist {
    /// The compressed form of host names, in the order given: runs of one prefix with consecutive numbers (of one
    /// width, zeros kept) become ranges.
    public static func compress(_ hosts: [String]) -> String {
        /// Hosts that differ only in one number: `prefix`, the number padded to `width` digits (0: as it is), `suffix`.
        struct Run {
            var prefix: String
            var suffix: String
            var width: Int
            var numbers: [Int]
            func pad(_ n: Int) -> String {
                let s = String(n)
                return self.width > s.count ? String(repeating: "0", count: self.width - s.count) + s : s
            }
            var text: String {
                if self.numbers.count == 1 { return self.prefix + self.pad(self.numbers[0]) + self.suffix }
                var ranges: [String] = []
                var i = 0
                while i < self.numbers.count {
                    var j = i
                    while j + 1 < self.numbers.count, self.numbers[j + 1] == self.numbers[j] + 1 { j += 1 }
                    ranges.append(i == j ? self.pad(self.numbers[i]) : "\(self.pad(self.numbers[i]))-\(self.pad(self.numbers[j]))")
                    i = j + 1
                }
                return "\(self.prefix)[\(ranges.joined(separator: ","))]\(self.suffix)"
            }
        }
        var items: [Run?] = []  // nil keeps a host without a number in its place
        var plain: [Int: String] = [:]
        for host in hosts {
            // The last run of digits is the number; what follows it stays a suffix (`node12-ib`).
            let chars = Array(host)
            guard let end = chars.lastIndex(where: { $0.isASCII && $0.isNumber }) else {
                plain[items.count] = host
                items.append(nil)
                continue
            }
            var start = end
            while start > 0, chars[start - 1].isASCII, chars[start - 1].isNumber { start -= 1 }
            let digits = String(chars[start...end])
            guard digits.count <= 18, let n = Int(digits) else {
                plain[items.count] = host
                items.append(nil)
                continue
            }
            let prefix = String(chars[..<start])
            let suffix = String(chars[(end + 1)...])
            let padded = digits.count > 1 && digits.hasPrefix("0")
            if let last = items.last, var run = last, run.prefix == prefix, run.suffix == suffix,
                run.width == 0 ? !padded : digits.count == run.width
            {
                run.numbers.append(n)
                items[items.count - 1] = run
            } else {
                items.append(Run(prefix: prefix, suffix: suffix, width: padded ? digits.count : 0, numbers: [n]))
            }
        }
        return items.enumerated().map { i, run in run?.text ?? plain[i] ?? "" }.joined(separator: ",")
    }

    /// The host names a hostlist names, in order; nil when it is malformed or names more than `limit` hosts.
    public static func expand(_ list: String, limit: Int = 100_000) -> [String]? {
        var hosts: [String] = []
        for item in self.topLevelItems(list) where !item.isEmpty {
            guard let expanded = self.expandItem(item, limit: limit - hosts.count) else { return nil }
            hosts += expanded
        }
        return hosts
    }

    /// Splits at commas outside brackets.
    private static func topLevelItems(_ list: String) -> [String] {
        var items: [String] = []
        var current = ""
        var depth = 0
        for c in list {
            if c == "[" { depth += 1 } else if c == "]" { depth -= 1 }
            if c == "," && depth == 0 {
                items.append(current)
                current = ""
            } else {
                current.append(c)
            }
        }
        items.append(current)
        return items.map { String($0.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
    }

    /// One item, brackets possibly several (`rack[1-2]-gpu[01-04]`): the product, left to right.
    private static func expandItem(_ item: String, limit: Int) -> [String]? {
        guard let open = item.firstIndex(of: "[") else { return item.contains("]") ? nil : [item] }
        guard let close = item[open...].firstIndex(of: "]") else { return nil }
        let prefix = String(item[..<open])
        let body = item[item.index(after: open)..<close]
        guard let rest = self.expandItem(String(item[item.index(after: close)...]), limit: limit) else { return nil }
        var out: [String] = []
        for range in body.split(separator: ",", omittingEmptySubsequences: false) {
            let ends = range.split(separator: "-", omittingEmptySubsequences: false)
            guard ends.count == 1 || ends.count == 2, ends.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }),
                let low = Int(ends[0]), let high = Int(ends.last!), low <= high
            else { return nil }
            let width = ends[0].count
            for n in low...high {
                let s = String(n)
                let number = s.count < width ? String(repeating: "0", count: width - s.count) + s : s
                for r in rest {
                    out.append(prefix + number + r)
                    if out.count > limit { return nil }
                }
            }
        }
        return out
    }
}

/// One `srun` step of a batch job: what the agent of its first node reports and `allot jobs show` lists.
public struct StepStatus: Hashable, Codable, Sendable {
    public enum State: String, Codable, Sendable {
        case running, exited
    }
    public var jobID: Int64
    public var attempt: Int
    /// Slurm's step id: 0, 1, … in the order the script started them.
    public var step: Int
    /// The command, as srun was given it (at most 200 characters).
    public var command: String
    public var nodes: Int
    public var tasks: Int
    public var state: State
    /// The highest exit status of its tasks (128 + N for a signal), as srun returns it.
    public var exitCode: Int?
    public var startedAt: Date
    public var endedAt: Date?
    public init(
        jobID: Int64, attempt: Int, step: Int, command: String, nodes: Int, tasks: Int, state: State, exitCode: Int? = nil, startedAt: Date,
        endedAt: Date? = nil
    ) {
        self.jobID = jobID
        self.attempt = attempt
        self.step = step
        self.command = command
        self.nodes = nodes
        self.tasks = tasks
        self.state = state
        self.exitCode = exitCode
        self.startedAt = startedAt
        self.endedAt = endedAt
    }
}

/// The tasks of one step that one node runs (`POST /v1/steps/JOB/ATTEMPT/RANK`, from the agent of the job's
/// first node to the agent of rank RANK's, signed with the attempt's step key).
public struct StepTasks: Hashable, Codable, Sendable {
    public var step: Int
    public var argv: [String]
    /// The tasks' global ids (`SLURM_PROCID`); their local ids are their positions here.
    public var tasks: [Int]
    public var ntasks: Int
    public var nnodes: Int
    /// This node's place among the step's nodes (`SLURM_NODEID`).
    public var nodeID: Int
    public var nodelist: String
    public var tasksPerNode: String
    /// `--label`: each line of output starts with its task's id.
    public var label: Bool
    public var chdir: String?
    /// srun's environment as its shell exported it (`export -p`): the tasks start with it, as Slurm's.
    public var exports: String?
    public init(
        step: Int, argv: [String], tasks: [Int], ntasks: Int, nnodes: Int, nodeID: Int, nodelist: String, tasksPerNode: String, label: Bool,
        chdir: String? = nil, exports: String? = nil
    ) {
        self.exports = exports
        self.step = step
        self.argv = argv
        self.tasks = tasks
        self.ntasks = ntasks
        self.nnodes = nnodes
        self.nodeID = nodeID
        self.nodelist = nodelist
        self.tasksPerNode = tasksPerNode
        self.label = label
        self.chdir = chdir
    }
}

/// How one node's tasks of a step are doing, and their output from an offset on.
public struct StepProgress: Hashable, Codable, Sendable {
    public var ended: Bool
    /// The highest exit status of this node's tasks, once they all ended.
    public var exitCode: Int?
    public var output: Data
    public var nextOffset: Int
    public init(ended: Bool, exitCode: Int?, output: Data, nextOffset: Int) {
        self.ended = ended
        self.exitCode = exitCode
        self.output = output
        self.nextOffset = nextOffset
    }
}

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
    public static func parse(_ text: String) -> Result<JobArray, ArrayProblem> {
        var body = Substring(text)
        var limit: Int?
        if let percent = body.firstIndex(of: "%") {
            guard let l = Int(body[body.index(after: percent)...]), l >= 1 else {
                return .failure(ArrayProblem("the %limit must be a positive count"))
            }
            limit = l
            body = body[..<percent]
        }
        var indices: [Int] = []
        var seen = Set<Int>()
        for item in body.split(separator: ",", omittingEmptySubsequences: false) {
            let stepParts = item.split(separator: ":", omittingEmptySubsequences: false)
            guard stepParts.count <= 2 else { return .failure(ArrayProblem("'\(item.prefix(20))' is not N, N-M or N-M:STEP")) }
            var step = 1
            if stepParts.count == 2 {
                guard let s = Int(stepParts[1]), s >= 1 else {
                    return .failure(ArrayProblem("the step of '\(item.prefix(20))' must be a positive count"))
                }
                step = s
            }
            let ends = stepParts[0].split(separator: "-", omittingEmptySubsequences: false)
            guard ends.count <= 2, let low = Int(ends[0]), let high = Int(ends.last!), low >= 0, low <= high else {
                return .failure(ArrayProblem("'\(item.prefix(20))' is not N, N-M or N-M:STEP with 0 ≤ N ≤ M"))
            }
            guard high <= Self.maxIndex else { return .failure(ArrayProblem("indices go up to \(Self.maxIndex), not \(high)")) }
            guard (high - low) / step + 1 + indices.count <= Self.maxTasks else {
                return .failure(ArrayProblem("more than \(Self.maxTasks) tasks"))
            }
            for i in stride(from: low, through: high, by: step) where seen.insert(i).inserted { indices.append(i) }
        }
        guard !indices.isEmpty else { return .failure(ArrayProblem("names no task")) }
        return .success(JobArray(indices: indices.sorted(), limit: limit))
    }

    public struct ArrayProblem: Error, Sendable {
        public var message: String
        public init(_ message: String) { self.message = message }
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

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        switch Self.parse(text) {
        case .success(let a): self = a
        case .failure(let p): throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: p.message))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(self.description)
    }
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

    public static func parse(_ text: String) -> Result<JobDependency, JobArray.ArrayProblem> {
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

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        switch Self.parse(text) {
        case .success(let d): self = d
        case .failure(let p): throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: p.message))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(self.description)
    }

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
