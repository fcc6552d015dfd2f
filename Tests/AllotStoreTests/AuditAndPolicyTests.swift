import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import PostgresNIO
import Testing

@Suite("Audit log and policy", databaseTests)
struct AuditAndPolicyTests {
    @Test("every change is audited in a hash chain that verifies, refuses edits, and detects tampering")
    func auditChain() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            _ = try await f.submit(JobSpec(name: "x", org: "lab", pool: "h200", command: "true"))
            let audit = AuditStore(database: db)
            let records = try await audit.list(since: nil)
            #expect(records.map(\.action).contains("policy.apply"))
            #expect(records.map(\.action).contains("node.add"))
            #expect(records.map(\.action).contains("job.submit"))
            let verified = try await audit.verify()
            #expect(verified.checked == records.count && verified.firstBrokenID == nil)

            // Append-only: an UPDATE is refused by a trigger.
            await #expect(throws: PSQLError.self) { try await db.query("UPDATE audit SET outcome = 'forged' WHERE id = 2") }
            // Someone with the power to disable the trigger still cannot hide the change.
            try await db.query("ALTER TABLE audit DISABLE TRIGGER audit_append_only")
            try await db.query("UPDATE audit SET outcome = 'forged' WHERE id = 2")
            #expect(try await audit.verify().firstBrokenID == 2)
        }
    }

    @Test("policy apply is idempotent, reports changes, and a dry run changes nothing")
    func policyApply() async throws {
        try await TestDatabase.with { db in
            let store = PolicyStore(database: db)
            let op = Principal(name: "op", role: .operator)
            let first = try await store.apply(StoreFixture.policy, by: op, dryRun: false)
            #expect(first.contains { $0.kind == .added && $0.what == "pool h200" })
            #expect(try await store.apply(StoreFixture.policy, by: op, dryRun: false).isEmpty)

            var changed = StoreFixture.policy
            changed.organizations[0].allocations[0].limitGPUs = 32
            changed.priorityClasses.removeLast()
            let dry = try await store.apply(changed, by: op, dryRun: true)
            #expect(
                dry.contains { $0.kind == .changed && $0.what == "allocation lab/h200/monthly" && $0.detail?.contains("limitGPUs: 16 → 32") == true })
            #expect(dry.contains { $0.kind == .removed && $0.what == "priority class short" })
            #expect(try await store.apply(changed, by: op, dryRun: true) == dry)  // the dry run changed nothing
            #expect(try await store.apply(changed, by: op, dryRun: false) == dry)
            // Members cannot apply policy: the API's access rule refuses them (APITests.authorization).
        }
    }

    @Test("tokens are stored hashed; bootstrap runs once")
    func tokens() async throws {
        try await TestDatabase.with { db in
            let tokens = TokenStore(database: db)
            let secret = try await tokens.bootstrap()
            #expect(try await tokens.authenticate(secret)?.role == .operator)
            #expect(try await tokens.authenticate(secret + "x") == nil)
            await #expect(throws: StoreError.self) { try await tokens.bootstrap() }
            let stored = try await db.query("SELECT hash FROM tokens").decode(String.self).first { _ in true }
            #expect(stored != nil && stored != secret && stored?.count == 64)
        }
    }
}
