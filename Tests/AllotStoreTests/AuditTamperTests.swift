import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import Foundation
import Logging
import PostgresNIO
import Testing

/// The audit log against its own database's owner and superuser: allotd serves as an application role that may
/// only read and append it, and every tampering the superuser can still do is caught by `verify`.
@Suite("Audit log: an owner, an application role, and a superuser who tampers", databaseTests, .serialized)
struct AuditTamperTests {
    /// A database owned by its own owner role, migrated by it, served as its own application role.
    struct Setup {
        let superuserURL: DatabaseURL
        let appURL: DatabaseURL
        let name: String
        let admin: DatabaseURL
        let roles: [String]

        /// A PostgresClient runs once, so every use gets a fresh one.
        func asSuperuser<T: Sendable>(_ body: @Sendable (Database) async throws -> T) async throws -> T {
            try await Self.with(self.superuserURL, body)
        }
        func asApp<T: Sendable>(_ body: @Sendable (Database) async throws -> T) async throws -> T {
            try await Self.with(self.appURL, body)
        }
        static func with<T: Sendable>(_ url: DatabaseURL, _ body: @Sendable (Database) async throws -> T) async throws -> T {
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let db = Database(url: url, logger: logger, auditKey: TestDatabase.auditKey)
            return try await db.withRunningClient { try await body(db) }
        }
    }

