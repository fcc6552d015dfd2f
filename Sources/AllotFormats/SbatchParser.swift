public import AllotCore
import Foundation

/// Reads a Slurm batch script's `#SBATCH` directives into a `JobSpec`, by Slurm's own rules (`man sbatch`):
/// directives are read from the top of the script and stop at its first line that is neither blank nor a
/// comment; each directive line may carry several options, `--opt=value`, `--opt value`, `-X value` or `-Xvalue`,
/// quoted or not, and ends at a `#` that starts a word. The script itself is the command.
///
/// Mapping: `-J` name, `-N` nodes, `--gres=gpu[:type]:N` and `--gpus-per-node` per node, `-G/--gpus` in total,
/// `-t` time limit (every Slurm form; bare minutes), `-p` pool, `-A` organisation (`org/project` also sets the
/// project), `-q` priority class, `-c` × tasks per node → CPUs per node, `--mem` (MB by default, `0` = the whole
/// node's), `--mem-per-gpu`, `--mem-per-cpu`, `--exclusive`, `-D` working directory. Anything else is reported
/// as a warning, never dropped silently; job arrays and dependencies, which would change what runs when, are errors.
public enum SbatchParser {
    public struct Parsed: Sendable {
        public var spec: JobSpec
        public var warnings: [String]
    }

    /// Whether a file is a batch script rather than a YAML/JSON spec.
    public static func isBatchScript(_ text: String) -> Bool {
        text.hasPrefix("#!") || text.split(separator: "\n", omittingEmptySubsequences: false).prefix(200).contains { $0.hasPrefix("#SBATCH") }
    }

    /// Options that take a value, by long name, with their one-letter forms.
    static let valued: [String: Character?] = [
        "job-name": "J", "nodes": "N", "gres": nil, "gpus-per-node": nil, "gpus": "G", "time": "t", "partition": "p", "account": "A",
        "qos": "q", "cpus-per-task": "c", "ntasks-per-node": nil, "ntasks": "n", "mem": nil, "mem-per-gpu": nil, "mem-per-cpu": nil,
        "chdir": "D", "output": "o", "error": "e", "input": "i", "mail-type": nil, "mail-user": nil, "constraint": "C", "dependency": "d",
        "array": "a", "time-min": nil, "signal": nil, "export": nil, "nodelist": "w", "exclude": "x", "begin": "b", "gpus-per-task": nil,
        "cpus-per-gpu": nil, "reservation": nil, "comment": nil, "licenses": "L", "distribution": "m", "gpu-bind": nil, "cpu-bind": nil,
        "mincpus": nil, "tmp": nil, "priority": nil, "nice": nil, "wckey": nil, "open-mode": nil, "cluster": "M", "clusters": nil,
        "deadline": nil, "propagate": nil, "sockets-per-node": nil, "cores-per-socket": nil, "threads-per-core": nil, "hint": nil,
        "switches": nil, "network": nil, "uid": nil, "gid": nil, "kill-on-invalid-dep": nil, "mcs-label": nil, "ntasks-per-gpu": nil,
        "tres-per-task": nil, "gres-flags": nil, "mem-bind": nil, "profile": nil, "acctg-freq": nil, "core-spec": "S", "thread-spec": nil,
        "container": nil, "batch": nil, "bb": nil, "bbf": nil, "burst-buffer": nil, "extra": nil, "container-image": nil,
    ]
    /// Options that take no value.
    static let flags: [String: Character?] = [
        "exclusive": nil, "requeue": nil, "no-requeue": nil, "hold": "H", "overcommit": "O", "contiguous": nil, "wait": "W",
        "verbose": "v", "quiet": "Q", "parsable": nil, "test-only": nil, "oversubscribe": "s", "spread-job": nil, "use-min-nodes": nil,
        "get-user-env": nil, "no-kill": "k", "ignore-pbs": nil, "reboot": nil,
    ]
    /// Options whose value is optional (`--exclusive` or `--exclusive=user`).
    static let optionalValue: Set<String> = ["exclusive", "get-user-env", "no-kill", "requeue"]

    /// The options that shape the job.
    static let actedOn: Set<String> = [
        "job-name", "nodes", "gres", "gpus-per-node", "gpus", "time", "partition", "account", "qos", "cpus-per-task", "ntasks-per-node",
        "ntasks", "mem", "mem-per-gpu", "mem-per-cpu", "chdir", "exclusive", "array", "dependency", "container-image",
    ]

