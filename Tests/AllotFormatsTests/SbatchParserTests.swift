import AllotCore
import AllotTesting
import Foundation
import Testing

@testable import AllotFormats

/// A corpus of batch scripts as people write them, one rule of `man sbatch` each (and several at once).
@Suite("#SBATCH scripts")
struct SbatchParserTests {
    static func parse(_ script: String, environment: [String: String] = [:]) throws -> SbatchParser.Parsed {
        try SbatchParser.parse(script, file: "job.sh", submitDir: "/home/alice/proj", environment: environment)
    }

    @Test("a typical multi-node PyTorch script")
    func typical() throws {
        let p = try Self.parse(
            """
            #!/bin/bash
            #SBATCH --job-name=llama-pretrain
            #SBATCH --nodes=4
            #SBATCH --ntasks-per-node=1
            #SBATCH --gres=gpu:h100:8
            #SBATCH --cpus-per-task=96
            #SBATCH --mem=1800G
            #SBATCH --time=2-00:00:00
            #SBATCH --partition=h100
            #SBATCH --account=national-ai-lab
            #SBATCH --qos=standard
            #SBATCH --output=logs/%x-%j.out

            module load cuda/12.4
            srun torchrun --nnodes=$SLURM_NNODES train.py
            """)
        #expect(p.spec.name == "llama-pretrain")
        #expect(p.spec.nodes == 4 && p.spec.gpusPerNode == 8 && p.spec.gpuModel == ["H100"])
        #expect(p.spec.cpuMilliPerNode == 96_000)
        #expect(p.spec.memoryMiBPerNode == 1800 * 1024)
        #expect(p.spec.timeLimitSeconds == Int64(172_800))
        #expect(p.spec.pool == "h100" && p.spec.org == "national-ai-lab" && p.spec.priorityClass == "standard")
        #expect(p.spec.command.hasPrefix("#!/bin/bash\n#SBATCH"))
        #expect(p.spec.slurm?.output == "/home/alice/proj/logs/%x-%j.out", "relative to the submit directory, pattern kept")
        #expect(p.spec.slurm?.tasksPerNode == 1 && p.spec.slurm?.cpusPerTask == 96 && p.spec.slurm?.submitDir == "/home/alice/proj")
        #expect(!p.warnings.contains { $0.contains("--output") })
    }

    @Test(
        "every --time form; bare numbers are minutes",
        arguments: [
            ("30", 1800), ("30:15", 1815), ("2:30:15", 9015), ("1-12", 129_600), ("1-12:30", 131_400), ("1-12:30:15", 131_415),
        ] as [(String, Int64)])
    func times(t: String, seconds: Int64) throws {
        #expect(try Self.parse("#SBATCH -p h200\n#SBATCH -t \(t)\nhostname").spec.timeLimitSeconds == seconds)
        #expect(try Self.parse("#SBATCH -p h200\n#SBATCH --time=\(t)\nhostname").spec.timeLimitSeconds == seconds)
    }

