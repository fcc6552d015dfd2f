import AllotCore
import AllotFormats
import Testing

/// MIG profiles, GPU memory and pool isolation as people write them: job specs, #SBATCH lines, Policies/.
@Suite("MIG profiles, GPU memory and isolated pools in specs, scripts and policy")
struct GPUKindParsingTests {
    static func issues(_ text: String) -> [String] {
        do {
            _ = try JobSpecParser.parse(text)
            return []
        } catch {
            return error.issues.map { "\($0.field): \($0.message)" }
        }
    }

    @Test("migProfile counts devices (one when gpusPerNode is left out); gpuMemory in people's units or MiB")
    func spec() throws {
        let mig = try JobSpecParser.parse("name: infer\ncommand: serve\nmigProfile: 1G.10GB\n")
        #expect(mig.migProfile == "1g.10gb" && mig.gpusPerNode == 1 && mig.gpuMilli == nil)
        let two = try JobSpecParser.parse("command: serve\nmigProfile: 3g.40gb\ngpusPerNode: 2\ngpuMemory: 40G\n")
        #expect(two.gpusPerNode == 2 && two.gpuMemoryMiB == 40 * 1024)
        let mem = try JobSpecParser.parse("command: train\ngpusPerNode: 8\ngpuMemory: 80G\ngpuModel: NVIDIA A100 80GB PCIe\n")
        #expect(mem.gpuMemoryMiB == 81_920 && mem.gpuModel == ["NVIDIA A100 80GB PCIe"])
        #expect(try JobSpecParser.parse("command: x\ngpusPerNode: 1\ngpuMemoryMiB: 1024\n").gpuMemoryMiB == 1024)
        let share = try JobSpecParser.parse("kind: inference\ncommand: x\ngpuMilli: 250\ngpuMemory: 24G\n")
        #expect(share.gpuMemoryMiB == 24 * 1024 && share.gpuMilli == 250)
    }

    @Test(
        "bad MIG and memory fields name the field and why",
        arguments: [
            ("command: x\nmigProfile: a100\n", "migProfile: must be a MIG profile"),
            ("command: x\nmigProfile: 1g.10gb\ngpuMilli: 250\n", "migProfile: asks MIG devices: leave gpuMilli out"),
            ("command: x\nmigProfile: 1g.10gb\ngpusPerNode: 0\n", "gpusPerNode: counts MIG devices"),
            ("command: x\ngpusPerNode: 1\ngpuMemory: lots\n", "gpuMemory: must be a size"),
            ("command: x\ngpuMemory: 80G\n", "gpuMemory: is per GPU"),
            ("command: x\ngpusPerNode: 1\ngpuMemory: 80G\ngpuMemoryMiB: 5\n", "gpuMemory: give either"),
        ])
    func badFields(text: String, expected: String) {
        let found = Self.issues(text)
        #expect(found.contains { $0.hasPrefix(expected) }, "\(found)")
    }

    @Test(
        "Slurm's MIG GRES: a profile, or NVML autodetection's MODEL_PROFILE, is a MIG request; a GPU type stays a model",
        arguments: [
            ("#SBATCH --gres=gpu:1g.10gb:2", "1g.10gb", [String](), 2),
            ("#SBATCH --gres=gpu:a100_3g.20gb:1", "3g.20gb", ["A100"], 1),
            ("#SBATCH --gres=gpu:1g.18gb", "1g.18gb", [], 1),
            ("#SBATCH --gpus-per-node=2g.20gb:1", "2g.20gb", [], 1),
            ("#SBATCH --gres=gpu:h100:4", nil, ["H100"], 4),
        ])
    func sbatch(line: String, profile: String?, models: [String], gpus: Int) throws {
        let spec = try SbatchParser.parse("#!/bin/bash\r\n\(line)\r\nsrun python serve.py\r\n", file: "a.sh", submitDir: "/tmp").spec
        #expect(spec.migProfile == profile)
        #expect(spec.gpuModel == models)
        #expect(spec.gpusPerNode == gpus)
    }

    @Test("a script asking MIG devices of two profiles is refused")
    func twoProfiles() {
        #expect(throws: FormatErrors.self) {
            try SbatchParser.parse("#!/bin/bash\n#SBATCH --gres=gpu:1g.10gb:1,gpu:3g.40gb:1\nx", file: "a.sh", submitDir: "/tmp")
        }
    }

    @Test("isolateSharedGPUs: given, or on for a restricted pool and off for an open one")
    func policy() throws {
        let text = """
            pools:
              - name: open
              - name: secure
                restrictedTo: [defence]
              - name: lab
                restrictedTo: [defence]
                isolateSharedGPUs: false
              - name: strict
                isolateSharedGPUs: true
            organizations:
              - name: defence
            """
        let policy = try PolicyParser.parse(files: [("p.yaml", text)])
        let isolated = Dictionary(uniqueKeysWithValues: policy.pools.map { ($0.name, $0.isolateSharedGPUs) })
        #expect(isolated == ["open": false, "secure": true, "lab": false, "strict": true])
        let defaults = try PolicyParser.parse(files: [("d.yaml", "defaults:\n  replicaRestartLimit: 3\n  replicaRestartWindow: 1h\n")])
        #expect(defaults.defaults.replicaRestartLimit == 3 && defaults.defaults.replicaRestartWindowSeconds == 3600)
    }
}
