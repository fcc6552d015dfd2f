import AllotCore
import AllotDatabaseTesting
import AllotStore
import PostgresNIO
import Testing

@Suite("The database's state rules and enums match the core's", databaseTests)
struct StateRuleTests {
    @Test("attempt_is_live and rank_is_active say what AttemptState.isLive and RankState.isActive say, for every state")
    func rules() async throws {
        try await TestDatabase.with { db in
            for s in AttemptState.allCases {
                let live = try await db.query("SELECT attempt_is_live(\(s.rawValue)::attempt_state)").decode(Bool.self).first { _ in true }
                #expect(live == s.isLive, "\(s)")
            }
            for s in RankState.allCases {
                let active = try await db.query("SELECT rank_is_active(\(s.rawValue)::rank_state)").decode(Bool.self).first { _ in true }
                #expect(active == s.isActive, "\(s)")
            }
        }
    }

    @Test("every enum of the schema has exactly the core's cases")
    func enums() async throws {
        try await TestDatabase.with { db in
            let labels = { (type: String) async throws -> [String] in
                try await db.query("SELECT unnest(enum_range(NULL::\(unescaped: type)))::text").decode(String.self).reduce(into: []) { $0.append($1) }
            }
            let job_state = try await labels("job_state")
            #expect(job_state == JobState.allCases.map(\.rawValue))
            let attempt_state = try await labels("attempt_state")
            #expect(attempt_state == AttemptState.allCases.map(\.rawValue))
            let rank_state = try await labels("rank_state")
            #expect(rank_state == RankState.allCases.map(\.rawValue))
            let node_state = try await labels("node_state")
            #expect(node_state == NodeState.allCases.map(\.rawValue))
            let gpu_health = try await labels("gpu_health")
            #expect(gpu_health == GPUHealth.allCases.map(\.rawValue))
            let token_role = try await labels("token_role")
            #expect(token_role == Role.allCases.map(\.rawValue))
            let downtime_kind = try await labels("downtime_kind")
            #expect(downtime_kind == DowntimeKind.allCases.map(\.rawValue))
            let job_kind = try await labels("job_kind")
            #expect(job_kind == JobKind.allCases.map(\.rawValue))
        }
    }
}