    @Test("UNLIMITED means no time limit")
    func unlimited() throws { #expect(try Self.parse("#SBATCH -p a\n#SBATCH -t UNLIMITED\nx").spec.timeLimitSeconds == nil) }

    @Test(
        "--mem: MB by default, suffixes in either case, 0 for the whole node",
        arguments: [
            ("4000", 4000, false), ("4000M", 4000, false), ("16G", 16384, false), ("16g", 16384, false), ("1T", 1_048_576, false),
            ("512k", 1, false), ("0", 0, true),
        ] as [(String, Int, Bool)])
    func memory(mem: String, mib: Int, all: Bool) throws {
        let spec = try Self.parse("#SBATCH -p a\n#SBATCH --mem=\(mem)\nx").spec
        #expect(spec.memoryMiBPerNode == mib)
        #expect(spec.wholeNodeMemory == all)
    }

    @Test("--mem-per-gpu and --mem-per-cpu multiply out per node")
    func memPer() throws {
        #expect(try Self.parse("#SBATCH -p a\n#SBATCH --gpus-per-node=4\n#SBATCH --mem-per-gpu=80G\nx").spec.memoryMiBPerNode == 4 * 80 * 1024)
        #expect(try Self.parse("#SBATCH -p a\n#SBATCH -c 8\n#SBATCH --mem-per-cpu=2000\nx").spec.memoryMiBPerNode == 16000)
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH -p a\n#SBATCH --mem=1G\n#SBATCH --mem-per-cpu=2G\nx") }
    }

    @Test("GPUs: typed --gres per node, --gpus-per-node with or without =, -G/--gpus in total")
    func gpus() throws {
        #expect(try Self.parse("#SBATCH -p a\n#SBATCH --gres=gpu:4\nx").spec.gpusPerNode == 4)
        let typed = try Self.parse("#SBATCH -p a\n#SBATCH --gres=gpu:a100:2\nx").spec
        #expect(typed.gpusPerNode == 2 && typed.gpuModel == ["A100"])
        #expect(try Self.parse("#SBATCH -p a\n#SBATCH --gres=gpu\nx").spec.gpusPerNode == 1)
        #expect(try Self.parse("#SBATCH -p a\n#SBATCH --gpus-per-node 8\nx").spec.gpusPerNode == 8)
        #expect(try Self.parse("#SBATCH -p a\n#SBATCH --gpus-per-node=h200:8\nx").spec.gpuModel == ["H200"])
        let total = try Self.parse("#SBATCH -p a\n#SBATCH -N 2\n#SBATCH -G 16\nx").spec
        #expect(total.nodes == 2 && total.gpusPerNode == 8)
        #expect(try Self.parse("#SBATCH -p a\n#SBATCH --gpus=4\nx").spec.gpusPerNode == 4)
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH -p a\n#SBATCH -N 3\n#SBATCH --gpus=8\nx") }
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH -p a\n#SBATCH --gres=gpu:4\n#SBATCH --gpus-per-node=8\nx") }
    }

    @Test("short options with attached or separate values, several on one line, quoted values, trailing comments")
    func syntax() throws {
        let p = try Self.parse(
            """
            #!/bin/sh
            #SBATCH -N2 -c 4 --ntasks-per-node=2   # two nodes, eight CPUs each
            #SBATCH -J "my first job"
            #SBATCH -p 'h200' -A defense/radar
            #SBATCH -t30
            echo hi
            """)
        #expect(p.spec.nodes == 2)
        #expect(p.spec.cpuMilliPerNode == 8000)
        #expect(p.spec.name == "my first job", "kept as given, as Slurm does")
        #expect(p.spec.pool == "h200" && p.spec.org == "defense" && p.spec.project == "radar")
        #expect(p.spec.timeLimitSeconds == 1800)
    }

    @Test("directives stop at the first command; later ones are ignored with a warning, as Slurm does")
    func stopsAtFirstCommand() throws {
        let p = try Self.parse(
            """
            #!/bin/bash
            # a comment, then a blank line

            #SBATCH -p h200
            #SBATCH -N 1
            echo starting
            #SBATCH -N 8
            """)
        #expect(p.spec.nodes == 1)
        #expect(p.warnings.contains { $0.contains("line 7") && $0.contains("ignored") })
    }

    @Test("unknown and unsupported directives are warnings, never silently dropped")
    func warnings() throws {
        let p = try Self.parse(
            "#SBATCH -p a\n#SBATCH --mail-type=END --mail-user=a@b.c\n#SBATCH --frobnicate=yes\n#SBATCH -Z\n#SBATCH --requeue\n#SBATCH --exclusive\nx"
        )
        #expect(p.spec.exclusive)
        for word in ["--mail-type", "--mail-user", "--frobnicate", "-Z"] {
            #expect(p.warnings.contains { $0.contains(word) }, "no warning for \(word): \(p.warnings)")
        }
    }

    @Test("errors name the directive and its line")
    func errors() {
        do {
            _ = try Self.parse("#SBATCH -p a\n#SBATCH -N lots\n#SBATCH -t soon\n#SBATCH --array=9-0\n#SBATCH --dependency=afterok:one\nx")
            Issue.record("accepted")
        } catch let error as FormatErrors {
            let found = Set(error.issues.map { "\($0.line ?? 0) \($0.field)" })
            #expect(found == ["2 --nodes", "3 --time", "4 --array", "5 --dependency"], "\(error.issues)")
        } catch {
            Issue.record("\(error)")
        }
        #expect(throws: FormatErrors.self) { try SbatchParser.parse("#SBATCH -o out.txt\nx") }  // relative, no submit directory
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH -J 'unclosed\n#SBATCH -p a\nx") }
    }

    @Test("--nodes=min-max asks for the minimum")
    func nodeRange() throws {
        let p = try Self.parse("#SBATCH -p a\n#SBATCH --nodes=2-4\nx")
        #expect(p.spec.nodes == 2)
        #expect(!p.warnings.isEmpty)
    }

    @Test("scripts are told from YAML specs")
    func detection() {
        #expect(SbatchParser.isBatchScript("#!/bin/bash\necho"))
        #expect(SbatchParser.isBatchScript("#SBATCH -p a\necho"))
        #expect(!SbatchParser.isBatchScript("pool: h200\ncommand: x\n"))
    }
}

/// Slurm's defaults and the options issue 15 names, one rule each; then every directive in the tables.
@Suite("#SBATCH: Slurm's defaults and options")
struct SbatchDefaultsTests {
    static let dir = "/home/alice/proj"
    static func parse(_ script: String, file: String = "train.sbatch", environment: [String: String] = [:]) throws -> SbatchParser.Parsed {
        try SbatchParser.parse(script, file: file, submitDir: Self.dir, environment: environment)
    }

