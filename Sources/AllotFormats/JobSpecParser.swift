public import AllotCore
import Foundation
import Yams

/// Reads a job spec (YAML or JSON, SPEC §3/§6) into a validated `JobSpec`, reporting every bad field.
///
/// People write `timeLimit: 2h`, `memoryPerNode: 64G`, `cpusPerNode: 8`; the normalized keys that `JobSpec`
/// encodes to (`timeLimitSeconds`, `memoryMiBPerNode`, `cpuMilliPerNode`) are accepted too, so a dry-run's
/// output can be submitted as it is.
public enum JobSpecParser {
    static let fields: Set<String> = [
        "name", "org", "project", "kind", "pool", "gpuModel", "nodes", "gpusPerNode", "gpuMilli", "cpusPerNode",
        "cpuMilliPerNode", "memoryPerNode", "memoryMiBPerNode", "priorityClass", "timeLimit", "timeLimitSeconds",
        "command", "env", "workingDir", "maxAttempts", "replicas", "exclusive", "wholeNodeMemory", "image",
        "signal", "timeMin", "timeMinSeconds", "slurm", "batchStep", "array", "dependency", "hold", "beginAt", "movable",
        "migProfile", "gpuMemory", "gpuMemoryMiB",
    ]
    static let slurmFields: Set<String> = ["submitDir", "tasksPerNode", "cpusPerTask", "output", "error", "appendOutput", "batchStep", "ntasks"]

    public static func parse(_ text: String, file: String? = nil) throws(FormatErrors) -> JobSpec {
        let reader = FieldReader(file: file)
        guard let root = reader.compose(text) else {
            if reader.issues.isEmpty { throw FormatErrors([FormatIssue(file: file, field: "", message: "the job spec is empty")]) }
            throw reader.errors
        }
        guard let f = reader.mapping(root, "", allowed: self.fields) else { throw reader.errors }
        let spec = self.read(f, reader: reader)
        if let spec, reader.issues.isEmpty { return spec }
        throw reader.errors
    }

