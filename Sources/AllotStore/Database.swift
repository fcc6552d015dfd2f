public import Foundation
public import Logging
package import PostgresNIO
public import ServiceLifecycle
import Synchronization

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

    /// The URL as text, with its password, for handing to a child process.
    public var urlString: String {
        let auth = self.password.map { "\(self.user):\($0)" } ?? self.user
        return "postgres://\(auth)@\(self.host):\(self.port)/\(self.database)"
    }

    func clientConfiguration() -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS =
            self.requireTLS ? .require(.makeClientConfiguration()) : self.preferTLS ? .prefer(.makeClientConfiguration()) : .disable
        var config = PostgresClient.Configuration(
            host: self.host, port: self.port, username: self.user, password: self.password, database: self.database, tls: tls)
        config.options.maximumConnections = 16
        config.options.connectTimeout = .seconds(5)
        return config
    }

    /// The same server for one connection of its own (the reachability probe's), with the same TLS choice.
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS =
            self.requireTLS
            ? .require(try .init(configuration: .makeClientConfiguration()))
            : self.preferTLS ? .prefer(try .init(configuration: .makeClientConfiguration())) : .disable
        return PostgresConnection.Configuration(
            host: self.host, port: self.port, username: self.user, password: self.password, database: self.database, tls: tls)
    }
}

/// The PostgreSQL client shared by every store, plus the logger its queries log into. It is a Service: run it
/// (in the application's ServiceGroup, or with `withRunningClient`) for as long as the stores are used.
/// PostgreSQL's own types stay inside this module: the stores' API speaks in the core's types.
public struct Database: Sendable, Service {
    package let client: PostgresClient
    public let logger: Logger
    public let url: DatabaseURL
    /// The key of the audit log's MAC chain: kept outside the database (derived from allotd's secret file), so
    /// that whoever can write the database cannot write a record that verifies.
    public let auditKey: Data
    /// Set on the leader's copy: every read-write transaction is fenced by it (see `Fence`).
    public private(set) var fence: Fence?

    /// Whether the server answered the probe lately (see `run`).
    let health = Health()

    public init(url: DatabaseURL, logger: Logger, auditKey: Data) {
        self.url = url
        self.client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
        self.logger = logger
        self.auditKey = auditKey
    }