    @Test("no -p: the pool is left to the submission (the default pool); the name is the script's file name")
    func defaults() throws {
        let p = try Self.parse("#!/bin/bash\n#SBATCH -N 1\n#SBATCH --gres=gpu:1\npython train.py\n")
        #expect(p.spec.pool == nil)
        #expect(p.spec.name == "train.sbatch")
        #expect(try SbatchParser.parse("#SBATCH -N1\nx", file: "-").spec.name == "sbatch")
        #expect(p.spec.slurm?.submitDir == Self.dir)
        #expect(p.spec.workingDir == nil, "the agent runs it in the submit directory where the node has it")
    }

    @Test(
        "-D and --output/--error: relative paths are the submit directory's (output: the working directory's)",
        arguments: [
            ("-D .", Self.dir, nil), ("--chdir=runs/a", "\(Self.dir)/runs/a", nil), ("-D ../other", "/home/alice/other", nil),
            ("-D /scratch/x/", "/scratch/x", nil), ("-o slurm-%j.out", nil, "\(Self.dir)/slurm-%j.out"),
            ("-D /scratch -o logs/%x_%A_%a.log", "/scratch", "/scratch/logs/%x_%A_%a.log"), ("--output=/dev/null", nil, "/dev/null"),
        ] as [(String, String?, String?)])
    func paths(directive: String, workingDir: String?, output: String?) throws {
        let p = try Self.parse("#SBATCH \(directive)\nx")
        #expect(p.spec.workingDir == workingDir)
        #expect(p.spec.slurm?.output == output)
    }

    @Test("--error apart from --output; --open-mode")
    func errorAndOpenMode() throws {
        let p = try Self.parse("#SBATCH -o out-%j.txt -e err-%j.txt\n#SBATCH --open-mode=append\nx")
        #expect(p.spec.slurm?.output == "\(Self.dir)/out-%j.txt" && p.spec.slurm?.error == "\(Self.dir)/err-%j.txt")
        #expect(p.spec.slurm?.appendOutput == true)
        #expect(try Self.parse("#SBATCH --open-mode=truncate\nx").spec.slurm?.appendOutput == false)
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH --open-mode=sometimes\nx") }
    }

