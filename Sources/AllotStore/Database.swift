import Foundation
import Logging
import PostgresNIO

/// Where the database is, read from a `postgres://user:password@host:port/db?sslmode=…` URL (`ALLOT_DATABASE_URL`).
public struct DatabaseURL: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var requireTLS: Bool
    public var preferTLS: Bool

    public init(_ text: String) throws(StoreError) {
        guard let url = URLComponents(string: text), let scheme = url.scheme, ["postgres", "postgresql"].contains(scheme) else {
            throw .invalid(field: "ALLOT_DATABASE_URL", message: "must look like postgres://user:password@host:port/database")
        }
        guard let host = url.host, !host.isEmpty else {
            throw .invalid(field: "ALLOT_DATABASE_URL", message: "names no host")
        }
        self.host = host
        self.port = url.port ?? 5432
        self.user = url.user.flatMap { $0.removingPercentEncoding } ?? "postgres"
        self.password = url.password.flatMap { $0.removingPercentEncoding }
        let db = String(url.path.drop { $0 == "/" })
        self.database = db.isEmpty ? self.user : db
        let sslmode = url.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
        self.requireTLS = ["require", "verify-ca", "verify-full"].contains(sslmode)
        // Loopback needs no TLS; elsewhere libpq's default ("prefer") applies.
        self.preferTLS = sslmode == "prefer" && !["127.0.0.1", "localhost", "::1"].contains(host)
    }

    /// The URL without its password, for logs and errors.
    public var description: String { "postgres://\(self.user)@\(self.host):\(self.port)/\(self.database)" }

    public func clientConfiguration() -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS =
            self.requireTLS ? .require(.makeClientConfiguration()) : self.preferTLS ? .prefer(.makeClientConfiguration()) : .disable
        var config = PostgresClient.Configuration(
            host: self.host, port: self.port, username: self.user, password: self.password, database: self.database, tls: tls)
        config.options.maximumConnections = 16
        config.options.connectTimeout = .seconds(5)
        return config
    }
}

/// The PostgreSQL client shared by every store, plus the logger its queries log into.
/// Run `client.run()` (it is a Service) for as long as the stores are used.
public struct Database: Sendable {
    public let client: PostgresClient
    public let logger: Logger
    public let url: DatabaseURL

    public init(url: DatabaseURL, logger: Logger) {
        self.url = url
        self.client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
        self.logger = logger
    }

    /// Runs `body` in one transaction; a thrown error rolls it back.
    public func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await self.client.withTransaction(logger: self.logger) { try await body($0) }
        } catch let error as PostgresTransactionError {
            throw error.closureError ?? error.beginError ?? error.commitError ?? error
        }
    }

    @discardableResult
    public func query(_ query: PostgresQuery, file: String = #fileID, line: Int = #line) async throws -> PostgresRowSequence {
        try await self.client.query(query, logger: self.logger, file: file, line: line)
    }

    /// Waits until the server answers, or throws a clear error after `timeout`.
    public func waitUntilReachable(timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            do {
                try await self.query("SELECT 1")
                return
            } catch {
                if ContinuousClock.now > deadline { throw StoreError.unreachable(url: self.url.description, underlying: "\(error)") }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }
}

/// What the stores throw, each case named for what went wrong and where.
public enum StoreError: Error, Sendable, CustomStringConvertible, Equatable {
    case notFound(String)
    case conflict(String)
    case invalid(field: String, message: String)
    case forbidden(String)
    case unreachable(url: String, underlying: String)
    case migration(String)

    public var description: String {
        switch self {
        case .notFound(let what): "\(what) not found"
        case .conflict(let message): message
        case .invalid(let field, let message): "\(field): \(message)"
        case .forbidden(let message): message
        case .unreachable(let url, let underlying):
            // PostgresNIO reports a wrong password as a tripped circuit breaker: say what it usually means.
            "cannot reach PostgreSQL at \(url) (check that it runs and that the user and password are right): \(underlying)"
        case .migration(let message): message
        }
    }
}

extension PSQLError {
    /// The SQLSTATE of a server error, e.g. 23505 for a unique violation.
    public var sqlState: String? { self.serverInfo?[.sqlState] }
    public var constraint: String? { self.serverInfo?[.constraintName] }
    public var serverMessage: String? { self.serverInfo?[.message] }
}

extension Database {
    /// Runs the client for the duration of `body`, for one-shot commands (migrate, bootstrap) and tests.
    @discardableResult
    public func withRunningClient<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                await self.client.run()
                return nil
            }
            defer { group.cancelAll() }
            // Let run() start first: the client warns about leases asked for before it runs.
            try await Task.sleep(for: .milliseconds(20))
            return try await body()
        }
    }
}
