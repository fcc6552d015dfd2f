import AllotCore
import AllotDatabaseTesting
import AllotServer
import AllotStore
import AllotTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// `/metrics` checked by Prometheus' own promtool, and the web page rendered by a real headless Chromium.
@Suite("Metrics and the web page", databaseTests)
struct ObservabilityTests {
    /// A cluster with something in every state: a running gang, a shared GPU, a quarantined GPU, a queued job
    /// with its reason, a lost node.
    static func populate(_ db: Database) async throws {
        let op = Principal(name: "op", role: .operator)
        _ = try await PolicyStore(database: db).apply(
            Policy(
                pools: [Pool(name: "h200", gpuModel: "H200")],
                organizations: [
                    Organization(name: "defense", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 16, gpuHours: 5000)]),
                    Organization(name: "university", allocations: [Allocation(pool: "h200", guaranteedGPUs: 4, limitGPUs: 8, gpuHours: 100)]),
                ],
                priorityClasses: [PriorityClass(name: "standard", value: 100)], defaults: PolicyDefaults(priorityClass: "standard")),
            by: op, dryRun: false)
        for n in ["gpu-001", "gpu-002", "gpu-003"] {
            _ = try await NodeStore(database: db).add(name: n, pool: "h200", block: "rack-1", by: op)
            var gpus = (0..<8).map { GPUInfo(index: $0, uuid: "\(n)-\($0)", model: "H200", memoryMiB: 143_771, nvlinkDomain: 0) }
            if n == "gpu-003" { gpus[7].health = .quarantined }
            _ = try await AgentStore(database: db).report(
                AgentReport(node: n, agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20, gpus: gpus, ranks: []),
                from: Principal(name: "agent:\(n)", role: .agent, node: n))
        }
        let jobs = JobStore(database: db)
        let submit = { (spec: JobSpec) in
            try await jobs.submit(spec, by: op) { _ in nil }
        }
        let gang = try await submit(JobSpec(name: "radar-train", org: "defense", pool: "h200", nodes: 2, gpusPerNode: 8, command: "x"))
        _ = try await submit(JobSpec(name: "vision-serve", org: "university", kind: .inference, pool: "h200", gpuMilli: 500, command: "x"))
        let store = SchedulerStore(database: db)
        _ = try await store.commit(Placer().place(try await store.queue(), on: try await store.nodeSnapshots()))
        _ = try await submit(JobSpec(name: "too-big-now", org: "university", pool: "h200", nodes: 2, gpusPerNode: 8, command: "x"))
        _ = try await store.commit(Placer().place(try await store.queue(), on: try await store.nodeSnapshots()))
        for rank in 0..<2 {
            let key = RankKey(jobID: gang, attempt: 1, rank: rank)
            try await DispatchStore(database: db).markDispatched(key)
            let node = try await JobStore(database: db).show(gang, scope: .all).attempts[0].nodes[rank].node
            _ = try await AgentStore(database: db).report(
                AgentReport(
                    node: node, agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20,
                    gpus: (0..<8).map { GPUInfo(index: $0, uuid: "\(node)-\($0)", model: "H200", memoryMiB: 143_771, nvlinkDomain: 0) },
                    ranks: [RankStatus(key: key, state: .running)]),
                from: Principal(name: "agent:\(node)", role: .agent, node: node))
        }
    }

    static func which(_ tool: String) -> String? {
        ["/usr/bin/\(tool)", "/usr/local/bin/\(tool)", "/bin/\(tool)"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func run(_ path: String, _ arguments: [String], stdin: Data? = nil) async throws -> (Int32, String) {
        try await offPool { try runToCompletion(path, arguments, stdin: stdin) }
    }

    /// Tools CI installs; a developer's quick run without them skips, CI never does.
    static var inCI: Bool { ProcessInfo.processInfo.environment["CI"] != nil }

    @Test("/metrics passes promtool check metrics and reports the cluster")
    func metrics() async throws {
        guard let promtool = Self.which("promtool") else {
            #expect(!Self.inCI, "promtool is missing in CI (.ci/run installs Debian's prometheus)")
            return
        }
        try await TestDatabase.with { db in
            try await Self.populate(db)
            let router = API(database: db, wake: Wakeup(), logger: db.logger).router()
            try await Application(router: router).test(.router) { client in
                try await client.execute(uri: "/metrics", method: .get) { response in
                    #expect(response.status == .ok)
                    let text = String(buffer: response.body)
                    let (status, output) = try await Self.run(promtool, ["check", "metrics"], stdin: Data(text.utf8))
                    #expect(status == 0, "promtool: \(output)\n\(text)")
                    #expect(text.contains(#"allot_gpus{pool="h200",state="allocated"} 16.5"#))
                    #expect(text.contains(#"allot_gpus{pool="h200",state="quarantined"} 1"#))
                    #expect(text.contains(#"allot_queue_jobs{org="university",priority_class="standard"} 1"#))
                    #expect(text.contains(#"allot_nodes{pool="h200",state="ready"} 3"#))
                    #expect(text.contains(#"allot_quota_in_use_gpus{org="defense",pool="h200"} 16"#))
                    #expect(text.contains("allot_node_heartbeat_age_seconds{node=\"gpu-001\"}"))
                    #expect(text.contains("# TYPE allot_placement_decision_seconds histogram"))
                    #expect(text.contains(#"allot_quota_entitlement_gpu_seconds{org="university",pool="h200"} 360000"#))
                }
            }
        }
    }

    @Test("the web page renders in headless Chromium with the cluster's quota, nodes and queue", .timeLimit(.minutes(5)))
    func webPage() async throws {
        guard let chromium = Self.which("chromium") ?? Self.which("chromium-browser") else {
            #expect(!Self.inCI, "chromium is missing in CI (.ci/run installs Debian's chromium)")
            return
        }
        try await TestDatabase.with { db in
            try await Self.populate(db)
            let router = API(database: db, wake: Wakeup(), logger: db.logger).router()
            let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
            try await app.test(.live) { client in
                let port = try #require(client.port)
                let url = "http://127.0.0.1:\(port)/"
                let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)").path
                let common = ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(profile)", "--window-size=1280,900"]
                let (status, dom) = try await Self.run(chromium, common + ["--dump-dom", url])
                #expect(status == 0)
                for text in ["radar-train", "vision-serve", "too-big-now", "capacity", "defense", "university", "gpu-003", "quarantined"] {
                    #expect(dom.contains(text), "the page lacks \(text)")
                }
                #expect(dom.contains("class=\"gpu quarantined\""))
                #expect(dom.contains("class=\"gpu part\""))
                let png =
                    (ProcessInfo.processInfo.environment["ALLOT_SCREENSHOT"]
                        ?? FileManager.default.temporaryDirectory.appendingPathComponent("allot-page-\(UUID().uuidString).png").path)
                _ = try await Self.run(chromium, common + ["--screenshot=\(png)", url])
                let size = (try? FileManager.default.attributesOfItem(atPath: png)[.size] as? Int) ?? 0
                #expect(size > 10_000, "screenshot is \(size) bytes")
            }
        }
    }
}

@Suite("ops/ files")
struct OpsFilesTests {
    @Test("the Prometheus config and alert rules pass promtool; the Grafana dashboard is JSON with panels")
    func prometheusAndGrafana() async throws {
        let ops = Repository.root + "/ops"
        if let promtool = ObservabilityTests.which("promtool") {
            let rules = try await ObservabilityTests.run(promtool, ["check", "rules", ops + "/prometheus/alerts.yml"])
            #expect(rules.0 == 0, "\(rules.1)")
            let config = try await ObservabilityTests.run(promtool, ["check", "config", ops + "/prometheus/prometheus.yml"])
            #expect(config.0 == 0, "\(config.1)")
        } else {
            #expect(!ObservabilityTests.inCI, "promtool is missing in CI")
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: ops + "/grafana/allot-dashboard.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        #expect(panels.count >= 8)
        // Every panel queries a metric allotd exports.
        for p in panels {
            let expr = ((p["targets"] as? [[String: Any]])?.first?["expr"] as? String) ?? ""
            #expect(expr.contains("allot_"), "panel \(p["title"] ?? "?") queries no Allot metric")
        }
    }
}
