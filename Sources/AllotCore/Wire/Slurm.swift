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

    public init(
        submitDir: String? = nil, tasksPerNode: Int = 1, cpusPerTask: Int? = nil, output: String? = nil, error: String? = nil,
        appendOutput: Bool = false, batchStep: Bool = false
    ) {
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
    public init(
        step: Int, argv: [String], tasks: [Int], ntasks: Int, nnodes: Int, nodeID: Int, nodelist: String, tasksPerNode: String, label: Bool,
        chdir: String? = nil
    ) {
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
