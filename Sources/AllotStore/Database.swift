public import Foundation
public import Logging
package import PostgresNIO
public import ServiceLifecycle
import Synchronization

/// Where the database is, read from a `postgres://user:password@host:port/db?sslmode=…` URL (`ALLOT_DATABASE_URL`).
/// As with libpq, the URL may name several servers (`@h1:5432,h2:5432/db?target_session_attrs=read-write`): allotd
/// uses the first that answers and, with `read-write` (or `primary`), is not a standby; when that one goes away it
/// moves to another, so a promoted standby takes over without a restart.
public struct DatabaseURL: Sendable, CustomStringConvertible {
    public struct Server: Sendable, Hashable {
        public var host: String
        public var port: Int
    }
    /// Every server the URL names, in its order; the first is `host`/`port`.
    public var servers: [Server]
    public var host: String {
        get { self.servers[0].host }
        set { self.servers[0].host = newValue }
    }
    public var port: Int {
        get { self.servers[0].port }
        set { self.servers[0].port = newValue }
    }
    public var user: String
    public var password: String?
    public var database: String
    public var requireTLS: Bool
    public var preferTLS: Bool
    /// libpq's `target_session_attrs=read-write` or `primary`: a server in recovery (a standby) is passed over.
    public var readWrite: Bool

    public init(_ text: String) throws(StoreError) {
        let (single, servers) = try Self.servers(of: text)
        guard let url = URLComponents(string: single), let scheme = url.scheme, ["postgres", "postgresql"].contains(scheme) else {
            throw .invalid(field: "ALLOT_DATABASE_URL", message: "must look like postgres://user:password@host:port/database")
        }
        guard let host = url.host, !host.isEmpty else {
            throw .invalid(field: "ALLOT_DATABASE_URL", message: "names no host")
        }
        self.servers = servers.isEmpty ? [Server(host: host, port: url.port ?? 5432)] : servers
        self.user = url.user.flatMap { $0.removingPercentEncoding } ?? "postgres"
        self.password = url.password.flatMap { $0.removingPercentEncoding }
        let db = String(url.path.drop { $0 == "/" })
        self.database = db.isEmpty ? self.user : db
        let sslmode = url.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
        self.requireTLS = ["require", "verify-ca", "verify-full"].contains(sslmode)
        // Loopback needs no TLS; elsewhere libpq's default ("prefer") applies.
        self.preferTLS = sslmode == "prefer" && !self.servers.allSatisfy { ["127.0.0.1", "localhost", "::1"].contains($0.host) }
        switch url.queryItems?.first(where: { $0.name == "target_session_attrs" })?.value ?? "any" {
        case "any": self.readWrite = false
        case "read-write", "primary": self.readWrite = true
        case let other:
            throw .invalid(
                field: "ALLOT_DATABASE_URL",
                message: "target_session_attrs '\(other.prefix(40))': allotd writes, so only any, read-write or primary")
        }
    }

    /// Splits libpq's host list (`h1:p1,[::1]:p2`) out of the URL: the URL with the first host alone, and every
    /// server (none when the URL names one host, left to URLComponents). By hand: URLComponents takes one host.
    static func servers(of text: String) throws(StoreError) -> (String, [Server]) {
        guard let schemeEnd = text.range(of: "://") else { return (text, []) }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let at = authority.lastIndex(of: "@")
        let list = at.map { authority[authority.index(after: $0)...] } ?? authority
        guard list.contains(",") else { return (text, []) }
        var servers: [Server] = []
        for entry in list.split(separator: ",", omittingEmptySubsequences: false) {
            var host = Substring(entry)
            var port = "5432"
            var wellFormed = true
            if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
                let after = host[host.index(after: close)...]
                if after.hasPrefix(":") { port = String(after.dropFirst()) } else { wellFormed = after.isEmpty }
                host = host[host.index(after: host.startIndex)..<close]
            } else if let colon = host.lastIndex(of: ":") {
                port = String(host[host.index(after: colon)...])
                host = host[..<colon]
                // An IPv6 address goes in brackets, as in libpq's URLs: a bare one cannot be told from its port.
                wellFormed = !host.contains(":")
            }
            guard wellFormed, !host.contains("["), !host.contains("]"), !host.isEmpty, let number = Int(port), (1...65535).contains(number) else {
                throw .invalid(field: "ALLOT_DATABASE_URL", message: "server '\(entry.prefix(100))' of the host list must be HOST[:PORT]")
            }
            servers.append(Server(host: String(host), port: number))
        }
        let first = list.split(separator: ",", omittingEmptySubsequences: false)[0]
        let single = String(text[..<list.startIndex]) + first + String(rest[authorityEnd...])
        return (single, servers)
    }

    /// The URL without its password, for logs and errors.
    public var description: String { "postgres://\(self.user)@\(self.hostList)/\(self.database)" }

    /// The URL as text, with its password, for handing to a child process.
    public var urlString: String {
        let auth = self.password.map { "\(self.user):\($0)" } ?? self.user
        return "postgres://\(auth)@\(self.hostList)/\(self.database)\(self.readWrite ? "?target_session_attrs=read-write" : "")"
    }

    private var hostList: String {
        self.servers.map { "\($0.host.contains(":") ? "[\($0.host)]" : $0.host):\($0.port)" }.joined(separator: ",")
    }

    func clientConfiguration(_ server: Int = 0) -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS =
            self.requireTLS ? .require(.makeClientConfiguration()) : self.preferTLS ? .prefer(.makeClientConfiguration()) : .disable
        var config = PostgresClient.Configuration(
            host: self.servers[server].host, port: self.servers[server].port, username: self.user, password: self.password,
            database: self.database, tls: tls)
        config.options.maximumConnections = 16
        config.options.connectTimeout = .seconds(5)
        return config
    }

    /// The same server for one connection of its own (the reachability probe's), with the same TLS choice.
    func connectionConfiguration(_ server: Int = 0) throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS =
            self.requireTLS
            ? .require(try .init(configuration: .makeClientConfiguration()))
            : self.preferTLS ? .prefer(try .init(configuration: .makeClientConfiguration())) : .disable
        return PostgresConnection.Configuration(
            host: self.servers[server].host, port: self.servers[server].port, username: self.user, password: self.password,
            database: self.database, tls: tls)
    }
}

