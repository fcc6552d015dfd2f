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

    @Test("two grants of one organisation in one pool may not overlap: a monthly one overlaps every window; disjoint windows are fine")
    func overlappingGrants() throws {
        let head = "pools:\n  - name: h200\n  - name: h100\norganizations:\n  - name: lab\n    allocations:\n"
        func grant(_ pool: String, _ window: String?) -> String {
            "      - pool: \(pool)\n        guaranteedGPUs: 1\n        gpuHours: 10\n"
                + (window.map { w in
                    let d = w.split(separator: " ")
                    return "        validFrom: \(d[0])\n        validUntil: \(d[1])\n"
                } ?? "")
        }
        let cases: [(String, [String?], [String], Bool)] = [
            ("monthly and a window", [nil, "2026-01-01 2026-06-30"], ["h200", "h200"], false),
            ("two windows sharing a day", ["2026-01-01 2026-06-30", "2026-06-30 2026-12-31"], ["h200", "h200"], false),
            ("disjoint windows", ["2026-01-01 2026-06-30", "2026-07-01 2026-12-31"], ["h200", "h200"], true),
            ("monthly in two pools", [nil, nil], ["h200", "h100"], true),
        ]
        for (name, windows, pools, valid) in cases {
            let text = head + zip(pools, windows).map { grant($0.0, $0.1) }.joined()
            do {
                _ = try PolicyParser.parse(files: [("o.yaml", text)])
                #expect(valid, "\(name): accepted")
            } catch {
                #expect(!valid, "\(name): \(error)")
                #expect(
                    error.issues.contains {
                        $0.field == "organizations[0].allocations[1].validFrom" && $0.message.contains("overlaps organizations[0].allocations[0]")
                    }, "\(name): \(error)")
            }
        }
    }

    @Test("projects inside a grant: read with their users; limits beyond the grant's, a repeated name or an unknown key are errors")
    func projects() throws {
        let head =
            "pools:\n  - name: h200\norganizations:\n  - name: lab\n    allocations:\n      - pool: h200\n        guaranteedGPUs: 8\n        gpuHours: 100\n        projects:\n"
        let good =
            head
            + "          - name: llm\n            limitGPUs: 4\n            share: 3\n            users:\n              alice: {limitGPUs: 2, gpuHours: 10}\n          - name: vision\n"
        let policy = try PolicyParser.parse(files: [("o.yaml", good)])
        let projects = try #require(policy.organizations.first?.allocations.first?.projects)
        #expect(
            projects == [
                ProjectLimit(name: "llm", limitGPUs: 4, share: 3, users: ["alice": UserLimit(limitGPUs: 2, gpuHours: 10)]),
                ProjectLimit(name: "vision"),
            ])
        let bad =
            head + "          - name: llm\n            limitGPUs: 9\n            gpuHours: 101\n          - name: llm\n            colour: red\n"
        do {
            _ = try PolicyParser.parse(files: [("o.yaml", bad)])
            Issue.record("accepted")
        } catch {
            let fields = Set(error.issues.map(\.field))
            for f in [
                "organizations[0].allocations[0].projects[0].limitGPUs", "organizations[0].allocations[0].projects[0].gpuHours",
                "organizations[0].allocations[0].projects[1].name", "organizations[0].allocations[0].projects[1].colour",
            ] {
                #expect(fields.contains(f), "missing \(f) in \(fields)")
            }
        }
    }
}