    static func setUp() async throws -> Setup {
        let admin = try DatabaseURL(try #require(TestDatabase.adminURL))
        let suffix = UUID().uuidString.prefix(8).lowercased()
        let (owner, app, name) = ("allot_owner_\(suffix)", "allot_app_\(suffix)", "allot_tamper_\(suffix)")
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        // Passwords as ops/postgres.sh gives every role: its server asks every login for one (scram-sha-256).
        let password = UUID().uuidString
        let root = Database(url: admin, logger: logger, auditKey: TestDatabase.auditKey)
        try await root.withRunningClient {
            for sql in [
                "CREATE ROLE \(owner) LOGIN PASSWORD '\(password)'", "CREATE ROLE \(app) LOGIN PASSWORD '\(password)'",
                "CREATE DATABASE \(name) OWNER \(owner)",
            ] {
                try await root.query(PostgresQuery(unsafeSQL: sql))
            }
        }
        func url(_ user: String) -> DatabaseURL {
            var u = admin
            u.user = user
            u.database = name
            if user != admin.user { u.password = password }
            return u
        }
        let owning = Database(url: url(owner), logger: logger, auditKey: TestDatabase.auditKey)
        try await owning.withRunningClient {
            try await Migrator(database: owning).migrate(try Migrator.files(in: TestDatabase.migrationsFolder))
            try await Migrator(database: owning).grant(to: app)
        }
        return Setup(
            superuserURL: url(admin.user), appURL: url(app), name: name, admin: admin, roles: [owner, app])
    }

    static func tearDown(_ s: Setup) async {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let root = Database(url: s.admin, logger: logger, auditKey: TestDatabase.auditKey)
        _ = try? await root.withRunningClient {
            try await root.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(s.name) WITH (FORCE)"))
            for r in s.roles { try await root.query(PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(r)")) }
        }
    }

    /// Some history, written as allotd writes it (as the application role), and a checkpoint of it.
    static func history(_ s: Setup) async throws -> AuditChain.Checkpoint {
        try await s.asApp { app in
            let op = Principal(name: "op", role: .operator)
            _ = try await PolicyStore(database: app).apply(
                Policy(
                    pools: [Pool(name: "h200")],
                    organizations: [Organization(name: "lab", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 8, gpuHours: 10)])]
                ),
                by: op, dryRun: false)
            for n in 1...4 { _ = try await NodeStore(database: app).add(name: "n\(n)", pool: "h200", block: nil, by: op) }
            return try #require(try await AuditStore(database: app).checkpoint())
        }
    }

    static func verify(_ s: Setup, _ checkpoints: [AuditChain.Checkpoint]) async throws -> AuditVerification {
        try await s.asApp { app in try await AuditStore(database: app).verify(checkpoints: checkpoints) }
    }

    static func denied(_ db: Database, _ sql: String) async -> Bool {
        do {
            try await db.sql { c in
                // A SELECT's error arrives with its rows, so read them.
                for try await _ in try await c.query(PostgresQuery(unsafeSQL: sql), logger: db.logger) {}
            }
            return false
        } catch let e as PSQLError {
            return e.serverInfo?[.sqlState] == "42501"  // insufficient_privilege
        } catch {
            return false
        }
    }

    @Test("the application role can neither rewrite nor remove the log, disable its trigger, skip triggers, or append unsigned records")
    func applicationRole() async throws {
        let s = try await Self.setUp()
        defer { Task { await Self.tearDown(s) } }
        let checkpoint = try await Self.history(s)
        try await s.asApp { app in
            for sql in [
                "UPDATE audit SET outcome = 'forged' WHERE id = 1", "DELETE FROM audit WHERE id = 1", "TRUNCATE audit",
                "ALTER TABLE audit DISABLE TRIGGER audit_append_only", "SET session_replication_role = replica",
                "SELECT audit_append('operator:op', 'x', 'y', 'z', NULL)", "DELETE FROM schema_migrations",
            ] {
                #expect(await Self.denied(app, sql), "\(sql) was allowed")
            }
        }
        let result = try await Self.verify(s, [checkpoint])
        #expect(result.intact && result.checked >= 5 && result.checkpointsChecked == 1, "\(result.problems)")
    }

    @Test("a superuser's edit with the SHA-256 chain recomputed is caught by the MAC, at the edited record")
    func rewrittenChain() async throws {
        let s = try await Self.setUp()
        defer { Task { await Self.tearDown(s) } }
        let checkpoint = try await Self.history(s)
        try await s.asSuperuser { su in
            try await su.sql { c in
                try await c.query("SET LOCAL session_replication_role = replica", logger: su.logger)
                try await c.query("UPDATE audit SET outcome = 'forged' WHERE id = 3", logger: su.logger)
                // Recompute the whole SHA-256 chain from there on, as a careful forger would.
                try await c.query(
                    """
                    DO $$ DECLARE r record; prev text; BEGIN
                      SELECT hash INTO prev FROM audit WHERE id = 2;
                      FOR r IN SELECT * FROM audit WHERE id >= 3 ORDER BY id LOOP
                        UPDATE audit SET prev_hash = prev, hash = audit_hash(prev, r.at, r.actor, r.action, r.target, r.outcome, r.detail) WHERE id = r.id;
                        SELECT hash INTO prev FROM audit WHERE id = r.id;
                      END LOOP; END $$
                    """, logger: su.logger)
            }
        }
        let result = try await Self.verify(s, [checkpoint])
        #expect(!result.intact && result.firstBrokenID == 3, "\(result.problems)")
    }

    @Test("a superuser's forged append (a record with a made-up MAC) is caught")
    func forgedAppend() async throws {
        let s = try await Self.setUp()
        defer { Task { await Self.tearDown(s) } }
        let checkpoint = try await Self.history(s)
        let last = try await s.asSuperuser { su in
            try await su.query(
                """
                INSERT INTO audit (at, actor, action, target, outcome, prev_hash, hash, mac)
                SELECT now(), 'operator:op', 'policy.apply', 'policy', 'ok', a.hash, audit_hash(a.hash, now(), 'operator:op', 'policy.apply', 'policy', 'ok', NULL),
                       repeat('ab', 32)
                FROM (SELECT hash FROM audit ORDER BY id DESC LIMIT 1) a
                """)
            return try await su.query("SELECT max(id) FROM audit").decode(Int64.self).first { _ in true }
        }
        let result = try await Self.verify(s, [checkpoint])
        #expect(!result.intact && result.firstBrokenID == last, "\(result.problems)")
    }

    @Test("deleting the newest records, or truncating the table, is caught by the checkpoint kept outside the database")
    func truncation() async throws {
        for sql in ["DELETE FROM audit WHERE id > 3", "TRUNCATE audit"] {
            let s = try await Self.setUp()
            let checkpoint = try await Self.history(s)
            try await s.asSuperuser { su in
                try await su.sql { c in
                    try await c.query("SET LOCAL session_replication_role = replica", logger: su.logger)
                    try await c.query(PostgresQuery(unsafeSQL: sql), logger: su.logger)
                }
            }
            #expect(try await Self.verify(s, []).intact, "without the checkpoint, \(sql) cannot be told")
            let result = try await Self.verify(s, [checkpoint])
            #expect(!result.intact, "\(sql) was not caught")
            #expect(result.problems.contains { $0.contains("deleted or the table truncated") }, "\(result.problems)")
            await Self.tearDown(s)
        }
    }

    @Test("a checkpoint line made without allotd's key does not count")
    func forgedCheckpoint() async throws {
        let c = AuditChain.Checkpoint(key: Data(repeating: 7, count: 32), id: 1, mac: "x", at: Date())
        let parsed = try #require(AuditChain.Checkpoint(line: c.line))
        #expect(parsed == c)
        let s = try await Self.setUp()
        defer { Task { await Self.tearDown(s) } }
        _ = try await Self.history(s)
        let result = try await Self.verify(s, [parsed])
        #expect(!result.intact && result.problems.contains { $0.contains("signature does not verify") })
    }
}
