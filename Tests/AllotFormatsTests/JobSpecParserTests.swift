import AllotCore
import AllotFormats
import Testing

@Suite("Job specs")
struct JobSpecParserTests {
    @Test("a YAML spec with people's units becomes base units")
    func yaml() throws {
        let spec = try JobSpecParser.parse(
            """
            name: train
            org: lab
            pool: h200
            gpuModel: [H200, H100]
            nodes: 2
            gpusPerNode: 4
            cpusPerNode: 1.5
            memoryPerNode: 64G
            timeLimit: 2h
            command: [python, train.py, --lr, "3e-4 x"]
            env: {SEED: 7, MODE: fast}
            workingDir: /data/run
            maxAttempts: 5
            """)
        #expect(spec.nodes == 2 && spec.gpusPerNode == 4)
        #expect(spec.gpuModel == ["H200", "H100"])
        #expect(spec.cpuMilliPerNode == 1500)
        #expect(spec.memoryMiBPerNode == 65536)
        #expect(spec.timeLimitSeconds == 7200)
        #expect(spec.command == "python train.py --lr '3e-4 x'")
        #expect(spec.env == ["SEED": "7", "MODE": "fast"])
        #expect(spec.maxAttempts == 5)
    }

    @Test("JSON works too, and a dry run's output parses back to the same spec")
    func roundTrip() throws {
        let spec = try JobSpecParser.parse(
            #"{"name": "x", "pool": "h200", "gpuMilli": 250, "kind": "inference", "command": "serve", "gpuModel": "H200|H100"}"#)
        #expect(spec.gpuMilli == 250 && spec.gpusPerNode == 0 && spec.kind == .inference && spec.gpuModel == ["H200", "H100"])
        #expect(try JobSpecParser.parse(JobSpecParser.json(spec)) == spec)
    }

    @Test("an inference service's replicas are its ranks, one node each")
    func replicas() throws {
        let spec = try JobSpecParser.parse("pool: h200\nkind: inference\nreplicas: 3\ngpuMilli: 250\ncommand: serve")
        #expect(spec.nodes == 3 && spec.gpuMilli == 250)
        #expect(try JobSpecParser.parse("pool: h200\nreplicas: 1\ncommand: x").nodes == 1)
    }

    @Test(
        "bad input names the field and the reason",
        arguments: [
            ("pool: h200\ncommand: x\ngpus: 4", "gpus", "unknown field"),
            ("pool: h200\ncommand: x\ngpusPerNode: -1", "gpusPerNode", "between 0 and 64"),
            ("pool: h200\ncommand: x\ngpusPerNode: 100000", "gpusPerNode", "between 0 and 64"),
            ("pool: h200\ncommand: x\nnodes: two", "nodes", "whole number"),
            ("pool: h200\ncommand: x\nsignal: USR9@5", "signal", "[B:]SIGNAL"),
            ("pool: h200\ncommand: x\nname: \"a\\tb\"", "name", "control character"),
            ("pool: h200\ncommand: x\nslurm: {submitDir: rel/dir}", "slurm.submitDir", "absolute"),
            ("pool: h200\ncommand: x\nslurm: {tasks: 2}", "slurm.tasks", ""),
            ("pool: h200\ncommand: x\ntimeLimit: 1h\ntimeMin: 2h", "timeMin", "longer than the time limit"),
            ("pool: h200", "command", "required"),
            ("pool: h200\ncommand: x\ntimeLimit: soon", "timeLimit", "duration"),
            ("pool: h200\ncommand: x\nmemoryPerNode: lots", "memoryPerNode", "size"),
            ("pool: h200\ncommand: x\ngpuMilli: 1500", "gpuMilli", "between 1 and 999"),
            ("pool: h200\ncommand: x\nkind: batch", "kind", "training or inference"),
            ("pool: h200\ncommand: x\nenv: {1BAD: x}", "env.1BAD", "variable name"),
            ("pool: h200\ncommand: x\nworkingDir: relative/dir", "workingDir", "absolute"),
            ("pool: h200\ncommand: x\nPool: h100", "Pool", "did you mean pool"),
            ("pool: bad name!\ncommand: x", "pool", "letters, digits"),
            ("pool: h200\ncommand: x\nreplicas: 2", "replicas", "only inference services"),
            ("pool: h200\ncommand: x\nkind: inference\nnodes: 2\nreplicas: 2", "replicas", "not both"),
            ("pool: h200\ncommand: x\nkind: inference\nreplicas: 0", "replicas", "between 1 and 4096"),
        ])
    func rejected(text: String, field: String, reason: String) {
        do {
            _ = try JobSpecParser.parse(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.issues.contains { $0.field == field && $0.message.contains(reason) }, "\(error.issues)")
        }
    }

    @Test("malformed YAML is reported with its line")
    func malformed() {
        do {
            _ = try JobSpecParser.parse("pool: h200\ncommand: [unclosed\n  x: : :\n")
            Issue.record("accepted malformed YAML")
        } catch {
            #expect(error.issues.first?.message.contains("malformed YAML") == true)
            #expect(error.issues.first?.line != nil)
        }
    }

    @Test("every error of a spec is reported, not just the first")
    func allErrors() {
        do {
            _ = try JobSpecParser.parse("pool: h200\ncommand: x\nnodes: 0\ngpusPerNode: 99\ncolour: red")
        } catch {
            #expect(Set(error.issues.map(\.field)) == ["nodes", "gpusPerNode", "colour"])
        }
    }

    @Test("a job's image is a field of its spec (and a bad one is refused naming it)")
    func image() throws {
        let spec = try JobSpecParser.parse("pool: h200\ncommand: x\nimage: pytorch/train:2.4")
        #expect(spec.image == "pytorch/train:2.4")
        #expect(throws: FormatErrors.self) { try JobSpecParser.parse("pool: h200\ncommand: x\nimage: ../escape") }
    }
}
