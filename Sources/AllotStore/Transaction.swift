import AllotCore
public import Foundation
public import Logging
package import PostgresNIO

/// One open transaction, handed to each table's writer in turn so that a change spanning several tables
/// commits whole or not at all. Used by one task at a time, inside `Database.transaction`.
package final class Transaction {
    let connection: PostgresConnection
    let logger: Logger
    let auditKey: Data
    private var clock: Date?
    /// The audit records of this transaction, appended to the chain just before it commits (`AuditLog`).
    var pendingAudit: [AuditEntry] = []
    /// How many records were pending when each savepoint was taken: rolling back to it drops the ones after.
    private var savepoints: [String: Int] = [:]

    /// A savepoint; `rollback(to:)` undoes what came after it, audit records included.
    func savepoint(_ name: String) async throws {
        try await self.query("SAVEPOINT \(unescaped: name)")
        self.savepoints[name] = self.pendingAudit.count
    }

    func rollback(to name: String) async throws {
        try await self.query("ROLLBACK TO SAVEPOINT \(unescaped: name)")
        if let count = self.savepoints[name], count < self.pendingAudit.count { self.pendingAudit.removeSubrange(count...) }
    }

    func release(_ name: String) async throws {
        try await self.query("RELEASE SAVEPOINT \(unescaped: name)")
    }

    init(connection: PostgresConnection, logger: Logger, auditKey: Data) {
        self.connection = connection
        self.logger = logger
        self.auditKey = auditKey
    }

    @discardableResult
    package func query(_ query: PostgresQuery, file: String = #fileID, line: Int = #line) async throws -> Rows {
        try await Rows.all(of: query, on: self.connection, logger: self.logger, file: file, line: line)
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

/// A query's rows, every one read before the query returns. Why not PostgresNIO's streaming `PostgresRowSequence`:
/// in 1.33.2 a connection that the server closes while a stream waits for its consumer's demand traps the whole
/// process (RowStreamStateMachine.channelReadComplete, "How can we receive a body part, after a
/// channelReadComplete…"), which a primary's immediate stop mid-load did; the collecting API asks for more rows at
/// once on the event loop and never waits for a consumer. Every result Allot reads is decoded whole anyway.
/// PostgresNIO's `decode` (on any sequence of rows) applies as before.
package struct Rows: AsyncSequence, Sendable {
    package let rows: [PostgresRow]

    static func all(of query: PostgresQuery, on connection: PostgresConnection, logger: Logger, file: String, line: Int) async throws -> Rows {
        // On the connection's event loop, the check then the write: a query written to a connection that has
        // closed is dropped with its promise (PostgresNIO writes it without one), seen as a request that hung after
        // the server ended a session; while the channel is active its handler is there to answer or fail it. And
        // the collecting starts at once, before any row can arrive.
        let result: EventLoopFuture<PostgresQueryResult> = connection.eventLoop.flatSubmit {
            if connection.isClosed {
                return connection.eventLoop.makeFailedFuture(
                    StoreError.unreachable(url: "-", underlying: "the connection had closed before the query"))
            }
            return connection.query(query, logger: logger, file: file, line: line)
        }
        return Rows(rows: Array(try await result.get()))
    }

    package struct AsyncIterator: AsyncIteratorProtocol {
        var rows: IndexingIterator<[PostgresRow]>
        package mutating func next() async -> PostgresRow? { self.rows.next() }
    }

    package func makeAsyncIterator() -> AsyncIterator { AsyncIterator(rows: self.rows.makeIterator()) }
}