/// The PostgreSQL client shared by every store, plus the logger its queries log into. It is a Service: run it
/// (in the application's ServiceGroup, or with `withRunningClient`) for as long as the stores are used.
/// PostgreSQL's own types stay inside this module: the stores' API speaks in the core's types.
public struct Database: Sendable, Service {
    /// One client per server of the URL; the one in use is the probe's choice (see `run`).
    let clients: [PostgresClient]
    package var client: PostgresClient { self.clients[self.health.server] }
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
        self.clients = url.servers.indices.map { PostgresClient(configuration: url.clientConfiguration($0), backgroundLogger: logger) }
        self.logger = logger
        self.auditKey = auditKey
    }

    /// Runs the clients, and a probe that asks the server `SELECT 1` every second on a connection of its own
    /// (with `read-write`, whether it is in recovery). While the probe fails, every operation fails at once with
    /// `StoreError.unreachable` (allotd answers 503) instead of waiting for a pooled connection: PostgresNIO's pool
    /// would hold a request for up to a minute before giving up. When the server in use fails and the URL names
    /// others, the probe looks for one that serves (a promoted standby) and moves every operation there.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for client in self.clients { group.addTask { await client.run() } }
            // The clients end on graceful shutdown by themselves; the probe must too, or allotd never exits on SIGTERM.
            group.addTask { try? await cancelWhenGracefulShutdown { await self.probe() } }
        }
    }

    private func probe() async {
        var connection: PostgresConnection?
        var id = 0
        while !Task.isCancelled {
            let server = self.health.server
            do {
                if connection == nil {
                    id += 1
                    connection = try await self.connect(server, id: id)
                }
                try await self.check(connection!)
                if !self.health.reachable { self.logger.info("PostgreSQL answers again", metadata: ["database": "\(self.url)"]) }
                self.health.reachable = true
            } catch {
                if Task.isCancelled { break }
                if let dead = connection { Task { try? await dead.close() } }
                connection = nil
                if let (other, open) = await self.anotherServer(than: server, id: &id) {
                    self.logger.warning(
                        "PostgreSQL server \(self.url.servers[server].host):\(self.url.servers[server].port) failed; using \(self.url.servers[other].host):\(self.url.servers[other].port)",
                        metadata: ["error": "\(error)"])
                    self.health.server = other
                    self.health.reachable = true
                    connection = open
                } else {
                    if self.health.reachable {
                        self.logger.warning("PostgreSQL does not answer: answering 503 until it does", metadata: ["error": "\(error)"])
                    }
                    self.health.reachable = false
                }
            }
            self.health.firstProbe = false
            try? await Task.sleep(for: .seconds(1))
        }
        try? await connection?.close()
    }

    private func connect(_ server: Int, id: Int) async throws -> PostgresConnection {
        // A connection that opens after the bound is closed, not left to hold a server slot.
        try await Self.bounded(.seconds(3), late: { try? await $0.close() }) { [url, logger] in
            try await PostgresConnection.connect(configuration: try url.connectionConfiguration(server), id: id, logger: logger)
        }
    }

    /// That the server answers and, for a `read-write` URL, is not a standby.
    private func check(_ connection: PostgresConnection) async throws {
        let standby = try await Self.bounded(.seconds(3)) { [logger] in
            try await Rows.all(of: "SELECT pg_is_in_recovery()", on: connection, logger: logger, file: #fileID, line: #line)
                .decode(Bool.self).first() ?? false
        }
        if standby && self.url.readWrite {
            throw StoreError.unreachable(url: self.url.description, underlying: "the server is a standby (in recovery)")
        }
    }

    /// The first other server of the URL that passes `check`, with the connection that showed it.
    private func anotherServer(than server: Int, id: inout Int) async -> (Int, PostgresConnection)? {
        await self.firstServing(among: self.url.servers.indices.filter { $0 != server }, id: &id)
    }

    /// The first of `servers` that passes `check`, with the connection that showed it.
    private func firstServing(among servers: [Int], id: inout Int) async -> (Int, PostgresConnection)? {
        for other in servers {
            id += 1
            guard let connection = try? await self.connect(other, id: id) else { continue }
            if (try? await self.check(connection)) != nil { return (other, connection) }
            try? await connection.close()
        }
        return nil
    }

    /// `body`, or a timeout error after `limit`; `late` gets a result that came after the timeout.
    static func bounded<T: Sendable>(
        _ limit: Duration, late: (@Sendable (T) async -> Void)? = nil, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        // A race of two unstructured tasks, not a task group: a group waits for every child, and a query on a
        // connection whose server died mid-answer may ignore cancellation for good (seen after an immediate stop).
        let race = Race<T>()
        return try await withCheckedThrowingContinuation { continuation in
            race.start(continuation)
            let work = Task {
                do {
                    let value = try await body()
                    if !race.finish(.success(value)) { await late?(value) }
                } catch { race.finish(.failure(error)) }
            }
            Task {
                try? await Task.sleep(for: limit)
                work.cancel()
                race.finish(.failure(StoreError.unreachable(url: "-", underlying: "no answer within \(limit)")))
            }
        }
    }

    /// Fails at once while the probe finds the server away. Before the probe's first verdict (a few ms after
    /// `run`), waits for it: the first server of a list may be the one that is away.
    private func available() async throws {
        for _ in 0..<250 where self.health.firstProbe { try await Task.sleep(for: .milliseconds(20)) }
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
        try await self.available()
        do {
            // BEGIN, COMMIT and ROLLBACK go through `Rows.all` too (not PostgresClient.withTransaction), so that
            // none of them is written to a connection that closed and then waited on for ever.
            return try await self.client.withConnection { connection in
                let tx = Transaction(connection: connection, logger: self.logger, auditKey: self.auditKey)
                try await tx.query("BEGIN")
                let value: T
                do {
                    if isolation == .repeatableRead {
                        try await tx.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    } else if let fence = self.fence {
                        try await tx.query("SELECT allot_fence(\(fence.holder), \(fence.epoch))")
                    }
                    value = try await body(tx)
                    // Last, so the chain's lock is the last one any transaction takes and is held only to the commit.
                    try await tx.audit.flush()
                } catch {
                    _ = try? await tx.query("ROLLBACK")
                    throw error
                }
                try await tx.query("COMMIT")
                return value
            }
        } catch {
            throw self.translate(error)
        }
    }

    package enum Isolation: Sendable { case readCommitted, repeatableRead }

    /// Reads on one connection without a transaction of their own.
    package func read<T: Sendable>(_ body: (Transaction) async throws -> T) async throws -> T {
        try await self.available()
        do {
            return try await self.client.withConnection { connection in
                let tx = Transaction(connection: connection, logger: self.logger, auditKey: self.auditKey)
                let value = try await body(tx)
                precondition(tx.pendingAudit.isEmpty, "audit records are appended in a transaction, not a read")
                return value
            }
        } catch {
            throw self.translate(error)
        }
    }

    /// One statement outside any transaction of ours (for tests and one-shot statements).
    @discardableResult
    package func query(_ query: PostgresQuery, file: String = #fileID, line: Int = #line) async throws -> Rows {
        try await self.available()
        do {
            return try await self.client.withConnection { [logger] connection in
                try await Rows.all(of: query, on: connection, logger: logger, file: file, line: line)
            }
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
        // Trouble that passes, so the client should try again (503, Retry-After): the connection (08), the server
        // stopping or a query cancelled (57), resources such as connection slots (53), a serialization failure or
        // deadlock (40), a session ended for idling in a transaction (25P03: a paused allotd's, on resuming) or
        // over its time (25P04), a statement of a transaction already aborted by one of these (25P02: a query given up
        // at its time bound leaves its transaction so), a lock not granted in time (55P03), and a write that reached a standby (25006: a
        // server demoted, or not yet left for the promoted one). Nothing was committed in any of them.
        // A serialization failure or deadlock (40) and a lock not granted in time (55P03) are contention, not a lost server.
        if state.hasPrefix("40") || state == "55P03" { return StoreError.busy(e.serverMessage ?? state) }
        if ["08", "57", "53", "40"].contains(String(state.prefix(2))) || ["25006", "25P02", "25P03", "25P04", "55P03"].contains(state) {
            return StoreError.unreachable(url: self.url.description, underlying: e.serverMessage ?? state)
        }
        return error
    }

    /// Sends a notification on `channel` (PostgreSQL's NOTIFY, delivered to every session listening on it).
    public func notify(_ channel: String, payload: String = "") async throws {
        try await self.query("SELECT pg_notify(\(channel), \(payload))")
    }

    /// Listens on `channel` on a connection of its own, calling `listening` once LISTEN took effect and `received`
    /// for each notification, until the connection fails (it throws) or the task is cancelled.
    /// A connection gone silently (a link dropped without a reset, a server failed over) brings neither a notice nor
    /// an error: it is asked `SELECT 1` every `probe` and must answer within it, or it is closed and this throws.
    public func listen(
        _ channel: String, probe: Duration = .seconds(5), listening: @escaping @Sendable () -> Void = {},
        received: @escaping @Sendable () -> Void
    ) async throws {
        let (url, logger) = (self.url.description, self.logger)
        do {
            try await self.client.withConnection { connection in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try await connection.listen(on: channel) { notifications in
                            listening()
                            for try await _ in notifications { received() }
                        }
                    }
                    group.addTask {
                        while true {
                            let answered = Mutex(false)
                            let ping = Task {
                                if (try? await connection.query("SELECT 1", logger: logger)) != nil { answered.withLock { $0 = true } }
                            }
                            try await Task.sleep(for: probe)
                            guard answered.withLock({ $0 }) else {
                                ping.cancel()
                                try? await connection.close()
                                throw StoreError.unreachable(url: url, underlying: "the listening connection did not answer within \(probe)")
                            }
                        }
                    }
                    try await group.next()
                    group.cancelAll()
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
        self.health.firstProbe = false  // no probe here: one-shot commands go to the first server that serves
        var id = 0
        if self.url.servers.count > 1, let (server, connection) = await self.firstServing(among: Array(self.url.servers.indices), id: &id) {
            try? await connection.close()
            self.health.server = server
        }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            for client in self.clients {
                group.addTask {
                    await client.run()
                    return nil
                }
            }
            defer { group.cancelAll() }
            // Let run() start first: the client warns about leases asked for before it runs.
            try await Task.sleep(for: .milliseconds(20))
            return try await body()
        }
    }
}

/// What the reachability probe last found; shared by every copy of a `Database`.
/// The continuation of `Database.bounded`, resumed by whichever finishes first.
final class Race<T: Sendable>: Sendable {
    private let pending = Mutex<CheckedContinuation<T, any Error>?>(nil)
    func start(_ continuation: CheckedContinuation<T, any Error>) { self.pending.withLock { $0 = continuation } }
    /// Whether this was the first to finish (the one that resumed the caller).
    @discardableResult
    func finish(_ result: Result<T, any Error>) -> Bool {
        guard let continuation = self.pending.withLock({ $0.take() }) else { return false }
        continuation.resume(with: result)
        return true
    }
}

final class Health: Sendable {
    private let state = Mutex((reachable: true, server: 0, firstProbe: true))
    var reachable: Bool {
        get { self.state.withLock { $0.reachable } }
        set { self.state.withLock { $0.reachable = newValue } }
    }
    /// Whether the probe has yet to give its first verdict (`run` starts it; `withRunningClient` runs none).
    var firstProbe: Bool {
        get { self.state.withLock { $0.firstProbe } }
        set { self.state.withLock { $0.firstProbe = newValue } }
    }
    /// The server of the URL in use.
    var server: Int {
        get { self.state.withLock { $0.server } }
        set { self.state.withLock { $0.server = newValue } }
    }
}

extension AsyncSequence {
    /// The first element, or nil.
    func first() async throws -> Element? { try await self.first { _ in true } }

    /// Every element, in order.
    func array() async throws -> [Element] { try await self.reduce(into: []) { $0.append($1) } }
}