    /// What we do not act on, and why the user should know.
    static let notActedOn: [String: String] = [
        "output": "output goes to the job's log (allot logs ID)", "error": "output goes to the job's log (allot logs ID)",
        "input": "jobs read no standard input", "mail-type": "Allot sends no mail", "mail-user": "Allot sends no mail",
        "constraint": "node features are not matched; use gpuModel or the pool",
        "nodelist": "nodes are chosen by the scheduler", "exclude": "nodes are chosen by the scheduler",
        "requeue": "jobs are requeued after infrastructure failures up to maxAttempts",
        "no-requeue": "jobs are requeued after infrastructure failures up to maxAttempts",
        "export": "the job runs with the agent's environment and the job's env", "signal": "jobs get SIGTERM and the grace period before their end",
    ]

    public static func parse(_ text: String, file: String? = nil) throws(FormatErrors) -> Parsed {
        var issues: [FormatIssue] = []
        var warnings: [String] = []
        var options: [(name: String, value: String?, line: Int)] = []
        var directivesOpen = true
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = i + 1
            let trimmed = raw.trimmingCharacters(in: .whitespaces)
            if raw.hasPrefix("#SBATCH") {
                guard directivesOpen else {
                    warnings.append("line \(line): #SBATCH after the script's first command is ignored, as Slurm does")
                    continue
                }
                let rest = raw.dropFirst("#SBATCH".count)
                guard rest.isEmpty || rest.first == " " || rest.first == "\t" else {
                    warnings.append("line \(line): '\(raw.prefix(20))…' is not a directive (no space after #SBATCH)")
                    continue
                }
                switch self.options(in: String(rest), line: line) {
                case .success(let found): options += found
                case .failure(let issue): issues.append(FormatIssue(file: file, line: line, field: issue.field, message: issue.message))
                }
                continue
            }
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            directivesOpen = false
        }

        var values: [String: (String?, Int)] = [:]
        for o in options {
            if let previous = values[o.name], previous.0 != o.value {
                warnings.append("line \(o.line): --\(o.name) given again; the later value wins, as in Slurm")
            }
            values[o.name] = (o.value, o.line)
        }
        func issue(_ name: String, _ message: String) {
            issues.append(FormatIssue(file: file, line: values[name]?.1, field: "--\(name)", message: message))
        }
        func value(_ name: String) -> String? { values[name]?.0 ?? nil }

        for name in values.keys.sorted() {
            let line = values[name]!.1
            if let why = self.notActedOn[name] {
                warnings.append("line \(line): --\(name) is not acted on: \(why)")
            } else if name.hasPrefix("-") {
                warnings.append("line \(line): unknown directive \(name): ignored")
            } else if self.valued[name] == nil && self.flags[name] == nil {
                warnings.append("line \(line): unknown directive --\(name): ignored")
            } else if !self.actedOn.contains(name) {
                warnings.append("line \(line): --\(name) is not acted on by Allot: ignored")
            }
        }
        for name in ["array", "dependency"] where values[name] != nil {
            issue(name, name == "array" ? "job arrays are not supported: submit one job per task" : "job dependencies are not supported yet")
        }

        // Nodes: N, or min-max (the minimum is asked for).
        var nodes = 1
        if let n = value("nodes") {
            let parts = n.split(separator: "-").map { Int($0) }
            if let first = parts.first, let min = first, min >= 1, min <= 4096, parts.count <= 2, parts.allSatisfy({ $0 != nil }) {
                nodes = min
                if parts.count == 2 { warnings.append("line \(values["nodes"]!.1): --nodes=\(n): a range; \(min) nodes are asked for") }
            } else {
                issue("nodes", "must be a count or min-max, not '\(n)'")
            }
        }