    private static func read(_ f: Fields, reader: FieldReader) -> JobSpec? {
        let name = f.has("name") ? self.jobName(f, reader: reader) : "job"
        let org = f.name("org")
        let project = f.name("project")
        let pool = f.name("pool")
        var kind = JobKind.training
        if let k = f.string("kind") {
            if let parsed = JobKind(rawValue: k.lowercased()) {
                kind = parsed
            } else {
                reader.error(f.values["kind"], "kind", "must be training or inference, not '\(k)'")
            }
        }
        let models = f.stringList("gpuModel") ?? []
        var nodes = f.int("nodes", in: 1...4096) ?? 1
        var gpus = f.int("gpusPerNode", in: 0...64) ?? 0
        let milli = f.int("gpuMilli", in: 1...999)
        if milli != nil {
            if gpus > 1 {
                reader.error(f.values["gpusPerNode"], "gpuMilli", "a fraction of a GPU needs gpusPerNode 0 or 1, not \(gpus)")
            }
            gpus = 0
        }
        // An inference service's replicas are placed like a gang's ranks: together, each on a node of its own
        // (spread, as SPEC §4 asks), a fractional one on a GPU already shared where one has room.
        if f.has("replicas"), let r = f.int("replicas", in: 1...4096) {
            if kind != .inference && r > 1 {
                reader.error(f.values["replicas"], "replicas", "only inference services have replicas; a training job across nodes sets nodes")
            } else if f.has("nodes") && nodes > 1 && r > 1 {
                reader.error(f.values["replicas"], "replicas", "each replica runs on one node: give replicas or nodes, not both")
            } else {
                nodes = max(nodes, r)
            }
        }
        // A MIG profile: gpusPerNode counts MIG devices of it (one when not given), never a fraction.
        var migProfile: String?
        if let p = f.string("migProfile") {
            if !MIGProfile.isProfile(p) {
                reader.error(f.values["migProfile"], "migProfile", "must be a MIG profile like 1g.10gb, 3g.40gb or 1g.18gb, not '\(p.prefix(40))'")
            } else if milli != nil {
                reader.error(f.values["migProfile"], "migProfile", "asks MIG devices: leave gpuMilli out (a MIG device is not shared)")
            } else {
                migProfile = p.lowercased()
                if !f.has("gpusPerNode") { gpus = 1 }
                if gpus == 0 { reader.error(f.values["gpusPerNode"], "gpusPerNode", "counts MIG devices of \(p): at least 1") }
            }
        }
        let gpuMemory = self.size(f, "gpuMemory", orMiB: "gpuMemoryMiB", in: 1...(1 << 24), reader: reader)
        if gpuMemory == 0 { reader.error(f.values["gpuMemory"], "gpuMemory", "must be more than 0") }
        if gpuMemory != nil && gpus == 0 && milli == nil {
            reader.error(f.values["gpuMemory"] ?? f.values["gpuMemoryMiB"], "gpuMemory", "is per GPU: the job asks no GPU (set gpusPerNode)")
        }
        var cpuMilli = 0
        if f.has("cpusPerNode") && f.has("cpuMilliPerNode") {
            reader.error(f.node, "cpusPerNode", "give either cpusPerNode or cpuMilliPerNode, not both")
        } else if let cpus = f.double("cpusPerNode", in: 0...4096) {
            cpuMilli = Int((cpus * 1000).rounded(.up))
        } else if let m = f.int("cpuMilliPerNode", in: 0...4_096_000) {
            cpuMilli = m
        }
        let memory = self.size(f, "memoryPerNode", orMiB: "memoryMiBPerNode", in: 0...(1 << 40), reader: reader) ?? 0
        var timeLimit: Int64?
        if f.has("timeLimit") && f.has("timeLimitSeconds") {
            reader.error(f.node, "timeLimit", "give either timeLimit or timeLimitSeconds, not both")
        } else if f.has("timeLimit") {
            timeLimit = f.duration("timeLimit")
        } else if let s = f.int("timeLimitSeconds", in: 1...(366 * 86400)) {
            timeLimit = Int64(s)
        }
        let command = self.command(f, reader: reader)
        let env = f.stringMap("env") ?? [:]
        for key in env.keys.sorted() where !self.isEnvName(key) {
            reader.error(f.values["env"], "env.\(key)", "must be a variable name: letters, digits and '_', not starting with a digit")
        }
        let workingDir = f.string("workingDir")
        if let w = workingDir, !w.hasPrefix("/") {
            reader.error(f.values["workingDir"], "workingDir", "must be an absolute path, not '\(w)'")
        }
        let maxAttempts = f.int("maxAttempts", in: 1...100) ?? 3
        let exclusive = f.bool("exclusive") ?? false
        let wholeNodeMemory = f.bool("wholeNodeMemory") ?? false
        if wholeNodeMemory && memory > 0 {
            reader.error(f.values["wholeNodeMemory"], "wholeNodeMemory", "asks for all of each node's memory: leave memoryPerNode out")
        }
        let priorityClass = f.name("priorityClass")
        let image = f.string("image")
        if let i = image, let why = ImageReference.problem(i) { reader.error(f.values["image"], "image", why) }
        var signal: JobSignal?
        if let text = f.string("signal") {
            signal = JobSignal(slurm: text)
            if signal == nil {
                reader.error(f.values["signal"], "signal", "must be [B:]SIGNAL[@SECONDS] (USR1@90, B:TERM@30), not '\(text.prefix(40))'")
            }
        }
        var timeMin: Int64?
        if f.has("timeMin") && f.has("timeMinSeconds") {
            reader.error(f.node, "timeMin", "give either timeMin or timeMinSeconds, not both")
        } else if f.has("timeMin") {
            timeMin = f.duration("timeMin")
        } else if let s = f.int("timeMinSeconds", in: 1...(366 * 86400)) {
            timeMin = Int64(s)
        }
        if let timeMin, let timeLimit, timeMin > timeLimit {
            reader.error(f.values["timeMin"] ?? f.values["timeMinSeconds"], "timeMin", "is longer than the time limit (\(timeLimit)s)")
        }
        var slurm = f.has("slurm") ? self.slurm(f, reader: reader) : nil
        // `batchStep: true`: the command runs once, on the first node, and srun in it runs steps (as a batch script).
        if f.bool("batchStep") == true {
            if kind == .inference {
                reader.error(f.values["batchStep"], "batchStep", "is for training jobs; an inference service's replicas each run the command")
            }
            slurm = slurm ?? SlurmOptions()
            slurm?.batchStep = true
        }
        var array: JobArray?
        if let text = f.string("array") {
            switch JobArray.parse(text) {
            case .success(let a): array = a
            case .failure(let p): reader.error(f.values["array"], "array", "\(p.message) (0-99%8, 1,3,5 or 0-20:2)")
            }
            if kind == .inference { reader.error(f.values["array"], "array", "is for training jobs") }
        }
        var dependency: JobDependency?
        if let text = f.string("dependency") {
            switch JobDependency.parse(text) {
            case .success(let d): dependency = d
            case .failure(let p): reader.error(f.values["dependency"], "dependency", p.message)
            }
        }
        let hold = f.bool("hold")
        let movable = f.bool("movable")
        var beginAt: Date?
        if let b = f.string("beginAt") {
            beginAt = WireJSON.date(b)
            if beginAt == nil {
                reader.error(f.values["beginAt"], "beginAt", "must be a time in ISO 8601 (2026-12-24T18:00:00Z), not '\(b.prefix(40))'")
            }
        }
        guard let name, let command, reader.issues.isEmpty else { return nil }
        return JobSpec(
            name: name, org: org, project: project, kind: kind, pool: pool, gpuModel: models, nodes: nodes, gpusPerNode: gpus,
            gpuMilli: milli, cpuMilliPerNode: cpuMilli, memoryMiBPerNode: memory, priorityClass: priorityClass,
            timeLimitSeconds: timeLimit, command: command, env: env, workingDir: workingDir, maxAttempts: maxAttempts,
            exclusive: exclusive, wholeNodeMemory: wholeNodeMemory, image: image, signal: signal, timeMinSeconds: timeMin, slurm: slurm,
            array: array, dependency: dependency, hold: hold == true ? true : nil, beginAt: beginAt,
            movable: movable == true ? true : nil, migProfile: migProfile, gpuMemoryMiB: gpuMemory)
    }

