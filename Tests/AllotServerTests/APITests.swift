import AllotCore
import AllotDatabaseTesting
import AllotHTTPClient
import AllotServer
import AllotStore
import AllotTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOFoundationCompat
import PostgresNIO
import Testing

let databaseTests = ConditionTrait.enabled(if: TestDatabase.isConfigured, "needs ALLOT_TEST_DATABASE_URL (ops/test.sh sets it)")

/// The HTTP API against a real database, through Hummingbird's router test client.
@Suite("HTTP API", databaseTests)
struct APITests {
    struct Setup {
        let app: Application<RouterResponder<AllotRequestContext>>
        let operatorToken: String
        let memberToken: String
        let agentToken: String
    }

    static func setUp(_ db: Database) async throws -> Setup {
        let op = Principal(name: "op", role: .operator)
        _ = try await PolicyStore(database: db).apply(
            Policy(
                pools: [Pool(name: "h200")],
                organizations: [
                    Organization(name: "lab", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 8, gpuHours: 100)]),
                    Organization(name: "uni", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 8, gpuHours: 100)]),
                ],
                priorityClasses: [PriorityClass(name: "standard", value: 100)],
                defaults: PolicyDefaults(priorityClass: "standard")),
            by: op, dryRun: false)
        let operatorToken = try await TokenStore(database: db).bootstrap()
        let memberToken = try await TokenStore(database: db).create(name: "alice", role: .member, org: "lab", actor: op).token
        let agentToken = try await NodeStore(database: db).add(name: "n1", pool: "h200", block: nil, by: op)
        _ = try await AgentStore(database: db).report(
            AgentReport(
                node: "n1", agentURL: "http://127.0.0.1:1", cpuMilli: 8000, memoryMiB: 65536,
                gpus: (0..<8).map { GPUInfo(index: $0, uuid: "g\($0)", model: "H200", memoryMiB: 1) }, ranks: []),
            from: Principal(name: "agent:n1", role: .agent, node: "n1"))
        let router = API(database: db, wake: Wakeup(), logger: db.logger).router()
        return Setup(app: Application(router: router), operatorToken: operatorToken, memberToken: memberToken, agentToken: agentToken)
    }

    static func error(_ response: TestResponse) throws -> APIErrorBody.Detail {
        try JSONDecoder().decode(APIErrorBody.self, from: Data(buffer: response.body)).error
    }

    @Test(
        "bad job specs get 400 with the field and reason, and nothing is stored",
        arguments: [
            ("pool: h200\ncommand: x\ngpusPerNode: -2", "gpusPerNode"),
            ("pool: h200\ncommand: x\ngpusPerNode: 9", "gpusPerNode"),  // more than any node of the pool has
            ("pool: h200\ncommand: x\nflavour: mild", "flavour"),
            ("pool: nowhere\ncommand: x", "pool"),
            ("pool: h200\ncommand: [x\n", nil),  // malformed YAML
            ("{\"pool\": \"h200\", \"command\": \"x\", \"nodes\": 1e9}", "nodes"),
        ] as [(String, String?)])
    func badSpecs(body: String, field: String?) async throws {
        try await TestDatabase.with { db in
            let s = try await Self.setUp(db)
            try await s.app.test(.router) { client in
                try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer \(s.memberToken)"], body: ByteBuffer(string: body)
                ) { response in
                    #expect(response.status == .badRequest)
                    let error = try Self.error(response)
                    #expect(error.field == field)
                    #expect(!error.message.isEmpty)
                }
            }
            let count = try await db.query("SELECT count(*) FROM jobs").decode(Int.self).first { _ in true }
            #expect(count == 0)
        }
    }

    @Test("tokens: none is 401; members see only their organisation; an agent acts only for its node")
    func authorization() async throws {
        try await TestDatabase.with { db in
            let s = try await Self.setUp(db)
            try await s.app.test(.router) { client in
                try await client.execute(uri: "/v1/jobs", method: .get) { #expect($0.status == .unauthorized) }
                try await client.execute(uri: "/v1/jobs", method: .get, headers: [.authorization: "Bearer nope"]) {
                    #expect($0.status == .unauthorized)
                }
                // An operator submits for uni; alice (lab) cannot see it, the operator can.
                var id: Int64 = 0
                try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer \(s.operatorToken)"],
                    body: ByteBuffer(string: "org: uni\npool: h200\ngpusPerNode: 1\ncommand: sleep 1")
                ) { response in
                    #expect(response.status == .created)
                    let job = try WireJSON.decoder.decode(JobView.self, from: Data(buffer: response.body))
                    #expect(job.org == "uni" && job.state == .queued)
                    id = job.id
                }
                try await client.execute(uri: "/v1/jobs/\(id)", method: .get, headers: [.authorization: "Bearer \(s.memberToken)"]) {
                    #expect($0.status == .notFound)
                }
                try await client.execute(uri: "/v1/jobs", method: .get, headers: [.authorization: "Bearer \(s.memberToken)"]) { response in
                    let jobs = try WireJSON.decoder.decode([JobView].self, from: Data(buffer: response.body))
                    #expect(jobs.isEmpty)
                }
                try await client.execute(uri: "/v1/jobs/\(id)/cancel", method: .post, headers: [.authorization: "Bearer \(s.memberToken)"]) {
                    #expect($0.status == .notFound)
                }
                // A member cannot add nodes or apply policy.
                try await client.execute(
                    uri: "/v1/nodes", method: .post, headers: [.authorization: "Bearer \(s.memberToken)"],
                    body: ByteBuffer(string: #"{"name": "n9", "pool": "h200"}"#)
                ) { #expect($0.status == .forbidden) }
                try await client.execute(
                    uri: "/v1/policy", method: .post, headers: [.authorization: "Bearer \(s.memberToken)"],
                    body: ByteBuffer(
                        string:
                            #"{"pools": [], "organizations": [], "priorityClasses": [], "defaults": {"gracePeriodSeconds": 60, "reclaimDeadlineSeconds": 300, "heartbeatTimeoutSeconds": 30}}"#
                    )
                ) { #expect($0.status == .forbidden) }
                // Nor drain a node: that is an operator's act.
                try await client.execute(
                    uri: "/v1/drains", method: .post, headers: [.authorization: "Bearer \(s.memberToken)"],
                    body: ByteBuffer(string: #"{"nodes": ["n1"], "reason": "x"}"#)
                ) { #expect($0.status == .forbidden) }
                // The agent of n1 cannot report for n2.
                let report = AgentReport(node: "n2", agentURL: "http://127.0.0.1:1", cpuMilli: 0, memoryMiB: 0, gpus: [], ranks: [])
                try await client.execute(
                    uri: "/v1/agents/heartbeat", method: .post, headers: [.authorization: "Bearer \(s.agentToken)"],
                    body: ByteBuffer(data: try JSONEncoder().encode(report))
                ) { #expect($0.status == .forbidden) }
                try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
                try await client.execute(uri: "/readyz", method: .get) { #expect($0.status == .ok) }
            }
        }
    }

    @Test("a job listed as JSON carries the keys scripts rely on")
    func jobJSONKeys() async throws {
        try await TestDatabase.with { db in
            let s = try await Self.setUp(db)
            try await s.app.test(.router) { client in
                try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer \(s.memberToken)"],
                    body: ByteBuffer(string: "pool: h200\ngpusPerNode: 2\ncommand: 'true'")
                ) { #expect($0.status == .created) }
                try await client.execute(uri: "/v1/jobs", method: .get, headers: [.authorization: "Bearer \(s.memberToken)"]) { response in
                    let jobs = try #require(try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [[String: Any]])
                    let keys = Set(jobs.first?.keys.map { $0 } ?? [])
                    #expect(keys.isSuperset(of: ["id", "name", "org", "state", "reason", "attempts"]))
                }
            }
        }
    }
}

@Suite("PostgreSQL away")
struct DatabaseAwayTests {
    @Test("with PostgreSQL unreachable, allotd answers 503 with Retry-After in the API's error shape, never a 5xx of its own")
    func unreachable() async throws {
        // Nothing listens on port 1 of loopback.
        let db = Database(url: try DatabaseURL("postgres://allot@127.0.0.1:1/allot"), logger: Logger(label: "away"), auditKey: Data(count: 32))
        // Run as allotd runs it: the client with its reachability probe.
        let running = Task { await db.run() }
        defer { running.cancel() }
        try await Task.sleep(for: .seconds(2))
        do {
            let app = Application(router: API(database: db, wake: Wakeup(), logger: db.logger).router())
            try await app.test(.router) { client in
                try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer allot_0123456789abcdef"],
                    body: ByteBuffer(string: "pool: h200\ncommand: x\n")
                ) { response in
                    #expect(response.status == .serviceUnavailable)
                    #expect(response.headers[.retryAfter] == "2")
                    let error = try APITests.error(response)
                    #expect(error.code == "unavailable" && error.message.contains("PostgreSQL"))
                }
                // Fast: answered by the probe's finding, not after the pool's minute of retries.
                let clock = ContinuousClock()
                let took = try await clock.measure {
                    try await client.execute(uri: "/v1/jobs", method: .get, headers: [.authorization: "Bearer allot_0123456789abcdef"]) { response in
                        #expect(response.status == .serviceUnavailable)
                    }
                }
                #expect(took < .seconds(2))
            }
        }
    }
}