    @Test("names are kept as given, spaces and all; control characters are refused")
    func names() throws {
        #expect(try Self.parse("#SBATCH -J \"llama 70B / sft (v2)\"\nx").spec.name == "llama 70B / sft (v2)")
        #expect(try Self.parse("#SBATCH --job-name='résumé'\nx").spec.name == "résumé")
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH --job-name=\"a\u{7}b\"\nx") }
    }

    @Test(
        "GPUs: --gpus-per-task × tasks per node; any type name a site gives its GPUs",
        arguments: [
            ("--ntasks-per-node=4 --gpus-per-task=2", 8, [String]()), ("-N 2 --ntasks=16 --gpus-per-task=1", 8, []),
            ("--gpus-per-task=8", 8, []), ("--gpus=a100-80gb:4", 4, ["A100-80GB"]), ("--gpus=nvidia_h100_80gb_hbm3:2", 2, ["NVIDIA_H100_80GB_HBM3"]),
            ("--gres=gpu:h100-sxm5:8", 8, ["H100-SXM5"]), ("--gpus-per-node=l40s:2", 2, ["L40S"]), ("--gres=gpu:a100:4(S:0-1)", 4, ["A100"]),
            ("--gpus-per-node=a100:2,v100:2", 2, ["A100", "V100"]),
        ] as [(String, Int, [String])])
    func gpus(directive: String, perNode: Int, models: [String]) throws {
        let p = try Self.parse("#SBATCH \(directive)\nx")
        #expect(p.spec.gpusPerNode == perNode, "\(directive)")
        #expect(p.spec.gpuModel == models, "\(directive)")
    }

    @Test("tasks, CPUs per task or per GPU, memory per GPU")
    func tasksAndCPUs() throws {
        let a = try Self.parse("#SBATCH -N 2 --ntasks=8 --cpus-per-task=6\nx").spec
        #expect(a.slurm?.tasksPerNode == 4 && a.cpuMilliPerNode == 24_000 && a.slurm?.cpusPerTask == 6)
        let c = try Self.parse("#SBATCH --ntasks=16 --ntasks-per-node=8\nx").spec
        #expect(c.nodes == 2 && c.slurm?.tasksPerNode == 8 && c.slurm?.ntasks == 16, "as many nodes as the tasks need")
        let d = try Self.parse("#SBATCH -N 2 -n 3\nx").spec
        #expect(d.slurm?.tasksPerNode == 2 && d.slurm?.ntasks == 3, "3 tasks over 2 nodes: SLURM_NTASKS stays 3")
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH -N 1 -n 9 --ntasks-per-node=4\nx") }
        let b = try Self.parse("#SBATCH --gres=gpu:4 --cpus-per-gpu=12 --mem-per-gpu=80G\nx").spec
        #expect(b.cpuMilliPerNode == 48_000 && b.memoryMiBPerNode == 4 * 80 * 1024)
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH -c 4 --cpus-per-gpu=2 --gres=gpu:1\nx") }
    }

    @Test("--time-min is kept for backfill; longer than --time it is dropped with a warning")
    func timeMin() throws {
        let p = try Self.parse("#SBATCH -t 4:00:00 --time-min=1:00:00\nx")
        #expect(p.spec.timeMinSeconds == 3600 && p.spec.timeLimitSeconds == 14_400)
        let q = try Self.parse("#SBATCH -t 10 --time-min=60\nx")
        #expect(q.spec.timeMinSeconds == nil && q.warnings.contains { $0.contains("--time-min") })
    }

    @Test(
        "--signal=[{R|B}:]SIG[@SECONDS]",
        arguments: [
            ("USR1@90", 10, 90, false), ("B:USR1@5", 10, 5, true), ("SIGTERM", 15, 60, false), ("10@30", 10, 30, false),
            ("R:USR2@120", 12, 120, false), ("B:sigint@0", 2, 0, true),
        ] as [(String, Int32, Int, Bool)])
    func signal(text: String, number: Int32, seconds: Int, batch: Bool) throws {
        let s = try #require(try Self.parse("#SBATCH --signal=\(text)\nx").spec.signal)
        #expect(s.number == number && s.secondsBefore == seconds && s.batchOnly == batch)
        #expect(JobSignal(slurm: s.description) == s, "its printed form reads back")
    }

    @Test("a malformed --signal names the directive")
    func badSignal() {
        for bad in ["NOPE@5", "USR1@-1", "USR1@99999", "@5", "B:"] {
            #expect(throws: FormatErrors.self, "\(bad)") { try Self.parse("#SBATCH --signal=\(bad)\nx") }
        }
    }

    @Test("--requeue is the default; --no-requeue: never requeued (one attempt)")
    func requeue() throws {
        #expect(try Self.parse("#SBATCH --requeue\nx").spec.maxAttempts == 3)
        #expect(try Self.parse("#SBATCH --no-requeue\nx").spec.maxAttempts == 1)
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH --requeue\n#SBATCH --no-requeue\nx") }
    }

    @Test("--export: ALL passes the shell's variables but its session's; NONE none; a list those named")
    func export() throws {
        let shell = [
            "CONDA_PREFIX": "/opt/conda", "WANDB_PROJECT": "llm", "HOME": "/home/alice", "PATH": "/usr/bin", "SSH_AUTH_SOCK": "/tmp/x",
            "ALLOT_TOKEN": "secret", "SLURM_JOB_ID": "9", "BASH_FUNC_module%%": "() { x; }", "OMP_NUM_THREADS": "4",
        ]
        let all = try Self.parse("#SBATCH -N 1\nx", environment: shell).spec.env
        #expect(all == ["CONDA_PREFIX": "/opt/conda", "WANDB_PROJECT": "llm", "OMP_NUM_THREADS": "4"])
        #expect(try Self.parse("#SBATCH --export=ALL\nx", environment: shell).spec.env == all)
        #expect(try Self.parse("#SBATCH --export=NONE\nx", environment: shell).spec.env == [:])
        #expect(
            try Self.parse("#SBATCH --export=WANDB_PROJECT,SEED=7\nx", environment: shell).spec.env == ["WANDB_PROJECT": "llm", "SEED": "7"])
        #expect(try Self.parse("#SBATCH --export=ALL,SEED=7\nx", environment: shell).spec.env == all.merging(["SEED": "7"]) { $1 })
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH --export=ALLOT_TOKEN\nx", environment: shell) }
        let huge = (0..<40).reduce(into: [String: String]()) { $0["BIG_\($1)"] = String(repeating: "x", count: 4000) }
        let capped = try Self.parse("#SBATCH -N 1\nx", environment: huge)
        #expect(capped.spec.env.count < 40 && capped.warnings.contains { $0.contains("64 KiB") })
    }

    /// The same script written on Windows: CRLF line ends, a byte-order mark, a directive after a blank line.
    @Test("CRLF line ends and a BOM read as Unix ones; the command is run with LF")
    func crlf() throws {
        let unix =
            "#!/bin/bash\n# training\n\n#SBATCH --job-name=\"run one\"\n#SBATCH -N 2 --gres=gpu:4\n\n#SBATCH -t 1:00:00\nsrun python train.py\n"
        let dos = "\u{FEFF}" + unix.replacingOccurrences(of: "\n", with: "\r\n")
        let a = try Self.parse(unix)
        let b = try Self.parse(dos)
        #expect(a.spec == b.spec)
        #expect(b.spec.name == "run one" && b.spec.nodes == 2 && b.spec.gpusPerNode == 4 && b.spec.timeLimitSeconds == 3600)
        #expect(!b.spec.command.contains("\r"))
        #expect(b.warnings.contains { $0.contains("CRLF") })
    }

    /// Every option in the parser's tables, written the way Slurm accepts it: each is acted on or named in a
    /// warning, never dropped.
    @Test("every directive Slurm documents is honoured or warned about")
    func everyDirective() throws {
        var checked = 0
        for (name, letter) in SbatchParser.valued.sorted(by: { $0.key < $1.key }) {
            let value: String
            switch name {
            case "nodes", "ntasks", "ntasks-per-node", "cpus-per-task", "cpus-per-gpu", "gpus", "gpus-per-node", "gpus-per-task": value = "1"
            case "time", "time-min": value = "10"
            case "mem", "mem-per-gpu", "mem-per-cpu": value = "1G"
            case "signal": value = "USR1@5"
            case "open-mode": value = "append"
            case "export": value = "NONE"
            case "gres": value = "gpu:1"
            case "container-image": value = "pytorch:24.01"
            case "array": value = "0-1"
            case "dependency": value = "singleton"
            case "begin": value = "now+1hour"
            default: value = "x"
            }
            for form in ["--\(name)=\(value)"] + (letter.map { ["-\($0) \(value)"] } ?? []) {
                let p = try Self.parse("#SBATCH \(form)\nhostname")
                let mentioned = p.warnings.contains { $0.contains("--\(name)") }
                #expect(SbatchParser.actedOn.contains(name) || mentioned, "\(form): neither acted on nor warned (\(p.warnings))")
                if !SbatchParser.actedOn.contains(name) {
                    #expect(p.warnings.contains { $0.contains("--\(name) is not acted on") }, "\(form): \(p.warnings)")
                }
                checked += 1
            }
        }
        for (name, letter) in SbatchParser.flags.sorted(by: { $0.key < $1.key }) {
            for form in ["--\(name)"] + (letter.map { ["-\($0)"] } ?? []) {
                let p = try Self.parse("#SBATCH \(form)\nhostname")
                #expect(SbatchParser.actedOn.contains(name) || p.warnings.contains { $0.contains("--\(name)") }, "\(form): \(p.warnings)")
                checked += 1
            }
        }
        #expect(checked > 120)
    }
}

