public import AllotCore
public import Foundation

/// Reads a Slurm batch script's `#SBATCH` directives into a `JobSpec`, by Slurm's own rules (`man sbatch`):
/// directives are read from the top of the script and stop at its first line that is neither blank nor a
/// comment; each directive line may carry several options, `--opt=value`, `--opt value`, `-X value` or `-Xvalue`,
/// quoted or not, and ends at a `#` that starts a word. The script itself is the command.
///
/// The mapping, directive by directive, is README's "Batch scripts" table. Where Slurm has a default, Allot takes
/// Slurm's: no `-p` is the default pool (decided at submission), relative paths are the submit directory's, the
/// name is the script's file name, `--export=ALL` passes the submitting shell's variables. Anything not acted on
/// is reported as a warning saying what Allot does instead, never dropped silently; job arrays and dependencies,
/// which would change what runs when, are errors.
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
        "export-file": nil, "gpu-freq": nil, "cpu-freq": nil, "nodefile": "F", "ntasks-per-core": nil, "ntasks-per-socket": nil,
        "power": nil, "prefer": nil, "segment": nil, "tres-bind": nil, "tres-per-node": nil, "wrap": nil, "cluster-constraint": nil,
        "container-id": nil, "delay-boot": nil, "extra-node-info": "B", "gpus-per-socket": nil, "wait-all-nodes": nil, "mem-per-task": nil,
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
        "ntasks", "mem", "mem-per-gpu", "mem-per-cpu", "chdir", "exclusive", "array", "dependency", "container-image", "gpus-per-task",
        "cpus-per-gpu", "time-min", "signal", "requeue", "no-requeue", "open-mode", "export", "output", "error", "hold", "begin",
    ]

    /// What we do not act on, and what Allot does instead.
    static let notActedOn: [String: String] = [
        "input": "jobs read no standard input (it is /dev/null)", "mail-type": "Allot sends no mail; follow the job with allot jobs show",
        "mail-user": "Allot sends no mail; follow the job with allot jobs show", "mail": "Allot sends no mail",
        "constraint": "node features are not matched; the job runs on any node of the pool with its GPU model (--gres=gpu:TYPE:N)",
        "prefer": "node features are not matched; the job runs on any node of the pool",
        "nodelist": "nodes are chosen by the scheduler", "exclude": "nodes are chosen by the scheduler; drain a node to keep jobs off it",
        "nodefile": "nodes are chosen by the scheduler",

        "deadline": "the job is not cancelled at a deadline; its time limit (--time) bounds it",
        "reservation": "Allot has no reservations; guaranteed GPUs come from the organisation's allocation",
        "nice": "the order within a priority class is fair share, then submit time", "priority": "the priority comes from --qos (the priority class)",
        "distribution": "the job's processes are placed by the job itself", "cpu-bind": "CPUs are a quota (cgroup), not bound to cores",
        "mem-bind": "memory is a limit (cgroup), not bound to NUMA nodes", "gpu-bind": "each rank sees exactly its own GPUs",
        "hint": "CPUs are a quota, not bound to cores", "licenses": "Allot schedules no licenses",
        "cluster": "Allot schedules one cluster", "clusters": "Allot schedules one cluster", "wckey": "usage is recorded per org, project and user",
        "comment": "kept nowhere; name the job with -J", "profile": "GPU and job metrics are on /metrics",
        "acctg-freq": "usage is recorded per second on the ledger", "overcommit": "CPUs are reserved as asked",
        "oversubscribe": "GPUs are never shared unless a job asks for a fraction (gpuMilli)",
        "wait": "sbatch returns at once; follow the job with allot jobs show",
        "parsable": "allot submit --output json prints the job", "test-only": "use allot submit --dry-run", "get-user-env": "see --export",
        "export-file": "use --export=VAR=value", "kill-on-invalid-dep": "a dependency that can never be met always ends the job",
        "no-kill": "a gang ends together when a node is lost; it is requeued", "uid": "jobs run as the organisation's account (Policies/)",
        "gid": "jobs run as the organisation's account (Policies/)", "ntasks-per-gpu": "tasks are counted per node (--ntasks-per-node)",
        "tres-per-task": "use --gpus-per-task or --cpus-per-task", "switches": "gangs prefer nodes of one block by themselves",
        "wrap": "submit a script instead", "wait-all-nodes": "a gang's ranks start together once every node has taken them",
    ]

    /// Variables `--export=ALL` does not pass from the submitting shell: its session, its identity and what Allot
    /// itself sets in every rank (a rank runs as its organisation's account, in its own /work).
    static let sessionVariables: Set<String> = [
        "HOME", "USER", "LOGNAME", "MAIL", "SHELL", "PATH", "PWD", "OLDPWD", "SHLVL", "_", "TMPDIR", "HOSTNAME", "DISPLAY", "XAUTHORITY",
        "DBUS_SESSION_BUS_ADDRESS", "LS_COLORS", "TERM", "TERMCAP", "COLORTERM", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
        "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "NNODES", "NPROC_PER_NODE",
    ]
    static let sessionPrefixes = ["SSH_", "XDG_", "SLURM_", "ALLOT_", "PET_", "BASH_FUNC_", "SBATCH_", "SRUN_", "SALLOC_"]

    /// Reads a batch script submitted from `submitDir` (Slurm's `SLURM_SUBMIT_DIR`, against which relative paths
    /// resolve) by a shell with `environment` (what `--export` passes). `file` names the script in messages and
    /// is its default name.
    public static func parse(
        _ text: String, file: String? = nil, submitDir: String? = nil, environment: [String: String] = [:], now: Date = Date(),
        timeZone: TimeZone = .current
    ) throws(FormatErrors) -> Parsed {
        var text = text
        var dosWarning: String?
        if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
        if text.contains("\r\n") {
            // sbatch refuses DOS line ends; the script would fail on its first line (`$'\r': command not found`).
            text = text.replacingOccurrences(of: "\r\n", with: "\n")
            dosWarning = "the script has DOS line ends (CRLF): it is run with Unix ones (LF)"
        }
        var issues: [FormatIssue] = []
        var warnings: [String] = dosWarning.map { [$0] } ?? []
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
        var array: JobArray?
        if let a = value("array") {
            switch JobArray.parse(a) {
            case .success(let parsed): array = parsed
            case .failure(let p): issue("array", "\(p.message) (--array=0-99%8, 1,3,5 or 0-20:2)")
            }
        }
        var beginAt: Date?
        if let b = value("begin") {
            beginAt = Units.beginTime(b, now: now, timeZone: timeZone)
            if beginAt == nil {
                issue(
                    "begin",
                    "must be now+COUNT[minutes|hours|days|weeks], HH:MM[:SS], YYYY-MM-DD[THH:MM[:SS]], midnight, noon, teatime or tomorrow, not '\(b.prefix(40))'"
                )
            }
        }
        var dependency: JobDependency?
        if let d = value("dependency"), !d.isEmpty {
            switch JobDependency.parse(d) {
            case .success(let parsed): dependency = parsed
            case .failure(let p): issue("dependency", p.message)
            }
        }
        func line(_ name: String) -> Int { values[name]?.1 ?? 0 }

        // Nodes: N, or min-max (the minimum is asked for).
        var nodes = 1
        if let n = value("nodes") {
            let parts = n.split(separator: "-").map { Int($0) }
            if let first = parts.first, let min = first, min >= 1, min <= 4096, parts.count <= 2, parts.allSatisfy({ $0 != nil }) {
                nodes = min
                if parts.count == 2 { warnings.append("line \(line("nodes")): --nodes=\(n): a range; \(min) nodes are asked for") }
            } else {
                issue("nodes", "must be a count or min-max, not '\(n)'")
            }
        }

        // Tasks: --ntasks-per-node, else --ntasks spread over the nodes (rounded up, as Slurm fills nodes). Both, and
        // no --nodes: as many nodes as the tasks need, as Slurm allocates them.
        var tasksPerNode = 1
        var tasksGiven = false
        var totalTasks: Int?
        if let t = value("ntasks") {
            if let n = Int(t), (1...1_000_000).contains(n) { totalTasks = n } else { issue("ntasks", "must be a positive count, not '\(t)'") }
            tasksGiven = true
        }
        if let t = value("ntasks-per-node") {
            if let n = Int(t), (1...4096).contains(n) {
                tasksPerNode = n
                if let total = totalTasks, value("nodes") == nil { nodes = max(1, (total + n - 1) / n) }
            } else {
                issue("ntasks-per-node", "must be a count from 1 to 4096, not '\(t)'")
            }
            tasksGiven = true
        } else if let total = totalTasks {
            tasksPerNode = (total + nodes - 1) / nodes
        }
        if let total = totalTasks, total > tasksPerNode * nodes {
            issue("ntasks", "\(total) tasks do not fit \(nodes) nodes × \(tasksPerNode) tasks")
        }

        // GPUs, per node, from whichever of --gres, --gpus-per-node, --gpus, --gpus-per-task was given. A type is
        // any name a site gives its GPUs (`a100`, `h100-80gb`, `nvidia_h200`): matched to the pool's models at submission.
        var models: [String] = []
        var perNode: [(String, Int)] = []
        if let gres = value("gres") {
            var found = false
            for item in gres.split(separator: ",") {
                // gpu[:type][:count][(S:0-1)]; a count may carry a unit-less suffix only in Slurm's socket form.
                let parts = item.split(separator: "(").first.map { $0.split(separator: ":").map(String.init) } ?? []
                guard parts.first == "gpu" else {
                    warnings.append("line \(line("gres")): --gres=\(item): only GPUs are scheduled; ignored")
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
                    if let n = Int(parts[2]), n >= 0 {
                        perNode.append(("gres", n))
                    } else {
                        issue("gres", "'\(item)': the count must be a number")
                    }
                }
            }
            if !found && perNode.isEmpty { perNode.append(("gres", 0)) }
        }
        for name in ["gpus-per-node", "gpus", "gpus-per-task"] {
            guard let v = value(name) else { continue }
            // [type:]count, or several of them by type (`a100:2,v100:2`: the job may run on either).
            var count: Int?
            for item in v.split(separator: ",") {
                let parts = item.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
                guard let n = parts.last.flatMap({ Int($0) }), n >= 0, parts.count <= 2, !(parts.count == 2 && parts[0].isEmpty) else {
                    issue(name, "must be [type:]count, not '\(v.prefix(64))'")
                    count = nil
                    break
                }
                if parts.count == 2 { models.append(parts[0].uppercased()) }
                if let c = count, c != n { issue(name, "gives different counts by type ('\(v.prefix(64))'): give one count") }
                count = n
            }
            guard let n = count else { continue }
            switch name {
            case "gpus":
                guard n % nodes == 0 else {
                    issue(name, "\(n) GPUs cannot be spread evenly over \(nodes) nodes")
                    continue
                }
                perNode.append((name, n / nodes))
            case "gpus-per-task":
                if !tasksGiven {
                    warnings.append("line \(line(name)): --gpus-per-task without --ntasks or --ntasks-per-node: one task per node")
                }
                perNode.append((name, n * tasksPerNode))
            default:
                perNode.append((name, n))
            }
        }
        let gpus = perNode.first?.1 ?? 0
        if Set(perNode.map(\.1)).count > 1 {
            issue(perNode[1].0, "asks \(perNode[1].1) GPUs per node where --\(perNode[0].0) asks \(perNode[0].1)")
        }
        if gpus > 64 { issue(perNode.first!.0, "\(gpus) GPUs per node is more than any node has") }
        models = Array(NSOrderedSet(array: models)) as? [String] ?? models
        // A MIG type: `1g.10gb`, or as Slurm's NVML autodetection names it, `a100_3g.20gb` (model, then profile).
        var migProfiles: [String] = []
        models = models.compactMap { m in
            if MIGProfile.isProfile(m) {
                migProfiles.append(m.lowercased())
                return nil
            }
            if let cut = m.lastIndex(of: "_"), MIGProfile.isProfile(String(m[m.index(after: cut)...])) {
                migProfiles.append(m[m.index(after: cut)...].lowercased())
                return String(m[..<cut])
            }
            return m
        }
        migProfiles = Array(NSOrderedSet(array: migProfiles)) as? [String] ?? migProfiles
        if migProfiles.count > 1 {
            issue(perNode.first?.0 ?? "gres", "asks MIG devices of several profiles (\(migProfiles.joined(separator: ", "))): give one")
        }
        if !migProfiles.isEmpty && gpus == 0 { issue(perNode.first?.0 ?? "gres", "asks 0 MIG devices of \(migProfiles[0])") }

        // Time.
        func seconds(_ name: String) -> Int64? {
            guard let t = value(name) else { return nil }
            if ["unlimited", "infinite"].contains(t.lowercased()) { return nil }
            if let s = Units.durationSeconds(t), s > 0 { return s }
            issue(name, "must be minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, not '\(t.prefix(40))'")
            return nil
        }
        let timeLimit = seconds("time")
        var timeMin = seconds("time-min")
        if let m = timeMin, let t = timeLimit, m > t {
            warnings.append("line \(line("time-min")): --time-min is longer than --time; the job runs with --time")
            timeMin = nil
        }

        // CPUs per node: cpus-per-task × tasks per node, or cpus-per-gpu × GPUs per node.
        var cpusPerTask: Int?
        if let c = value("cpus-per-task") {
            if let n = Int(c), (1...4096).contains(n) {
                cpusPerTask = n
            } else {
                issue("cpus-per-task", "must be a count from 1 to 4096, not '\(c)'")
            }
        }
        var cpus = cpusPerTask.map { $0 * tasksPerNode } ?? (tasksGiven ? tasksPerNode : 0)
        if let c = value("cpus-per-gpu") {
            if cpusPerTask != nil {
                issue("cpus-per-gpu", "--cpus-per-gpu and --cpus-per-task exclude one another, as in Slurm")
            } else if let n = Int(c), (1...4096).contains(n) {
                cpus = n * max(gpus, 1)
            } else {
                issue("cpus-per-gpu", "must be a count from 1 to 4096, not '\(c)'")
            }
        }

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
                issue(m, "must be a size in MB, or with a K, M, G or T suffix, not '\(v.prefix(40))'")
            }
        }

        var org: String?
        var project: String?
        if let a = value("account") {
            let parts = a.split(whereSeparator: { $0 == "/" || $0 == ":" }).map(String.init)
            org = parts.first
            project = parts.count > 1 ? parts[1] : nil
        }
        // No partition: the default pool, chosen at submission (Policies/ defaults.pool, else the org's only pool).
        var pool = value("partition")
        if let p = pool, p.contains(",") {
            pool = String(p.split(separator: ",")[0])
            warnings.append("line \(line("partition")): several partitions; the first, \(pool!), is used as the pool")
        }

        // The name as given (Slurm's default: the script's file name; `sbatch` for standard input).
        var name = value("job-name") ?? file.flatMap { $0 == "-" ? nil : URL(fileURLWithPath: $0).lastPathComponent } ?? "sbatch"
        if name.isEmpty || name.count > 200 || name.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) }) {
            issue("job-name", "must be 1 to 200 characters, none of them a control character")
            name = "sbatch"
        }

        // Paths: relative ones are the submit directory's (--output/--error: the working directory's, as in Slurm).
        func absolute(_ path: String, against base: String?, _ option: String) -> String? {
            if path.hasPrefix("/") { return URL(fileURLWithPath: path).standardizedFileURL.path }
            guard let base else {
                issue(option, "'\(path.prefix(64))' is relative and the submit directory is not known: give an absolute path")
                return nil
            }
            return URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: base, isDirectory: true)).standardizedFileURL.path
        }
        var workingDir: String?
        if let w = value("chdir") { workingDir = absolute(w, against: submitDir, "chdir") }
        let outputBase = workingDir ?? submitDir
        let output = value("output").flatMap { absolute($0, against: outputBase, "output") }
        let error = value("error").flatMap { absolute($0, against: outputBase, "error") }
        var append = false
        if let mode = value("open-mode") {
            switch mode.lowercased() {
            case "append", "a": append = true
            case "truncate", "t": append = false
            default: issue("open-mode", "must be append or truncate, not '\(mode.prefix(20))'")
            }
        }

        let exclusive = values["exclusive"] != nil
        if let e = value("exclusive"), e != "" {
            warnings.append("line \(line("exclusive")): --exclusive=\(e): whole nodes are given to the job alone")
        }
        // --requeue is Allot's default (infrastructure failures and reclaims requeue); --no-requeue: never.
        var maxAttempts = 3
        if values["no-requeue"] != nil && values["requeue"] != nil {
            issue(line("no-requeue") > line("requeue") ? "no-requeue" : "requeue", "--requeue and --no-requeue exclude one another")
        } else if values["no-requeue"] != nil {
            maxAttempts = 1
        }
        var signal: JobSignal?
        if let v = value("signal") {
            signal = JobSignal(slurm: v)
            if signal == nil { issue("signal", "must be [{R|B}:]SIG[@SECONDS] (USR1@90, B:TERM@30), not '\(v.prefix(40))'") }
        }
        let env = self.exported(value("export"), environment: environment, line: line("export"), warnings: &warnings, issue: { issue("export", $0) })

        // Pyxis' option: the ranks' root filesystem comes from this image.
        let image = value("container-image")
        if let i = image, let why = ImageReference.problem(i) { issue("container-image", why) }

        guard issues.isEmpty else { throw FormatErrors(issues) }
        let spec = JobSpec(
            name: name, org: org, project: project, kind: .training, pool: pool, gpuModel: models, nodes: nodes, gpusPerNode: gpus,
            cpuMilliPerNode: cpus * 1000, memoryMiBPerNode: memory, priorityClass: value("qos"), timeLimitSeconds: timeLimit,
            command: text, env: env, workingDir: workingDir, maxAttempts: maxAttempts, exclusive: exclusive, wholeNodeMemory: allMemory,
            image: image, signal: signal, timeMinSeconds: timeMin,
            slurm: SlurmOptions(
                submitDir: submitDir, tasksPerNode: tasksPerNode, cpusPerTask: cpusPerTask, output: output, error: error, appendOutput: append,
                batchStep: true, ntasks: totalTasks),
            array: array, dependency: dependency, hold: values["hold"] != nil ? true : nil, beginAt: beginAt, migProfile: migProfiles.first)
        return Parsed(spec: spec, warnings: warnings)
    }

    /// What `--export` passes from the submitting shell: `ALL` (Slurm's default) every variable but the
    /// session's (`sessionVariables`); `NONE` none; `[ALL,]NAME[=value],…` those named (and with ALL, the rest).
    /// At most 64 KiB in all: a variable past that is left out, with a warning.
    static func exported(
        _ option: String?, environment: [String: String], line: Int, warnings: inout [String], issue: (String) -> Void
    ) -> [String: String] {
        func isSession(_ name: String) -> Bool {
            self.sessionVariables.contains(name) || self.sessionPrefixes.contains { name.hasPrefix($0) } || !JobSpecParser.isEnvName(name)
        }
        var all = true
        var named: [String: String] = [:]
        if let option {
            all = false
            for item in option.split(separator: ",", omittingEmptySubsequences: true).map(String.init) {
                switch item.uppercased() {
                case "ALL": all = true
                case "NONE", "NIL": all = false
                default:
                    let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                    guard JobSpecParser.isEnvName(parts[0]), !parts[0].hasPrefix("ALLOT_") else {
                        issue("'\(parts[0].prefix(40))' is not a variable a job may be given")
                        continue
                    }
                    if parts.count == 2 { named[parts[0]] = parts[1] } else if let v = environment[parts[0]] { named[parts[0]] = v }
                }
            }
        }
        var env: [String: String] = [:]
        var bytes = 0
        var left: [String] = []
        let chosen = all ? environment.filter { !isSession($0.key) }.merging(named) { _, n in n } : named
        for (k, v) in chosen.sorted(by: { $0.key < $1.key }) {
            if bytes + k.utf8.count + v.utf8.count > 64 << 10 {
                left.append(k)
                continue
            }
            bytes += k.utf8.count + v.utf8.count
            env[k] = v
        }
        if !left.isEmpty {
            warnings.append("line \(line): --export: \(left.count) variables left out past 64 KiB (\(left.prefix(5).joined(separator: ", "))…)")
        }
        return env
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