    /// Runs the client, and a probe that asks the server `SELECT 1` every second on a connection of its own. While
    /// the probe fails, every operation fails at once with `StoreError.unreachable` (allotd answers 503) instead of
    /// waiting for a pooled connection: PostgresNIO's pool would hold a request for up to a minute before giving up.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.client.run() }
            // The client ends on graceful shutdown by itself; the probe must too, or allotd never exits on SIGTERM.
            group.addTask { try? await cancelWhenGracefulShutdown { await self.probe() } }
        }
    }

    private func probe() async {
        var connection: PostgresConnection?
        var id = 0
        while !Task.isCancelled {
            do {
                if connection == nil {
                    id += 1
                    connection = try await Self.bounded(.seconds(3)) { [url, logger, id] in
                        try await PostgresConnection.connect(configuration: try url.connectionConfiguration(), id: id, logger: logger)
                    }
                }
                let c = connection!
                _ = try await Self.bounded(.seconds(3)) { [logger] in try await c.query("SELECT 1", logger: logger) }
                if !self.health.reachable { self.logger.info("PostgreSQL answers again", metadata: ["database": "\(self.url)"]) }
                self.health.reachable = true
            } catch {
                if Task.isCancelled { break }
                if self.health.reachable {
                    self.logger.warning("PostgreSQL does not answer: answering 503 until it does", metadata: ["error": "\(error)"])
                }
                self.health.reachable = false
                try? await connection?.close()
                connection = nil
            }
            try? await Task.sleep(for: .seconds(1))
        }
        try? await connection?.close()
    }

    /// `body`, or a timeout error after `limit`.
    static func bounded<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw StoreError.unreachable(url: "-", underlying: "no answer within \(limit)")
            }
            return value
        }
    }

    /// Fails at once while the probe finds the server away.
    private func available() throws {
        guard self.health.reachable else {
            throw StoreError.unreachable(url: self.url.description, underlying: "the server did not answer the last probe")
        }
    }

    /// This database, each read-write transaction of which first proves the lease (`allot_fence`): the
    /// transaction fails with `StoreError.fenced`, changing nothing, once `fence` is stale.
    public func fenced(by fence: Fence) -> Database {
        var copy = self
        copy.fence = fence
        return copy
    }

    /// Runs `body` in one transaction; a thrown error rolls it back. `isolation` REPEATABLE READ gives the body
    /// one consistent snapshot of the database.
    @discardableResult
    package func transaction<T: Sendable>(
        _ isolation: Isolation = .readCommitted, _ body: (Transaction) async throws -> T
    ) async throws -> T {
        try self.available()
        do {
            return try await self.client.withTransaction(logger: self.logger) { connection in
                let tx = Transaction(connection: connection, logger: self.logger, auditKey: self.auditKey)
                if isolation == .repeatableRead {
                    try await tx.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                } else if let fence = self.fence {
                    // Read to the end: PostgreSQL's refusal may arrive with the rows rather than with the query.
                    for try await _ in try await tx.query("SELECT allot_fence(\(fence.holder), \(fence.epoch))") {}
                }
                return try await body(tx)
            }
        } catch let error as PostgresTransactionError {
            throw self.translate(error.closureError ?? error.beginError ?? error.commitError ?? error)
        } catch {
            throw self.translate(error)
        }
    }

    package enum Isolation: Sendable { case readCommitted, repeatableRead }

    /// Reads on one connection without a transaction of their own.
    package func read<T: Sendable>(_ body: (Transaction) async throws -> T) async throws -> T {
        try self.available()
        do {
            return try await self.client.withConnection { connection in
                try await body(Transaction(connection: connection, logger: self.logger, auditKey: self.auditKey))
            }
        } catch {
            throw self.translate(error)
        }
    }

    /// One statement outside any transaction of ours (for tests and one-shot statements).
    @discardableResult
    package func query(_ query: PostgresQuery, file: String = #fileID, line: Int = #line) async throws -> PostgresRowSequence {
        try self.available()
        do {
            return try await self.client.query(query, logger: self.logger, file: file, line: line)
        } catch {
            throw self.translate(error)
        }
    }

    /// PostgreSQL's errors as the stores' own: a constraint or data error is the caller's input, named by the
    /// constraint; a lost connection is the database being unreachable. Anything else passes through.
    func translate(_ error: any Error) -> any Error {
        // The pool's own errors (its circuit breaker after a minute of failed connections) come as a type that
        // PostgresNIO does not export: known by name.
        if String(reflecting: type(of: error)).hasSuffix("ConnectionPoolError") {
            return StoreError.unreachable(url: self.url.description, underlying: "\(error)")
        }
        guard let e = error as? PSQLError else { return error }
        guard let state = e.sqlState else {
            return StoreError.unreachable(url: self.url.description, underlying: "\(e.code)")
        }
        if state == "AL001" { return StoreError.fenced(e.serverMessage ?? "this allotd no longer holds the scheduling lease") }
        if state.hasPrefix("23") || state.hasPrefix("22") {
            return StoreError.invalid(field: e.constraint ?? "", message: e.serverMessage ?? "rejected by the database")
        }
        if state.hasPrefix("08") || state.hasPrefix("57") {
            return StoreError.unreachable(url: self.url.description, underlying: e.serverMessage ?? state)
        }
        return error
    }

    /// Sends a notification on `channel` (PostgreSQL's NOTIFY, delivered to every session listening on it).
    public func notify(_ channel: String, payload: String = "") async throws {
        try await self.query("SELECT pg_notify(\(channel), \(payload))")
    }

    /// Listens on `channel` on a connection of its own, calling `received` for each notification, until the
    /// connection fails (it throws) or the task is cancelled.
    public func listen(_ channel: String, received: @Sendable () -> Void) async throws {
        do {
            try await self.client.withConnection { connection in
                try await connection.listen(on: channel) { notifications in
                    for try await _ in notifications { received() }
                }
            }
        } catch {
            throw self.translate(error)
        }
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

    /// Whether the server answers now (for `/readyz`).
    public func isReachable() async -> Bool { (try? await self.query("SELECT 1")) != nil }

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

/// One open transaction, handed to each table's writer in turn so that a change spanning several tables
/// commits whole or not at all. Used by one task at a time, inside `Database.transaction`.
package final class Transaction {
    let connection: PostgresConnection
    let logger: Logger
    let auditKey: Data
    private var clock: Date?

    init(connection: PostgresConnection, logger: Logger, auditKey: Data) {
        self.connection = connection
        self.logger = logger
        self.auditKey = auditKey
    }

    @discardableResult
    package func query(_ query: PostgresQuery, file: String = #fileID, line: Int = #line) async throws -> PostgresRowSequence {
        try await self.connection.query(query, logger: self.logger, file: file, line: line)
    }

    /// The transaction's own time (PostgreSQL's `now()`): one clock for every row it writes, whichever allotd runs.
    func now() async throws -> Date {
        if let clock { return clock }
        let now = try await self.query("SELECT now()").decode(Date.self).first() ?? Date()
        self.clock = now
        return now
    }
}

@available(*, unavailable)
extension Transaction: Sendable {}

/// What the reachability probe last found; shared by every copy of a `Database`.
final class Health: Sendable {
    private let state = Mutex(true)
    var reachable: Bool {
        get { self.state.withLock { $0 } }
        set { self.state.withLock { $0 = newValue } }
    }
}

extension AsyncSequence {
    /// The first element, or nil.
    func first() async throws -> Element? { try await self.first { _ in true } }

    /// Every element, in order.
    func array() async throws -> [Element] { try await self.reduce(into: []) { $0.append($1) } }
}

/// What the stores throw, each case named for what went wrong and where.
public enum StoreError: Error, Sendable, CustomStringConvertible, Equatable {
    case notFound(String)
    case conflict(String)
    case invalid(field: String, message: String)
    case forbidden(String)
    case unreachable(url: String, underlying: String)
    case migration(String)
    /// The database refused a scheduling write: another allotd holds the lease now, or this one's lapsed.
    case fenced(String)
    /// The database holds a value this version of Allot does not know (a newer allotd wrote it, or a hand edit).
    case unknownValue(column: String, value: String)

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
        case .fenced(let message): message
        case .unknownValue(let column, let value): "the database holds '\(value)' in \(column), which this allotd does not know"
        }
    }
}

extension PSQLError {
    /// The SQLSTATE of a server error, e.g. 23505 for a unique violation.
    package var sqlState: String? { self.serverInfo?[.sqlState] }
    package var constraint: String? { self.serverInfo?[.constraintName] }
    package var serverMessage: String? { self.serverInfo?[.message] }
}
