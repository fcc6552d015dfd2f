import AllotAgent
import AllotCore
import AllotDatabaseTesting
import AllotHTTPClient
import AllotHTTPServer
import AllotServer
import AllotStore
import AllotTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOFoundationCompat
import PostgresNIO
import Testing

/// The scheduler's side of a shared node: what a stolen agent token can and cannot make allotd do, and what
/// an agent accepts from a caller that is not allotd.
@Suite("Agents: fixed addresses, signed requests, reports checked", databaseTests)
struct AgentTrustTests {
    static let op = Principal(name: "op", role: .operator)

    static func agent(_ node: String) -> Principal { Principal(name: "agent:\(node)", role: .agent, node: node) }

    static func report(
        _ db: Database, _ node: String, url: String = "http://127.0.0.1:1", gpus: Int = 8, ranks: [RankStatus] = []
    ) async throws
        -> HeartbeatReply
    {
        try await AgentStore(database: db).report(
            AgentReport(
                node: node, agentURL: url, cpuMilli: 64000, memoryMiB: 1 << 20,
                gpus: (0..<gpus).map { GPUInfo(index: $0, uuid: "\(node)-\($0)", model: "H200", memoryMiB: 1) }, ranks: ranks),
            from: Self.agent(node))
    }

    static func setUp(_ db: Database) async throws {
        _ = try await PolicyStore(database: db).apply(
            Policy(
                pools: [Pool(name: "h200")],
                organizations: [
                    Organization(name: "lab", allocations: [Allocation(pool: "h200", guaranteedGPUs: 16, limitGPUs: 16, gpuHours: 1000)])
                ],
                priorityClasses: [PriorityClass(name: "standard", value: 100)], defaults: PolicyDefaults(priorityClass: "standard")),
            by: Self.op, dryRun: false)
        for n in ["n1", "n2"] {
            _ = try await NodeStore(database: db).add(name: n, pool: "h200", block: nil, by: Self.op)
            _ = try await Self.report(db, n)
        }
    }

    static func audit(_ db: Database, _ action: String) async throws -> [AuditRecord] {
        try await AuditStore(database: db).list(since: nil).filter { $0.action == action }
    }