@Suite("Slurm's hostlists, filename patterns and GPU type names")
struct SlurmFormsTests {
    @Test(
        "compressed as Slurm writes them",
        arguments: [
            (["gpu-001", "gpu-002", "gpu-003"], "gpu-[001-003]"), (["gpu-001", "gpu-003", "gpu-004"], "gpu-[001,003-004]"),
            (["node9", "node10", "node11"], "node[9-11]"), (["a1", "b1"], "a1,b1"), (["login"], "login"), (["gpu-001"], "gpu-001"),
            (["r1-n01", "r1-n02", "r2-n01"], "r1-n[01-02],r2-n01"), (["gpu-099", "gpu-100"], "gpu-[099-100]"),
            (["n12-ib", "n13-ib"], "n[12-13]-ib"), (["host", "gpu1", "gpu2"], "host,gpu[1-2]"),
        ] as [([String], String)])
    func compress(hosts: [String], list: String) {
        #expect(Hostlist.compress(hosts) == list)
        #expect(Hostlist.expand(list) == hosts)
    }

    @Test("expanded as scontrol show hostnames does, brackets anywhere")
    func expand() {
        #expect(Hostlist.expand("rack[1-2]-gpu[01-02]") == ["rack1-gpu01", "rack1-gpu02", "rack2-gpu01", "rack2-gpu02"])
        #expect(Hostlist.expand("a,b[3,5-6],c") == ["a", "b3", "b5", "b6", "c"])
        #expect(Hostlist.expand("gpu-[5-3]") == nil && Hostlist.expand("gpu-[1-x]") == nil && Hostlist.expand("gpu-[1-2") == nil)
        #expect(Hostlist.expand("n[1-1000000]", limit: 1000) == nil)
    }

