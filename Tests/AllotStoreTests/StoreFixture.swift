import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import Foundation
import PostgresNIO
import Testing

/// A small cluster in a fresh database: policy applied, nodes added and registered as their agents would.
struct StoreFixture {
    let db: Database
    let op = Principal(name: "op", role: .operator)

    static let policy = Policy(
        pools: [Pool(name: "h200", gpuModel: "H200"), Pool(name: "secure", gpuModel: "H200", restrictedTo: ["defense"])],
        organizations: [
            Organization(name: "lab", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 16, gpuHours: 1000)]),
            Organization(name: "defense", allocations: [Allocation(pool: "secure", guaranteedGPUs: 8, limitGPUs: 8, gpuHours: 1000)]),
        ],
        priorityClasses: [PriorityClass(name: "standard", value: 100), PriorityClass(name: "short", value: 50, maxTimeSeconds: 3600)],
        defaults: PolicyDefaults(priorityClass: "standard", gracePeriodSeconds: 5, reclaimDeadlineSeconds: 300, heartbeatTimeoutSeconds: 30))

    init(_ db: Database, nodes: [String] = ["n1", "n2"], gpus: Int = 8) async throws {
        self.db = db
        _ = try await PolicyStore(database: db).apply(Self.policy, by: self.op, dryRun: false)
        for n in nodes {
            _ = try await NodeStore(database: db).add(name: n, pool: "h200", block: "r1", by: self.op)
            _ = try await self.report(n, gpus: gpus)
        }
    }

    func agent(_ node: String) -> Principal { Principal(name: "agent:\(node)", role: .agent, node: node) }

    @discardableResult
    func report(_ node: String, gpus: Int = 8, ranks: [RankStatus] = []) async throws -> HeartbeatReply {
        let inventory = (0..<gpus).map { GPUInfo(index: $0, uuid: "GPU-\(node)-\($0)", model: "H200", memoryMiB: 143_771, nvlinkDomain: 0) }
        return try await AgentStore(database: self.db).report(
            AgentReport(
                node: node, agentURL: "http://127.0.0.1:1", cpuMilli: 64000, memoryMiB: 1 << 20, gpus: inventory,
                ranks: ranks),
            from: self.agent(node))
    }

    func submit(_ spec: JobSpec, as principal: Principal? = nil) async throws -> Int64 {
        try await JobStore(database: self.db).submit(spec, by: principal ?? self.op) { spec, shapes in
            Placer.neverFitsReason(
                spec.pendingShape, shapes: shapes)
        }
    }

    /// One scheduling cycle, the scheduler loop's own: snapshot, placement (with backfill), commit, reclaim.
    @discardableResult
    func schedule() async throws -> [Int64] {
        try await SchedulingCycle(store: SchedulerStore(database: self.db), placer: Placer(), logger: self.db.logger).run().placed
    }

    func job(_ id: Int64) async throws -> JobView { try await JobStore(database: self.db).show(id, scope: .all) }

    func scalar<T: PostgresDecodable & Sendable>(_ query: PostgresQuery, as: T.Type = T.self) async throws -> T? {
        try await self.db.query(query).decode(T.self).first { _ in true }
    }
}

/// Every store test needs the database; CI must never skip them.
let databaseTests = ConditionTrait.enabled(if: TestDatabase.isConfigured, "needs ALLOT_TEST_DATABASE_URL (ops/test.sh sets it)")

@Test("CI runs the database tests: ALLOT_TEST_DATABASE_URL is set when CI is")
func databaseConfiguredInCI() {
    if ProcessInfo.processInfo.environment["CI"] != nil {
        #expect(TestDatabase.isConfigured, "CI must run the store and server tests against PostgreSQL (use ops/test.sh)")
    }
}