        // GPUs, per node, from whichever of --gres, --gpus-per-node, --gpus was given.
        var models: [String] = []
        var perNode: [(String, Int)] = []
        if let gres = value("gres") {
            var found = false
            for item in gres.split(separator: ",") {
                let parts = item.split(separator: ":").map(String.init)
                guard parts.first == "gpu" else {
                    warnings.append("line \(values["gres"]!.1): --gres=\(item): only GPUs are scheduled; ignored")
                    continue
                }
                found = true
                switch parts.count {
                case 1: perNode.append(("gres", 1))
                case 2:
                    if let n = Int(parts[1]) {
                        perNode.append(("gres", n))
                    } else {
                        models.append(parts[1].uppercased())
                        perNode.append(("gres", 1))
                    }
                default:
                    models.append(parts[1].uppercased())
                    if let n = Int(parts[2].split(separator: "(").first ?? "") {
                        perNode.append(("gres", n))
                    } else {
                        issue("gres", "'\(item)': the count must be a number")
                    }
                }
            }
            if !found && perNode.isEmpty { perNode.append(("gres", 0)) }
        }
        for name in ["gpus-per-node", "gpus"] {
            guard let v = value(name) else { continue }
            let parts = v.split(separator: ":").map(String.init)
            guard let n = parts.last.flatMap({ Int($0) }), n >= 0, parts.count <= 2 else {
                issue(name, "must be [type:]count, not '\(v)'")
                continue
            }
            if parts.count == 2 { models.append(parts[0].uppercased()) }
            if name == "gpus" {
                guard n % nodes == 0 else {
                    issue(name, "\(n) GPUs cannot be spread evenly over \(nodes) nodes")
                    continue
                }
                perNode.append((name, n / nodes))
            } else {
                perNode.append((name, n))
            }
        }
        let gpus = perNode.first?.1 ?? 0
        if Set(perNode.map(\.1)).count > 1 {
            issue(perNode[1].0, "asks \(perNode[1].1) GPUs per node where --\(perNode[0].0) asks \(perNode[0].1)")
        }
        if gpus > 64 { issue(perNode.first!.0, "\(gpus) GPUs per node is more than any node has") }
        models = Array(NSOrderedSet(array: models)) as? [String] ?? models

        // Time.
        var timeLimit: Int64?
        if let t = value("time") {
            if ["unlimited", "infinite"].contains(t.lowercased()) {
                timeLimit = nil
            } else if let s = Units.durationSeconds(t), s > 0 {
                timeLimit = s
            } else {
                issue("time", "must be minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, not '\(t)'")
            }
        }

        // CPUs per node: cpus-per-task × tasks per node.
        var tasksPerNode = 1
        if let t = value("ntasks-per-node") {
            if let n = Int(t), n >= 1 { tasksPerNode = n } else { issue("ntasks-per-node", "must be a positive count, not '\(t)'") }
        } else if let t = value("ntasks") {
            if let n = Int(t), n >= 1 { tasksPerNode = (n + nodes - 1) / nodes } else { issue("ntasks", "must be a positive count, not '\(t)'") }
        }
        var cpusPerTask = 1
        if let c = value("cpus-per-task") {
            if let n = Int(c), n >= 1 { cpusPerTask = n } else { issue("cpus-per-task", "must be a positive count, not '\(c)'") }
        }
        let cpus = value("cpus-per-task") != nil || value("ntasks-per-node") != nil || value("ntasks") != nil ? cpusPerTask * tasksPerNode : 0

        // Memory: MB by default, binary suffixes in either case; --mem=0 means all of each node's.
        var memory = 0
        var allMemory = false
        let memoryOptions = ["mem", "mem-per-gpu", "mem-per-cpu"].filter { values[$0] != nil }
        if memoryOptions.count > 1 { issue(memoryOptions[1], "--mem, --mem-per-gpu and --mem-per-cpu exclude one another") }
        if let m = memoryOptions.first, let v = value(m) {
            if let mib = Units.mebibytes(v) {
                switch m {
                case "mem":
                    if mib == 0 { allMemory = true } else { memory = mib }
                case "mem-per-gpu": memory = mib * max(gpus, 1)
                default: memory = mib * max(cpus, 1)
                }
            } else {
                issue(m, "must be a size in MB, or with a K, M, G or T suffix, not '\(v)'")
            }
        }

        var org: String?
        var project: String?
        if let a = value("account") {
            let parts = a.split(whereSeparator: { $0 == "/" || $0 == ":" }).map(String.init)
            org = parts.first
            project = parts.count > 1 ? parts[1] : nil
        }
        var pool = value("partition")
        if let p = pool, p.contains(",") {
            pool = String(p.split(separator: ",")[0])
            warnings.append("line \(values["partition"]!.1): several partitions; the first, \(pool!), is used as the pool")
        }
        if pool == nil { issue("partition", "is required: the pool to run in (#SBATCH -p POOL)") }