    /// Random node names of mixed shapes (padded and not, prefixes and suffixes, gaps), in random order.
    @Test("expand(compress(hosts)) gives the hosts back, for 500 seeded random lists")
    func roundTrip() {
        for seed in 1...500 {
            var rng = SeededRandom(seed: UInt64(seed))
            let prefixes = ["gpu-", "node", "r1-n", "dgx", "a100-"]
            let suffixes = ["", "", "-ib"]
            var hosts: [String] = []
            for _ in 0..<Int(rng.next() % 40 + 1) {
                let n = Int(rng.next() % 130)
                let width = [0, 2, 3, 4][Int(rng.next() % 4)]
                let digits = width > String(n).count ? String(repeating: "0", count: width - String(n).count) + String(n) : String(n)
                hosts.append(prefixes[Int(rng.next() % 5)] + digits + suffixes[Int(rng.next() % 3)])
            }
            if rng.next() % 2 == 0 { hosts.sort() }
            let list = Hostlist.compress(hosts)
            #expect(Hostlist.expand(list) == hosts, "seed \(seed): \(hosts) → \(list)")
        }
    }

    @Test("filename patterns: %j %x %N %n %A %a %u %%, zero-padded widths")
    func patterns() {
        let f = { (p: String) in SlurmOptions.fill(p, jobID: 42, name: "run one", node: "gpu-001.cluster", nodeRank: 1, user: "alice") }
        #expect(f("/out/%x-%j.out") == "/out/run one-42.out")
        #expect(f("%N_%n_%u") == "gpu-001_1_alice")
        #expect(f("%A_%a") == "42_4294967294")
        #expect(f("%5j|100%%|%q") == "00042|100%|%q")
    }

