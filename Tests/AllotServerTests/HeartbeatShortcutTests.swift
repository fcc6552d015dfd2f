import AllotCore
import AllotDatabaseTesting
import AllotServer
import AllotStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOFoundationCompat
import PostgresNIO
import Testing

@Suite("Heartbeats that change nothing take the short path", databaseTests)
struct HeartbeatShortcutTests {
    static let report = AgentReport(
        node: "n1", agentURL: "http://127.0.0.1:1", cpuMilli: 8000, memoryMiB: 65536,
        gpus: (0..<8).map { GPUInfo(index: $0, uuid: "g\($0)", model: "H200", memoryMiB: 1) }, ranks: [])

    static func beat(_ client: some TestClientProtocol, _ token: String, _ report: AgentReport = Self.report) async throws -> HTTPResponse.Status {
        try await client.execute(
            uri: "/v1/agents/heartbeat", method: .post, headers: [.authorization: "Bearer \(token)"],
            body: ByteBuffer(data: try WireJSON.encoder.encode(report))
        ) { $0.status }
    }

    static func lastHeartbeat(_ db: Database) async throws -> Date? {
        try await db.query("SELECT last_heartbeat FROM nodes WHERE name = 'n1'").decode(Date?.self).first { _ in true } ?? nil
    }

    @Test("an unchanged report moves the node's time only; a changed one, a report with ranks and a lost node's take the full path")
    func shortPath() async throws {
        try await TestDatabase.with { db in
            let s = try await APITests.setUp(db)
            try await s.app.test(.router) { client in
                #expect(try await Self.beat(client, s.agentToken) == .ok)  // full: remembered
                let before = try #require(try await Self.lastHeartbeat(db))
                // What only the full path checks (the enrolled address) no longer holds: the short path still answers,
                // and the node's time moves.
                try await db.query("UPDATE nodes SET agent_url = 'http://127.0.0.1:2' WHERE name = 'n1'")
                try await Task.sleep(for: .milliseconds(20))
                #expect(try await Self.beat(client, s.agentToken) == .ok)
                #expect(try #require(try await Self.lastHeartbeat(db)) > before)
                // A report that differs takes the full path, which refuses the address.
                var changed = Self.report
                changed.cpuMilli = 4000
                #expect(try await Self.beat(client, s.agentToken, changed) == .forbidden)
                try await db.query("UPDATE nodes SET agent_url = 'http://127.0.0.1:1' WHERE name = 'n1'")
                #expect(try await Self.beat(client, s.agentToken, changed) == .ok)
                #expect(try await db.query("SELECT cpu_milli FROM nodes WHERE name = 'n1'").decode(Int.self).first { _ in true } == 4000)

                // A lost node's report, unchanged or not, brings it back: only the full path does.
                try await NodeStore(database: db).declareLost("n1", by: Principal(name: "op", role: .operator))
                #expect(try await db.query("SELECT state::text FROM nodes WHERE name = 'n1'").decode(String.self).first { _ in true } == "lost")
                #expect(try await Self.beat(client, s.agentToken, changed) == .ok)
                #expect(try await db.query("SELECT state::text FROM nodes WHERE name = 'n1'").decode(String.self).first { _ in true } == "ready")
            }
        }
    }

    static func reply(_ client: some TestClientProtocol, _ token: String) async throws -> HeartbeatReply {
        try await client.execute(
            uri: "/v1/agents/heartbeat", method: .post, headers: [.authorization: "Bearer \(token)"],
            body: ByteBuffer(data: try WireJSON.encoder.encode(Self.report))
        ) { try WireJSON.decoder.decode(HeartbeatReply.self, from: Data(buffer: $0.body)) }
    }

    @Test("work placed on an idle node ends its short path: the next unchanged report is answered with the rank live, and again once it ended")
    func workPlaced() async throws {
        try await TestDatabase.with { db in
            let s = try await APITests.setUp(db)
            try await s.app.test(.router) { client in
                #expect(try await Self.reply(client, s.agentToken) == HeartbeatReply(live: [], acknowledged: []))
                #expect(try await Self.reply(client, s.agentToken) == HeartbeatReply(live: [], acknowledged: []))  // the short path
                let op = Principal(name: "op", role: .operator)
                let id = try await JobStore(database: db).submit(
                    JobSpec(name: "j", org: "lab", pool: "h200", gpusPerNode: 1, command: "sleep 600"), by: op
                ) { _, _ in nil }
                #expect(try await SchedulingCycle(store: SchedulerStore(database: db), placer: Placer(), logger: db.logger).run().placed == [id])
                let rank = RankKey(jobID: id, attempt: 1, rank: 0)
                // Unchanged report, but the database holds a rank on the node: the full path answers, naming it.
                #expect(try await Self.reply(client, s.agentToken).live == [rank])
                #expect(try await Self.reply(client, s.agentToken).live == [rank])
                _ = try await JobStore(database: db).cancel(id, by: op, scope: .all)
                #expect(try await Self.reply(client, s.agentToken).live == [])
            }
        }
    }

    @Test("a report naming a faulty GPU never takes the short path: an operator's restore meets the agent's report at once")
    func faultyGPU() async throws {
        try await TestDatabase.with { db in
            let s = try await APITests.setUp(db)
            var report = Self.report
            report.gpus[3].health = .quarantined
            report.gpus[3].healthDetail = "double-bit ECC errors"
            let faulty = report
            @Sendable func health() async throws -> String? {
                try await db.query("SELECT health::text FROM gpus WHERE node = 'n1' AND idx = 3").decode(String.self).first { _ in true }
            }
            try await s.app.test(.router) { client in
                #expect(try await Self.beat(client, s.agentToken, faulty) == .ok)
                #expect(try await health() == "quarantined")
                try await NodeLifecycleStore(database: db).restoreGPU(
                    node: "n1", index: 3, reason: "reseated", by: Principal(name: "op", role: .operator))
                #expect(try await health() == "healthy")
                #expect(try await Self.beat(client, s.agentToken, faulty) == .ok)
                #expect(try await health() == "quarantined", "the same report, answered unread, left the restored GPU healthy")
            }
        }
    }
}