        var name = value("job-name") ?? file.map { URL(fileURLWithPath: $0).deletingPathExtension().lastPathComponent } ?? "batch"
        let cleaned = String(name.map { $0.isLetter || $0.isNumber || "-_.".contains($0) ? $0 : "-" }.prefix(63))
        if cleaned != name {
            warnings.append("job name '\(name)' becomes '\(cleaned)' (letters, digits, '-', '_', '.')")
            name = cleaned.isEmpty ? "batch" : cleaned
        }
        var workingDir = value("chdir")
        if let w = workingDir, !w.hasPrefix("/") {
            issue("chdir", "must be an absolute path on the nodes, not '\(w)'")
            workingDir = nil
        }
        let exclusive = values["exclusive"] != nil
        if let e = value("exclusive"), e != "" {
            warnings.append("line \(values["exclusive"]!.1): --exclusive=\(e): whole nodes are given to the job alone")
        }

        // Pyxis' option: the ranks' root filesystem comes from this image.
        let image = value("container-image")
        if let i = image, let why = ImageReference.problem(i) { issue("container-image", why) }

        guard issues.isEmpty, let pool else { throw FormatErrors(issues) }
        let spec = JobSpec(
            name: name, org: org, project: project, kind: .training, pool: pool, gpuModel: models, nodes: nodes, gpusPerNode: gpus,
            cpuMilliPerNode: cpus * 1000, memoryMiBPerNode: memory, priorityClass: value("qos"), timeLimitSeconds: timeLimit,
            command: text, workingDir: workingDir, exclusive: exclusive, wholeNodeMemory: allMemory, image: image)
        return Parsed(spec: spec, warnings: warnings)
    }

    private struct LineIssue: Error {
        var field: String
        var message: String
    }

    /// The options of one directive line.
    private static func options(in text: String, line: Int) -> Result<[(name: String, value: String?, line: Int)], LineIssue> {
        let words: [String]
        switch self.words(text) {
        case .success(let w): words = w
        case .failure(let e): return .failure(e)
        }
        var out: [(name: String, value: String?, line: Int)] = []
        var i = 0
        while i < words.count {
            let word = words[i]
            i += 1
            if word.hasPrefix("--") {
                let body = word.dropFirst(2)
                let name = String(body.split(separator: "=", maxSplits: 1).first ?? "")
                let inline = body.contains("=") ? String(body.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[1]) : nil
                if self.valued[name] != nil {
                    if let inline {
                        out.append((name, inline, line))
                    } else if i < words.count {
                        out.append((name, words[i], line))
                        i += 1
                    } else {
                        return .failure(LineIssue(field: "--\(name)", message: "needs a value"))
                    }
                } else if self.flags[name] != nil {
                    out.append((name, inline ?? (self.optionalValue.contains(name) ? "" : nil), line))
                } else {
                    out.append((name, inline, line))  // unknown: reported as a warning by the caller
                }
            } else if word.hasPrefix("-"), word.count >= 2 {
                let letter = word[word.index(after: word.startIndex)]
                let attached = String(word.dropFirst(2))
                if let name = self.valued.first(where: { $0.value == letter })?.key {
                    if !attached.isEmpty {
                        out.append((name, attached.hasPrefix("=") ? String(attached.dropFirst()) : attached, line))
                    } else if i < words.count {
                        out.append((name, words[i], line))
                        i += 1
                    } else {
                        return .failure(LineIssue(field: "-\(letter)", message: "needs a value"))
                    }
                } else if let name = self.flags.first(where: { $0.value == letter })?.key {
                    out.append((name, nil, line))
                } else {
                    out.append(("-\(letter)", attached.isEmpty ? nil : attached, line))
                }
            } else {
                return .failure(LineIssue(field: word, message: "is not an option (options start with - or --)"))
            }
        }
        return .success(out)
    }

    /// Splits a directive line into words: single and double quotes group, a word starting with `#` ends the line.
    private static func words(_ text: String) -> Result<[String], LineIssue> {
        var words: [String] = []
        var current = ""
        var inWord = false
        var quote: Character?
        for ch in text {
            if let q = quote {
                if ch == q { quote = nil } else { current.append(ch) }
                continue
            }
            if ch == "'" || ch == "\"" {
                quote = ch
                inWord = true
            } else if ch == " " || ch == "\t" {
                if inWord { words.append(current) }
                current = ""
                inWord = false
            } else if ch == "#" && !inWord {
                break
            } else {
                current.append(ch)
                inWord = true
            }
        }
        if quote != nil { return .failure(LineIssue(field: "", message: "unclosed quote")) }
        if inWord { words.append(current) }
        return .success(words)
    }
}
