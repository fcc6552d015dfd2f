import AllotCLI
import AllotTesting
import Foundation
import Testing

/// The CLI's own behaviour, without a server: parsing, dry runs, validation and one-line errors.
@Suite("allot CLI")
struct CLITests {
    static func temporaryFile(_ text: String, extension ext: String = "yaml") throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("allot-cli-\(UUID().uuidString).\(ext)")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    @Test("submit --dry-run prints the normalized spec as JSON")
    func dryRun() throws {
        let file = try Self.temporaryFile("name: t\npool: h200\nnodes: 2\ngpusPerNode: 4\ntimeLimit: 1h30m\ncommand: train\n")
        let result = try runBuilt("allot", ["submit", file, "--dry-run"])
        #expect(result.status == 0)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        #expect(json["timeLimitSeconds"] as? Int == 5400)
        #expect(json["nodes"] as? Int == 2)
    }

    @Test("a bad spec is one line on stderr naming the field, and a non-zero exit")
    func badSpec() throws {
        let file = try Self.temporaryFile("pool: h200\ncommand: x\ngpusPerNode: -4\n")
        let result = try runBuilt("allot", ["submit", file])
        #expect(result.status != 0)
        #expect(result.output.hasPrefix("allot: "))
        #expect(result.output.contains("gpusPerNode"))
        #expect(result.output.split(separator: "\n").count == 1)
    }

    @Test("an unreachable server is one clear line and a non-zero exit")
    func unreachable() throws {
        let result = try runBuilt("allot", ["jobs", "--server", "http://127.0.0.1:\(freeLoopbackPort())"])
        #expect(result.status != 0)
        #expect(result.output.contains("cannot reach"))
    }

    @Test("policy validate lists every error with file and line")
    func policyValidate() throws {
        let file = try Self.temporaryFile(
            "pools:\n  - name: a\norganizations:\n  - name: o\n    allocations:\n      - pool: b\n        guaranteedGPUs: x\n")
        let result = try runBuilt("allot", ["policy", "validate", file])
        #expect(result.status == 1)
        #expect(result.output.contains("\(file):7: organizations[0].allocations[0].guaranteedGPUs"))
        #expect(result.output.contains("\(file):6: organizations[0].allocations[0].pool: unknown pool 'b'"))
        let valid = try runBuilt("allot", ["policy", "validate", Repository.root + "/Policies"])
        #expect(valid.status == 0, "\(valid.output)")
    }

    @Test("allot-agent inventory prints what nvidia-smi (or --gpus) reports")
    func inventory() throws {
        let result = try runBuilt("allot-agent", ["inventory", "--gpus", "2xH100", "--output", "json"])
        #expect(result.status == 0)
        #expect(result.output.contains("\"model\" : \"H100\""))
        let missing = try runBuilt("allot-agent", ["inventory"], environment: ["ALLOT_NVIDIA_SMI": "/nonexistent/nvidia-smi"])
        #expect(missing.status != 0)
        #expect(missing.output.contains("nvidia-smi not found"))
    }
}

@Suite("allot simulate")
struct SimulateCLITests {
    @Test("replays the example trace and prints the JSON fields SPEC §6 lists")
    func example() throws {
        let root = Repository.root + "/ops/simulation/"
        let result = try runBuilt("allot", ["simulate", "--cluster", root + "cluster.csv", "--trace", root + "trace.csv", "--output", "json"])
        #expect(result.status == 0, "\(result.output)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        for key in [
            "gpus", "allocatedGPUMilli", "peakAllocatedGPUMilli", "placed", "unplaced", "waitsByOrg", "waitsByPriority", "decisionsPerSecond",
        ] {
            #expect(json[key] != nil, "missing \(key)")
        }
        #expect(json["gpus"] as? Int == 128)
    }

    @Test("a malformed trace names the file, line and column")
    func malformed() throws {
        let root = Repository.root + "/ops/simulation/"
        let trace = try CLITests.temporaryFile(
            "id,submit_s,duration_s,org,kind,pool,nodes,gpus_per_node,gpu_milli,gpu_model,cpu_milli,memory_mib,priority,time_limit_s\n1,0,10,o,training,h200,one,1,,,0,0,1,\n",
            extension: "csv")
        let result = try runBuilt("allot", ["simulate", "--cluster", root + "cluster.csv", "--trace", trace])
        #expect(result.status != 0)
        #expect(result.output.contains("\(trace):2: nodes"))
    }
}
