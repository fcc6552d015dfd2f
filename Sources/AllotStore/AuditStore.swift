public import AllotCore
public import Foundation
import Logging
import PostgresNIO

/// The one writer of `audit`: appends happen inside the transaction that makes the change, so a change and its
/// record commit together or not at all.
struct AuditLog {
    let tx: Transaction

    func append(_ entry: AuditEntry) async throws {
        let json = entry.detail.isEmpty ? nil : String(decoding: try JSONEncoder().encode(entry.detail), as: UTF8.self)
        let actor = "\(entry.actor.role.rawValue):\(entry.actor.name)"
        try await self.tx.query(
            "SELECT audit_append(\(actor), \(entry.action), \(entry.target), \(entry.outcome), \(json)::jsonb)")
    }

    func append(_ entries: [AuditEntry]) async throws {
        for e in entries { try await self.append(e) }
    }
}

extension Transaction {
    var audit: AuditLog { AuditLog(tx: self) }
}

/// The append-only, hash-chained audit log as operators and auditors read it.
public struct AuditStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    public func list(since: Date?, limit: Int = 1000) async throws -> [AuditRecord] {
        try await self.database.read { tx in
            let rows = try await tx.query(
                """
                SELECT id, at, actor, action, target, outcome, detail::text FROM audit
                WHERE at >= coalesce(\(since), '-infinity'::timestamptz) ORDER BY id LIMIT \(limit)
                """)
            var out: [AuditRecord] = []
            for try await (id, at, actor, action, target, outcome, detail) in rows.decode(
                (Int64, Date, String, String, String, String, String?).self)
            {
                out.append(AuditRecord(id: id, at: at, actor: actor, action: action, target: target, outcome: outcome, detail: detail))
            }
            return out
        }
    }

    /// Recomputes the chain; returns the number of records checked and the first id that does not match, if any.
    public func verify() async throws -> (checked: Int, firstBroken: Int64?) {
        try await self.database.read { tx in
            let rows = try await tx.query(
                """
                SELECT count(*)::bigint,
                       min(id) FILTER (WHERE hash <> audit_hash(prev_hash, at, actor, action, target, outcome, detail)
                                          OR prev_hash <> coalesce(prev, repeat('0', 64)))
                FROM (SELECT *, lag(hash) OVER (ORDER BY id) AS prev FROM audit) chain
                """)
            for try await (count, broken) in rows.decode((Int64, Int64?).self) { return (Int(count), broken) }
            return (0, nil)
        }
    }
}