    @Test("a heartbeat that moves the agent's address is refused and audited; the enrolled address stands")
    func fixedAddress() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(db)
            await #expect(throws: StoreError.self) { _ = try await Self.report(db, "n1", url: "http://10.6.6.6:9101") }
            #expect(try await NodeStore(database: db).agentEndpoint("n1")?.url == "http://127.0.0.1:1")
            let refused = try await Self.audit(db, "agent.report")
            #expect(refused.count == 1 && refused[0].outcome.contains("enrolled at http://127.0.0.1:1"))
            // Re-enrolment is an operator's act: new credentials, a new address, a new key (enrolment 2).
            let (token, enrolment) = try await NodeStore(database: db).enrol("n1", agentURL: "http://127.0.0.1:2", by: Self.op)
            #expect(enrolment == 2 && token.hasPrefix("allot_"))
            _ = try await Self.report(db, "n1", url: "http://127.0.0.1:2")
            #expect(try await NodeStore(database: db).agentEndpoint("n1")?.enrolment == 2)
            // The database holds nothing a reader could command an agent with.
            let columns = try await db.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'nodes'")
                .decode(String.self).reduce(into: [String]()) { $0.append($1) }
            #expect(!columns.contains("callback_token"))
        }
    }

    @Test("an exit reported by another node's agent for a rank it does not run is ignored and audited")
    func foreignExit() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(db)
            let id = try await JobStore(database: db).submit(
                JobSpec(name: "j", org: "lab", pool: "h200", gpusPerNode: 8, command: "sleep 600"), by: Self.op
            ) { _, _ in nil }
            let cycle = SchedulingCycle(store: SchedulerStore(database: db), placer: Placer(), logger: db.logger)
            #expect(try await cycle.run().placed == [id])
            let node = try #require(try await JobStore(database: db).show(id, scope: .all).attempts.first?.nodes.first?.node)
            let other = node == "n1" ? "n2" : "n1"
            let key = RankKey(jobID: id, attempt: 1, rank: 0)
            try await DispatchStore(database: db).markDispatched(key)
            _ = try await Self.report(db, node, ranks: [RankStatus(key: key, state: .running)])
            // The other node's agent claims the rank exited 0: nothing moves.
            _ = try await Self.report(db, other, ranks: [RankStatus(key: key, state: .exited, exitCode: 0)])
            #expect(try await JobStore(database: db).show(id, scope: .all).state == .running)
            let ignored = try await Self.audit(db, "rank.report.ignored")
            #expect(ignored.count == 1 && ignored[0].actor == "agent:agent:\(other)")
        }
    }

    @Test("a heartbeat cannot take away GPUs that live work holds; the refusal is audited")
    func claimedGPUsStay() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(db)
            let id = try await JobStore(database: db).submit(
                JobSpec(name: "j", org: "lab", pool: "h200", gpusPerNode: 2, command: "sleep 600"), by: Self.op
            ) { _, _ in nil }
            _ = try await SchedulingCycle(store: SchedulerStore(database: db), placer: Placer(), logger: db.logger).run()
            let rank = try #require(try await JobStore(database: db).show(id, scope: .all).attempts.first?.nodes.first)
            _ = try await Self.report(db, rank.node, gpus: 0)
            let gpus = try #require(try await NodeStore(database: db).list().first { $0.name == rank.node }?.gpus)
            #expect(Set(gpus.map(\.index)) == Set(rank.gpus))  // the held ones stay; the idle ones went absent
            #expect(try await Self.audit(db, "gpu.missing").count == rank.gpus.count)
        }
    }

    @Test("an agent token reaches the agent routes of its own node only: no job, quota, log, node or audit route")
    func agentTokenScope() async throws {
        try await TestDatabase.with { db in
            try await Self.setUp(db)
            let token = try await NodeStore(database: db).enrol("n1", agentURL: "http://127.0.0.1:1", by: Self.op).token
            let app = Application(router: API(database: db, wake: Wakeup(), logger: db.logger).router())
            try await app.test(.router) { client in
                for (method, path) in [
                    (HTTPRequest.Method.get, "/v1/jobs"), (.get, "/v1/jobs/1"), (.get, "/v1/jobs/1/log"), (.post, "/v1/jobs"), (.get, "/v1/quota"),
                    (.get, "/v1/nodes"), (.get, "/v1/audit"), (.post, "/v1/jobs/1/cancel"), (.post, "/v1/policy"),
                ] {
                    try await client.execute(uri: path, method: method, headers: [.authorization: "Bearer \(token)"]) { response in
                        #expect(response.status == .forbidden, "\(method) \(path)")
                    }
                }
            }
        }
    }
}

@Suite("The agent's API answers allotd's signature only")
struct AgentSignatureTests {
    static let key = Data((0..<32).map { UInt8($0) })

    static func signed(
        _ method: String, _ path: String, body: Data = Data(), key: Data = Self.key, at: Date = Date(), nonce: String? = nil
    )
        -> HTTPFields
    {
        var h = HTTPFields()
        h[HTTPField.Name(AgentSignature.header)!] = AgentSignature.sign(
            method: method, path: path, body: body, key: key, at: at, nonce: nonce ?? AgentSignature.newNonce())
        return h
    }

