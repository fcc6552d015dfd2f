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

    /// Encoded in Slurm's own form (`B:USR1@90`), as people write it.
    public init(from decoder: any Decoder) throws {
        self = try SlurmText.decode(decoder) { JobSignal(slurm: $0).map { .success($0) } ?? .failure(.init("not [B:]SIG[@SECONDS]")) }
    }

    public func encode(to encoder: any Encoder) throws { try SlurmText.encode(self, to: encoder) }

    public var name: String { Self.names.first { $0.value == self.number }.map { "SIG" + $0.key } ?? "signal \(self.number)" }
    public var description: String {
        "\(self.batchOnly ? "B:" : "")\(self.name.hasPrefix("SIG") ? String(self.name.dropFirst(3)) : "\(self.number)")@\(self.secondsBefore)"
    }
}

/// Values people write in Slurm's text form (`USR1@90`, `0-99%8`, `afterok:12`) travel in it too: a JSON string
/// as they typed it, read back by the same parser.
public enum SlurmText {
    /// Why a text is not the value asked for.
    public struct Problem: Error, Sendable {
        public var message: String
        public init(_ message: String) { self.message = message }
    }

    public static func decode<T>(_ decoder: any Decoder, _ read: (String) -> Result<T, Problem>) throws -> T {
        let text = try decoder.singleValueContainer().decode(String.self)
        switch read(text) {
        case .success(let value): return value
        case .failure(let p):
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(p.message): \(text.prefix(40))"))
        }
    }

    public static func encode(_ value: some CustomStringConvertible, to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value.description)
    }
}
