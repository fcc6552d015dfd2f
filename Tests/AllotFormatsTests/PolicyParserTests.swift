import AllotCore
import AllotFormats
import Foundation
import Testing

@Suite("Policies/")
struct PolicyParserTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("the example Policies/ folder is valid: pools, four organisations, a restricted defence pool, classes, defaults")
    func examplePolicies() throws {
        let policy = try PolicyParser.load(path: Self.root.appendingPathComponent("Policies").path)
        #expect(policy.organizations.count >= 4)
        #expect(policy.pools.contains { $0.name == "defense-secure" && $0.restrictedTo == ["defense"] })
        #expect(policy.priorityClasses.map(\.name).sorted() == ["critical", "preemptible", "standard"])
        // The class that preempts is not every member's to use.
        let critical = try #require(policy.priorityClasses.first { $0.name == "critical" })
        #expect(critical.organizations == ["defense"] && critical.roles == [.orgAdmin, .operator])
        #expect(
            policy.defaults
                == PolicyDefaults(priorityClass: "standard", gracePeriodSeconds: 60, reclaimDeadlineSeconds: 300, heartbeatTimeoutSeconds: 30))
        let defense = try #require(policy.organizations.first { $0.name == "defense" })
        #expect(defense.allocations.first { $0.pool == "defense-secure" }?.validUntil == "2027-06-30")
    }

    @Test("a file with several mistakes gets every one reported, with its file, line and field")
    func severalMistakes() {
        let text = """
            pools:
              - name: h200
              - name: h200
            organizations:
              - name: lab
                allocations:
                  - pool: h100
                    guaranteedGPUs: 8
                    limitGPUs: 4
                    gpuHours: lots
                    validFrom: 2026-02-30
              - name: uni
                colour: blue
            priorityClasses:
              - name: standard
            defaults:
              priorityClass: urgent
              gracePeriod: soon
            """
        do {
            _ = try PolicyParser.parse(files: [("bad.yaml", text)])
            Issue.record("accepted a broken policy")
        } catch {
            let found = error.issues.map { "\($0.line ?? 0) \($0.field)" }
            let expected = [
                "3 pools[1].name",  // duplicate pool
                "10 organizations[0].allocations[0].gpuHours",  // not a number
                "9 organizations[0].allocations[0].limitGPUs",  // below the guarantee
                "11 organizations[0].allocations[0].validFrom",  // no 30 February
                "13 organizations[1].colour",  // unknown field
                "15 priorityClasses[0].value",  // missing
                "18 defaults.gracePeriod",  // not a duration
                "7 organizations[0].allocations[0].pool",  // unknown pool h100
                "17 defaults.priorityClass",  // unknown class
            ]
            for e in expected { #expect(found.contains(e), "missing \(e) in \(found)") }
            #expect(error.issues.allSatisfy { $0.file == "bad.yaml" && $0.line != nil })
            #expect(error.description.contains("bad.yaml:10: organizations[0].allocations[0].gpuHours: must be a whole number"))
        }
    }
}