    @Test("a site's GPU type names the pool's model")
    func modelNames() {
        let pool: Set<String> = ["H100", "A100", "L40S"]
        #expect(PendingJob.model(named: "h100", among: pool) == "H100")
        #expect(PendingJob.model(named: "A100-80GB", among: pool) == "A100")
        #expect(PendingJob.model(named: "nvidia_h100_80gb_hbm3", among: pool) == "H100")
        #expect(PendingJob.model(named: "v100", among: pool) == nil)
        #expect(PendingJob.model(named: "a100-h100", among: pool) == nil, "two models named: neither is chosen")
    }
}

@Suite("#SBATCH: arrays, dependencies, holds")
struct SbatchArrayTests {
    static func parse(_ s: String) throws -> JobSpec { try SbatchParser.parse(s, file: "a.sh", submitDir: "/tmp").spec }

    @Test(
        "--array forms",
        arguments: [
            ("0-99%8", Array(0...99), 8), ("1,3,5", [1, 3, 5], nil), ("0-20:2", Array(stride(from: 0, through: 20, by: 2)), nil),
            ("7", [7], nil), ("1-3,10-11%1", [1, 2, 3, 10, 11], 1), ("3,1,2,3", [1, 2, 3], nil),
        ] as [(String, [Int], Int?)])
    func arrays(text: String, indices: [Int], limit: Int?) throws {
        let a = try #require(try Self.parse("#SBATCH --array=\(text)\nx").array)
        #expect(a.indices == indices && a.limit == limit)
        #expect(try JobArray.parse(a.description).get() == a, "its printed form reads back: \(a)")
    }

    @Test("a malformed --array names the directive", arguments: ["", "5-1", "a-b", "0-10:0", "0-10%0", "0-2000", "0-5000000", "1:2:3"])
    func badArrays(text: String) {
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH --array=\(text)\nx") }
    }

    @Test(
        "--dependency forms",
        arguments: [
            ("afterok:12", "afterok:12"), ("afterok:12:13,afterany:14", "afterok:12:13,afterany:14"),
            ("afterok:12?afternotok:13", "afterok:12?afternotok:13"),
            ("after:5+10", "after:5+10"), ("singleton", "singleton"), ("AFTERANY:9", "afterany:9"),
        ] as [(String, String)])
    func dependencies(text: String, printed: String) throws {
        let d = try #require(try Self.parse("#SBATCH -d \(text)\nx").dependency)
        #expect(d.description == printed)
    }

    @Test(
        "a malformed --dependency names the directive",
        arguments: ["afterok", "afterok:x", "aftercorr:1", "afterok:1,afterany:2?after:3", "expand:4", "afterok:12_3"])
    func badDependencies(text: String) {
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH --dependency=\(text)\nx") }
    }

    @Test("--hold submits held")
    func hold() throws {
        #expect(try Self.parse("#SBATCH -H\nx").hold == true)
        #expect(try Self.parse("#SBATCH --hold\nx").hold == true)
        #expect(try Self.parse("#SBATCH -N 1\nx").hold == nil)
    }
}

