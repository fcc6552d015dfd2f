public import AllotStore
import AllotTesting
public import Foundation
import Logging
public import PostgresNIO

/// A fresh, migrated PostgreSQL database per test, on the server named by `ALLOT_TEST_DATABASE_URL`
/// (which `ops/test.sh` starts). Dropped when the test ends.
///
/// ```swift
/// @Test func claims() async throws {
///     try await TestDatabase.with { db in … }
/// }
/// ```
public enum TestDatabase {
    /// The audit log's key for every database of this test run (allotd processes started by tests derive theirs
    /// from their secret file).
    public static let auditKey = Data((0..<32).map { _ in UInt8.random(in: 0...255) })

    /// The server's URL (its `postgres` database), or nil when tests run without one.
    public static var adminURL: String? {
        ProcessInfo.processInfo.environment["ALLOT_TEST_DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    public static var isConfigured: Bool { self.adminURL != nil }

    /// The repository's Migrations folder.
    public static var migrationsFolder: String { Repository.migrations }

    /// Makes a database, migrates it, runs `body` with a running client, then drops it.
    public static func with<T: Sendable>(
        migrate: Bool = true, _ body: @Sendable (Database) async throws -> T
    ) async throws -> T {
        let (database, name, admin) = try await self.create(migrate: migrate)
        defer { Task { try? await self.drop(name, admin: admin) } }
        return try await database.withRunningClient { try await body(database) }
    }

    /// Creates and migrates a database; returns it (its client not running) with its name, for tests
    /// that hand the URL to other processes.
    public static func create(migrate: Bool = true) async throws -> (Database, String, DatabaseURL) {
        guard let text = self.adminURL else { throw TestDatabaseError.notConfigured }
        let admin = try DatabaseURL(text)
        let name = "allot_test_\(UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: ""))"
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let adminDB = Database(url: admin, logger: logger, auditKey: Self.auditKey)
        _ = try await adminDB.withRunningClient {
            try await adminDB.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"))
        }
        var url = admin
        url.database = name
        if migrate {
            // A client runs once: migrate with one, hand the caller another.
            let migrating = Database(url: url, logger: logger, auditKey: Self.auditKey)
            try await migrating.withRunningClient {
                try await Migrator(database: migrating).migrate(try Migrator.files(in: self.migrationsFolder))
            }
        }
        return (Database(url: url, logger: logger, auditKey: Self.auditKey), name, admin)
    }

    public static func drop(_ name: String, admin: DatabaseURL) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let adminDB = Database(url: admin, logger: logger, auditKey: Self.auditKey)
        _ = try await adminDB.withRunningClient {
            try await adminDB.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"))
        }
    }
}

public enum TestDatabaseError: Error, CustomStringConvertible {
    case notConfigured
    public var description: String { "ALLOT_TEST_DATABASE_URL is not set: run the tests through ops/test.sh, which starts PostgreSQL" }
}

extension Database {
    /// A transaction on the bare connection, its errors as PostgreSQL raised them (not translated into the
    /// stores' own): for tests that poke the schema directly.
    public func sql<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await self.client.withTransaction(logger: self.logger) { try await body($0) }
        } catch let error as PostgresTransactionError {
            throw error.closureError ?? error.beginError ?? error.commitError ?? error
        }
    }
}
