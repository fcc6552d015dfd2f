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
            try await jobs.submit(spec, by: op) { _, _ in nil }
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

    @Test("/metrics needs a scrape token, passes promtool check metrics and reports the cluster")
    func metrics() async throws {
        guard let promtool = Self.which("promtool") else {
            #expect(!Self.inCI, "promtool is missing in CI (.ci/run installs Debian's prometheus)")
            return
        }
        try await TestDatabase.with { db in
            try await Self.populate(db)
            let op = Principal(name: "op", role: .operator)
            let scraper = try await TokenStore(database: db).create(name: "prometheus", role: .scraper, org: nil, actor: op).token
            let member = try await TokenStore(database: db).create(name: "uma", role: .member, org: "university", actor: op).token
            let router = API(database: db, wake: Wakeup(), logger: db.logger).router()
            try await Application(router: router).test(.router) { client in
                try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .unauthorized) }
                try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer \(member)"]) {
                    #expect($0.status == .forbidden)
                }
                // A scrape token reads the metrics and nothing else.
                try await client.execute(uri: "/v1/jobs", method: .get, headers: [.authorization: "Bearer \(scraper)"]) {
                    #expect($0.status == .forbidden)
                }
                try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer \(scraper)"]) { response in
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

    @Test(
        "in headless Chromium: the page asks for a token, signs in with a session cookie (HttpOnly, SameSite=Strict), shows an operator everything and a member only their own",
        .timeLimit(.minutes(5)))
    func webPage() async throws {
        guard let chromium = Self.which("chromium") ?? Self.which("chromium-browser") else {
            #expect(!Self.inCI, "chromium is missing in CI (.ci/run installs Debian's chromium)")
            return
        }
        try await TestDatabase.with { db in
            try await Self.populate(db)
            let op = Principal(name: "op", role: .operator)
            let operatorToken = try await TokenStore(database: db).bootstrap()
            let member = try await TokenStore(database: db).create(name: "uma", role: .member, org: "university", actor: op).token
            let router = API(database: db, wake: Wakeup(), logger: db.logger).router()
            let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
            try await app.test(.live) { client in
                let url = "http://127.0.0.1:\(try #require(client.port))/"
                let (operatorPage, session, screenshot) = try await offPool { () throws -> (String, [String: String]?, Int) in
                    let browser = try Browser(chromium: chromium)
                    try browser.open(url)
                    guard browser.html.contains("id=\"login\"") else {
                        throw Browser.Failure(description: "no login form: \(browser.html.prefix(400))")
                    }
                    try Self.signIn(browser, token: operatorToken)
                    let png =
                        ProcessInfo.processInfo.environment["ALLOT_SCREENSHOT"]
                        ?? FileManager.default.temporaryDirectory.appendingPathComponent("allot-page-\(UUID().uuidString).png").path
                    try browser.screenshot(to: png)
                    let size = (try? FileManager.default.attributesOfItem(atPath: png)[.size] as? Int) ?? 0
                    return (browser.html, try browser.cookie("allot_session", for: url), size)
                }
                for text in ["radar-train", "vision-serve", "too-big-now", "capacity", "defense", "university", "gpu-003", "quarantined"] {
                    #expect(operatorPage.contains(text), "the operator's page lacks \(text)")
                }
                #expect(operatorPage.contains("class=\"gpu quarantined\""))
                #expect(operatorPage.contains("class=\"gpu part\""))
                #expect(screenshot > 10_000, "screenshot is \(screenshot) bytes")
                let cookie = try #require(session, "no session cookie")
                #expect(cookie["httpOnly"] == "1" || cookie["httpOnly"] == "true", "\(cookie)")
                #expect(cookie["sameSite"] == "Strict", "\(cookie)")
                #expect(cookie["secure"] == "0" || cookie["secure"] == "false", "\(cookie)")  // plain HTTP here; Secure behind TLS
                // A member sees their organisation's jobs and quota, the node grid, and not another's job names.
                let memberPage = try await offPool { () throws -> String in
                    let browser = try Browser(chromium: chromium)
                    try browser.open(url)
                    try Self.signIn(browser, token: member)
                    return browser.html
                }
                for text in ["vision-serve", "too-big-now", "university", "gpu-003"] {
                    #expect(memberPage.contains(text), "the member's page lacks \(text)")
                }
                for text in ["radar-train", ">defense<"] { #expect(!memberPage.contains(text), "the member's page shows \(text)") }
            }
        }
    }

    /// Types the token into the page's form and submits it, as a person would; waits for the signed-in page.
    static func signIn(_ browser: Browser, token: String) throws {
        _ = try browser.evaluate("document.getElementById('token').value = '\(token)'; document.getElementById('login').submit(); true")
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if browser.html.contains("Sign out") { return }
            usleep(100_000)
        }
        throw Browser.Failure(description: "not signed in: \(browser.html.prefix(400))")
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
            // promtool reads the scrape token's file: check a copy that names one that exists.
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("allot-prom-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: folder) }
            let text = try String(contentsOfFile: ops + "/prometheus/prometheus.yml", encoding: .utf8)
            #expect(text.contains("credentials_file: /etc/prometheus/allot-scrape-token"))
            try Data("allot_x".utf8).write(to: folder.appendingPathComponent("token"))
            try FileManager.default.copyItem(atPath: ops + "/prometheus/alerts.yml", toPath: folder.appendingPathComponent("alerts.yml").path)
            try text.replacingOccurrences(of: "/etc/prometheus/allot-scrape-token", with: folder.appendingPathComponent("token").path)
                .write(to: folder.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
            let config = try await ObservabilityTests.run(promtool, ["check", "config", folder.appendingPathComponent("prometheus.yml").path])
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
