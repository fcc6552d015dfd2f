import AllotCore
import AllotFormats
import Testing

/// A corpus of batch scripts as people write them, one rule of `man sbatch` each (and several at once).
@Suite("#SBATCH scripts")
struct SbatchParserTests {
    static func parse(_ script: String) throws -> SbatchParser.Parsed { try SbatchParser.parse(script, file: "job.sh") }

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
        #expect(p.warnings.contains { $0.contains("--output") && $0.contains("allot logs") })
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
        #expect(p.spec.name == "my-first-job")
        #expect(p.warnings.contains { $0.contains("my first job") })
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
        for word in ["--mail-type", "--mail-user", "--frobnicate", "-Z", "--requeue"] {
            #expect(p.warnings.contains { $0.contains(word) }, "no warning for \(word): \(p.warnings)")
        }
    }

    @Test("errors name the directive and its line; arrays and dependencies are refused")
    func errors() {
        do {
            _ = try Self.parse("#SBATCH -p a\n#SBATCH -N lots\n#SBATCH -t soon\n#SBATCH --array=0-9\n#SBATCH --dependency=afterok:1\nx")
            Issue.record("accepted")
        } catch let error as FormatErrors {
            let found = Set(error.issues.map { "\($0.line ?? 0) \($0.field)" })
            #expect(found == ["2 --nodes", "3 --time", "4 --array", "5 --dependency"], "\(error.issues)")
        } catch {
            Issue.record("\(error)")
        }
        #expect(throws: FormatErrors.self) { try Self.parse("#SBATCH -N 1\nx") }  // no partition: no pool
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