    /// A job's name is kept as given (Slurm's are free text, spaces included): at most 200 characters, none of
    /// them a control character.
    private static func jobName(_ f: Fields, reader: FieldReader) -> String? {
        guard let s = f.string("name") else { return nil }
        if s.isEmpty || s.count > 200 || s.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) }) {
            reader.error(f.values["name"], "name", "must be 1 to 200 characters, none of them a control character")
            return nil
        }
        return s
    }

    /// What a batch script keeps of Slurm's options (`slurm:`, written by the CLI from `#SBATCH` lines).
    private static func slurm(_ f: Fields, reader: FieldReader) -> SlurmOptions? {
        guard let m = reader.mapping(f.node("slurm"), "slurm", allowed: self.slurmFields) else { return nil }
        var options = SlurmOptions()
        for key in ["submitDir", "output", "error"] {
            guard let path = m.string(key) else { continue }
            if !path.hasPrefix("/") || path.utf8.count > 4096 || path.contains("\0") || path.contains("\n") {
                reader.error(m.values[key], "slurm.\(key)", "must be an absolute path of at most 4096 bytes, not '\(path.prefix(64))'")
                continue
            }
            switch key {
            case "submitDir": options.submitDir = path
            case "output": options.output = path
            default: options.error = path
            }
        }
        options.tasksPerNode = m.int("tasksPerNode", in: 1...4096) ?? 1
        options.cpusPerTask = m.int("cpusPerTask", in: 1...4096)
        options.appendOutput = m.bool("appendOutput") ?? false
        options.batchStep = m.bool("batchStep") ?? false
        options.ntasks = m.int("ntasks", in: 1...1_000_000)
        return options
    }

    /// `PATCH /v1/jobs/ID`'s body: `name`, `timeLimit` (or `timeLimitSeconds`), `priorityClass`; at least one.
    public static func parseUpdate(_ text: String) throws(FormatErrors) -> JobUpdate {
        let reader = FieldReader(file: nil)
        guard let root = reader.compose(text), let f = reader.mapping(root, "", allowed: ["name", "timeLimit", "timeLimitSeconds", "priorityClass"])
        else {
            if reader.issues.isEmpty { throw FormatErrors([FormatIssue(file: nil, field: "", message: "give name, timeLimit or priorityClass")]) }
            throw reader.errors
        }
        var update = JobUpdate()
        if f.has("name") { update.name = self.jobName(f, reader: reader) }
        if f.has("timeLimit") && f.has("timeLimitSeconds") {
            reader.error(f.node, "timeLimit", "give either timeLimit or timeLimitSeconds, not both")
        } else if f.has("timeLimit") {
            update.timeLimitSeconds = f.duration("timeLimit")
        } else if let s = f.int("timeLimitSeconds", in: 1...(366 * 86400)) {
            update.timeLimitSeconds = Int64(s)
        }
        update.priorityClass = f.name("priorityClass")
        if update == JobUpdate() && reader.issues.isEmpty { reader.error(f.node, "", "give name, timeLimit or priorityClass") }
        guard reader.issues.isEmpty else { throw reader.errors }
        return update
    }

    /// The command: one shell line (or script), or a list of arguments that is quoted into one.
    /// A size in people's units (`64G`) under `key`, or in MiB under `mibKey` (what a dry run prints): one, not both.
    private static func size(_ f: Fields, _ key: String, orMiB mibKey: String, in range: ClosedRange<Int>, reader: FieldReader) -> Int? {
        if f.has(key) && f.has(mibKey) {
            reader.error(f.node, key, "give either \(key) or \(mibKey), not both")
            return nil
        }
        return f.mebibytes(key) ?? f.int(mibKey, in: range)
    }

    private static func command(_ f: Fields, reader: FieldReader) -> String? {
        guard let node = f.values["command"], !Fields.isNull(node) else {
            reader.error(f.node, "command", "is required")
            return nil
        }
        if case .sequence = node {
            guard let args = f.stringList("command"), !args.isEmpty else {
                reader.error(node, "command", "must not be empty")
                return nil
            }
            return args.map(self.shellQuote).joined(separator: " ")
        }
        guard let s = f.string("command") else { return nil }
        if s.utf8.count > 1 << 20 {
            reader.error(node, "command", "must be at most 1 MiB")
            return nil
        }
        return s
    }

    static func isEnvName(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, !CharacterSet.decimalDigits.contains(first) else { return false }
        return s.unicodeScalars.allSatisfy { ($0.isASCII && CharacterSet.alphanumerics.contains($0)) || $0 == "_" }
    }

    /// Quotes one argument for `/bin/sh` unless it needs none.
    public static func shellQuote(_ s: String) -> String { ShellWord.quote(s) }

    /// The spec as pretty JSON with sorted keys: what `--dry-run` prints and what the CLI sends.
    public static func json(_ spec: JobSpec) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return String(decoding: (try? encoder.encode(spec)) ?? Data(), as: UTF8.self)
    }
}