    @Test("unsigned, wrongly signed, stale and replayed requests are refused; a fresh signed one is answered")
    func signatures() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-sig-\(UUID().uuidString.prefix(8))")
        let api = AgentAPI(supervisor: try Supervisor(stateDir: dir, node: "n1"), nodeKey: Self.key)
        try await Application(router: api.router()).test(.router) { client in
            try await client.execute(uri: "/v1/attempts", method: .get) { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/v1/attempts", method: .get, headers: [.authorization: "Bearer anything"]) {
                #expect($0.status == .unauthorized)
            }
            let other = Data((0..<32).map { UInt8(255 - $0) })
            try await client.execute(uri: "/v1/attempts", method: .get, headers: Self.signed("GET", "/v1/attempts", key: other)) {
                #expect($0.status == .unauthorized)
            }
            try await client.execute(
                uri: "/v1/attempts", method: .get, headers: Self.signed("GET", "/v1/attempts", at: Date().addingTimeInterval(-120))
            ) { #expect($0.status == .unauthorized) }
            // Signed for another path or body: refused.
            try await client.execute(uri: "/v1/attempts", method: .get, headers: Self.signed("GET", "/v1/attempts/1/1/0/log")) {
                #expect($0.status == .unauthorized)
            }
            let fresh = Self.signed("GET", "/v1/attempts", nonce: "0123456789abcdef0123456789abcdef")
            try await client.execute(uri: "/v1/attempts", method: .get, headers: fresh) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/attempts", method: .get, headers: fresh) { response in
                #expect(response.status == .unauthorized)
                #expect(String(buffer: response.body).contains("replayed"))
            }
        }
    }

    @Test("steps: only the attempt's step key opens them; allotd's node key, another attempt's key and a rank with none are refused")
    func stepKeys() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-steps-\(UUID().uuidString.prefix(8))")
        let supervisor = try Supervisor(stateDir: dir, node: "n2")
        let stepKey = Data((0..<32).map { UInt8($0 * 7 % 256) })
        let key = RankKey(jobID: 9, attempt: 1, rank: 1)
        var launch = LaunchRequest(
            key: key, command: "true", env: [:], workingDir: nil, gpuIndices: [],
            gang: GangInfo(masterAddr: "127.0.0.1", masterPort: 29500, nnodes: 2, nodeRank: 1, nprocPerNode: 1), gracePeriodSeconds: 1,
            tenant: RankTenant(org: "lab", owner: "alice", account: "nobody"))
        launch.slurm = SlurmLaunch(
            options: SlurmOptions(batchStep: true), jobName: "j", account: "lab", partition: "h200",
            nodes: [.init(name: "n1", address: "127.0.0.1"), .init(name: "n2", address: "127.0.0.1")], stepKey: NodeKey.hex(stepKey))
        _ = try await supervisor.launch(launch)
        var plain = launch
        plain.key = RankKey(jobID: 10, attempt: 1, rank: 1)
        plain.slurm = nil
        _ = try await supervisor.launch(plain)
        let api = AgentAPI(supervisor: supervisor, nodeKey: Self.key)
        let tasks = try JSONEncoder().encode(
            StepTasks(
                step: 0, argv: ["echo", "hi"], tasks: [1], ntasks: 2, nnodes: 2, nodeID: 1, nodelist: "n[1-2]", tasksPerNode: "1(x2)", label: true))
        try await Application(router: api.router()).test(.router) { client in
            for (why, k) in [("allotd's node key", Self.key), ("another key", Data((0..<32).map { UInt8($0) }))] {
                try await client.execute(
                    uri: "/v1/steps/9/1/1", method: .post, headers: Self.signed("POST", "/v1/steps/9/1/1", body: tasks, key: k),
                    body: ByteBuffer(data: tasks)
                ) { #expect($0.status == .unauthorized, "\(why)") }
            }
            try await client.execute(
                uri: "/v1/steps/10/1/1", method: .post, headers: Self.signed("POST", "/v1/steps/10/1/1", body: tasks, key: stepKey),
                body: ByteBuffer(data: tasks)
            ) { #expect($0.status == .unauthorized, "a rank that is no batch job's takes no steps") }
            try await client.execute(
                uri: "/v1/steps/9/1/1", method: .post, headers: Self.signed("POST", "/v1/steps/9/1/1", body: tasks, key: stepKey),
                body: ByteBuffer(data: tasks)
            ) { #expect($0.status == .created) }
            var output = ""
            for _ in 0..<100 where !output.contains("1: hi") {
                await supervisor.poll()
                try await client.execute(
                    uri: "/v1/steps/9/1/1/0?offset=0", method: .get, headers: Self.signed("GET", "/v1/steps/9/1/1/0?offset=0", key: stepKey)
                ) { response in
                    if let p = try? JSONDecoder().decode(StepProgress.self, from: Data(buffer: response.body)) {
                        output = String(decoding: p.output, as: UTF8.self)
                    }
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(output == "1: hi\n", "the task ran with its label")
        }
    }
}
