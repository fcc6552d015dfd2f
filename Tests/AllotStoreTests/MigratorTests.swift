import AllotDatabaseTesting
import AllotStore
import AllotTesting
import Foundation
import PostgresNIO
import Testing

@Suite("Migrations", databaseTests)
struct MigratorTests {
    @Test("each file applies once, in order, with its checksum; a changed applied file is refused")
    func onceAndChecksummed() async throws {
        try await TestDatabase.with(migrate: false) { db in
            let files = try Migrator.files(in: TestDatabase.migrationsFolder)
            let migrator = Migrator(database: db)
            #expect(try await migrator.migrate(files) == files.map(\.name))
            #expect(try await migrator.migrate(files).isEmpty)
            var changed = files
            changed[0].sql += "\n-- edited after it was applied\n"
            await #expect(throws: StoreError.self) { try await migrator.migrate(changed) }
            let count = try await db.query("SELECT count(*) FROM schema_migrations").decode(Int.self).first { _ in true }
            #expect(count == files.count)
        }
    }

    @Test("a failing migration leaves nothing behind (one transaction per file)")
    func transactional() async throws {
        try await TestDatabase.with(migrate: false) { db in
            let bad = Migrator.File(version: 1, name: "0001_bad.sql", sql: "CREATE TABLE t1 (x int);\nCREATE TABLE t1 (x int);")
            await #expect(throws: (any Error).self) { try await Migrator(database: db).migrate([bad]) }
            let exists = try await db.query("SELECT to_regclass('t1') IS NOT NULL").decode(Bool.self).first { _ in true }
            #expect(exists == false)
        }
    }

    @Test("scripts split on semicolons outside quotes, dollar quotes and comments")
    func splitting() {
        let script = """
            -- a comment; with a semicolon
            CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT 'a;b' $$;
            SELECT E'it\\'s;', "odd;name", $tag$ x; $$ y $tag$; /* c; */ SELECT 1
            """
        let statements = SQLScript.statements(script)
        #expect(statements.count == 3)
        #expect(statements[0].hasSuffix("$$ SELECT 'a;b' $$"))
        #expect(statements[1].contains("$tag$ x; $$ y $tag$"))
    }
}
