import Foundation
import PostgresNIO

/// Applies `Migrations/NNNN_name.sql` in order, each once, in its own transaction, recording a checksum;
/// refuses to go on when a file already applied has changed since.
public struct Migrator: Sendable {
    public struct File: Sendable {
        public var version: Int
        public var name: String
        public var sql: String
        public init(version: Int, name: String, sql: String) {
            self.version = version
            self.name = name
            self.sql = sql
        }
    }

    public let database: Database

    public init(database: Database) { self.database = database }

    /// Reads the numbered files of a folder, rejecting gaps in numbering and duplicate numbers.
    public static func files(in folder: String) throws -> [File] {
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".sql") }.sorted()
        var files: [File] = []
        for name in names {
            guard let version = Int(name.prefix { $0.isNumber }), name.first?.isNumber == true else {
                throw StoreError.migration("\(folder)/\(name): migration files must start with their number, as 0001_init.sql")
            }
            if let last = files.last, last.version == version {
                throw StoreError.migration("\(folder): two migrations are numbered \(version): \(last.name) and \(name)")
            }
            let sql = try String(contentsOfFile: (folder as NSString).appendingPathComponent(name), encoding: .utf8)
            files.append(File(version: version, name: name, sql: sql))
        }
        return files
    }

    /// Finds the `Migrations` folder: the one named, else next to the executable's package, else the working directory's.
    public static func locateFolder(_ explicit: String?) -> String {
        if let explicit { return explicit }
        if let env = ProcessInfo.processInfo.environment["ALLOT_MIGRATIONS"] { return env }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = dir.appendingPathComponent("Migrations").path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            dir.deleteLastPathComponent()
        }
        return FileManager.default.currentDirectoryPath + "/Migrations"
    }

    /// Grants the application role what allotd needs and no more (migrations run as the owner): it reads and writes
    /// the tables, but may only read and append the audit log (no UPDATE, DELETE or TRUNCATE of it), and cannot
    /// alter tables, triggers or migrations. A role that owns nothing cannot disable a trigger, and setting
    /// `session_replication_role` is the superuser's.
    public func grant(to role: String) async throws {
        guard let first = role.first, first.isLetter || first == "_", role.count <= 63, role.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" })
        else { throw StoreError.invalid(field: "app-role", message: "'\(role.prefix(80))' is not a plain role name") }
        try await self.database.transaction { tx in
            for statement in [
                "GRANT USAGE ON SCHEMA public TO \(role)",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \(role)",
                "REVOKE UPDATE, DELETE, TRUNCATE ON audit FROM \(role)",
                // The ledger is append-only (its triggers say so too): rows are added, open ones closed.
                "REVOKE DELETE, TRUNCATE ON usage FROM \(role)",
                "REVOKE UPDATE, DELETE, TRUNCATE ON usage_adjustments FROM \(role)",
                "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM \(role)",
                "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO \(role)",
                "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO \(role)",
            ] {
                try await tx.query(PostgresQuery(unsafeSQL: statement))
            }
        }
    }

    /// Applies what is missing; returns the names applied now.
    @discardableResult
    public func migrate(_ files: [File]) async throws -> [String] {
        try await self.database.query(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())
            """)
        var applied: [String] = []
        for file in files {
            let didApply = try await self.database.transaction { tx -> Bool in
                // One migrator at a time, whichever allotd runs it.
                try await tx.query("SELECT pg_advisory_xact_lock(7321000)")
                let sum =
                    try await tx.query(
                        "SELECT encode(sha256(convert_to(\(file.sql), 'UTF8')), 'hex')"
                    ).decode(String.self).first() ?? ""
                let rows = try await tx.query(
                    "SELECT name, checksum FROM schema_migrations WHERE version = \(file.version)")
                for try await (name, checksum) in rows.decode((String, String).self) {
                    guard checksum == sum else {
                        throw StoreError.migration(
                            "migration \(name) was applied with checksum \(checksum.prefix(12))… but the file now has \(sum.prefix(12))…: "
                                + "applied migrations must not change; add a new numbered file instead")
                    }
                    return false
                }
                for statement in SQLScript.statements(file.sql) {
                    try await tx.query(PostgresQuery(unsafeSQL: statement))
                }
                try await tx.query(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (\(file.version), \(file.name), \(sum))")
                return true
            }
            if didApply { applied.append(file.name) }
        }
        return applied
    }
}