/// Where a dependency stands, as a table: each row the condition, the depended jobs' states, the outcome.
@Suite("Dependencies: Slurm's rules")
struct DependencyRuleTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static func d(_ state: JobState, started: Double? = nil, ended: Double? = nil) -> JobDependency.Depended {
        JobDependency.Depended(
            state: state, startedAt: started.map { Self.t0.addingTimeInterval($0) }, endedAt: ended.map { Self.t0.addingTimeInterval($0) })
    }
    enum Want { case satisfied, waiting, never }

    @Test(
        "each kind against each state",
        arguments: [
            ("afterok:1", JobState.succeeded, Want.satisfied), ("afterok:1", .failed, .never), ("afterok:1", .cancelled, .never),
            ("afterok:1", .running, .waiting), ("afterok:1", .queued, .waiting), ("afternotok:1", .failed, .satisfied),
            ("afternotok:1", .cancelled, .satisfied), ("afternotok:1", .succeeded, .never), ("afternotok:1", .running, .waiting),
            ("afterany:1", .failed, .satisfied), ("afterany:1", .succeeded, .satisfied), ("afterany:1", .running, .waiting),
            ("after:1", .running, .satisfied), ("after:1", .queued, .waiting), ("after:1", .cancelled, .satisfied),
        ] as [(String, JobState, Want)])
    func kinds(text: String, state: JobState, want: Want) throws {
        let dep = try JobDependency.parse(text).get()
        let started: Double? = [.running, .succeeded, .failed].contains(state) ? -100 : nil
        let outcome = dep.evaluate([1: [Self.d(state, started: started, ended: state.isTerminal ? -10 : nil)]], singletonBlocked: false, now: Self.t0)
        switch (want, outcome) {
        case (.satisfied, .satisfied), (.waiting, .waiting), (.never, .never): break
        default: Issue.record("\(text) on \(state): \(outcome)")
        }
    }

    @Test("all (,) and any (?); an array's id stands for all its tasks; after:+minutes; a job that does not exist")
    func combinations() throws {
        let now = Self.t0
        let all = try JobDependency.parse("afterok:1,afterany:2").get()
        #expect(all.evaluate([1: [Self.d(.succeeded)], 2: [Self.d(.running)]], singletonBlocked: false, now: now) != .satisfied)
        #expect(all.evaluate([1: [Self.d(.succeeded)], 2: [Self.d(.failed)]], singletonBlocked: false, now: now) == .satisfied)
        let any = try JobDependency.parse("afterok:1?afterok:2").get()
        #expect(any.evaluate([1: [Self.d(.failed)], 2: [Self.d(.succeeded)]], singletonBlocked: false, now: now) == .satisfied)
        if case .never = any.evaluate([1: [Self.d(.failed)], 2: [Self.d(.cancelled)]], singletonBlocked: false, now: now) {
        } else {
            Issue.record("any of two failed")
        }
        let array = try JobDependency.parse("afterok:5").get()
        #expect(array.evaluate([5: [Self.d(.succeeded), Self.d(.running)]], singletonBlocked: false, now: now) != .satisfied)
        if case .never = array.evaluate([5: [Self.d(.succeeded), Self.d(.failed)]], singletonBlocked: false, now: now) {
        } else {
            Issue.record("a failed task")
        }
        let later = try JobDependency.parse("after:1+10").get()
        #expect(later.evaluate([1: [Self.d(.running, started: -300)]], singletonBlocked: false, now: now) != .satisfied)
        #expect(later.evaluate([1: [Self.d(.running, started: -601)]], singletonBlocked: false, now: now) == .satisfied)
        if case .never = try JobDependency.parse("afterany:99").get().evaluate([:], singletonBlocked: false, now: now) {
        } else {
            Issue.record("unknown job")
        }
        #expect(try JobDependency.parse("singleton").get().evaluate([:], singletonBlocked: true, now: now) != .satisfied)
    }
}

@Suite("#SBATCH --begin")
struct SbatchBeginTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)  // 2027-01-15T08:00:00Z
    static let utc = TimeZone(identifier: "UTC")!

    @Test(
        "Slurm's forms, local times in the submitter's zone",
        arguments: [
            ("now", 0.0), ("now+60", 60), ("now+10minutes", 600), ("now+2hours", 7200), ("now+1day", 86400), ("now+1week", 604_800),
            ("09:30", 5400), ("07:00", 82800), ("2027-01-15T12:00:00", 14400), ("2027-01-16", 57600), ("noon", 14400), ("teatime", 28800),
            ("midnight", 57600), ("tomorrow", 57600),
        ] as [(String, Double)])
    func forms(text: String, offset: Double) throws {
        let spec = try SbatchParser.parse("#SBATCH --begin=\(text)\nx", file: "a.sh", submitDir: "/tmp", now: Self.now, timeZone: Self.utc).spec
        #expect(spec.beginAt == Self.now.addingTimeInterval(offset), "\(text)")
    }

    @Test("a malformed --begin names the directive", arguments: ["soon", "now+5fortnights", "25:00", "2027-02-30", "now+x"])
    func malformed(text: String) {
        #expect(throws: FormatErrors.self) {
            try SbatchParser.parse("#SBATCH --begin=\(text)\nx", file: "a.sh", submitDir: "/tmp", now: Self.now, timeZone: Self.utc)
        }
    }
}
