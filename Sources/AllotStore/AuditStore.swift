import AllotCore
import Foundation
import Logging
import PostgresNIO

/// The append-only, hash-chained audit log. Appends happen inside the transaction that makes the change,
/// so a change and its record commit together or not at all.
public struct AuditStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    public static func append(
        _ connection: PostgresConnection, logger: Logger, actor: Principal, action: String, target: String, outcome: String,
        detail: [String: String]
    ) async throws {
        let json = detail.isEmpty ? nil : String(decoding: try JSONEncoder().encode(detail), as: UTF8.self)
        let actorName = "\(actor.role.rawValue):\(actor.name)"
        try await connection.query(
            "SELECT audit_append(\(actorName), \(action), \(target), \(outcome), \(json)::jsonb)", logger: logger)
    }

    public func list(since: Date?, limit: Int = 1000) async throws -> [AuditRecord] {
        let rows = try await self.database.query(
            """
            SELECT id, at, actor, action, target, outcome, detail::text FROM audit
            WHERE at >= coalesce(\(since), '-infinity'::timestamptz) ORDER BY id LIMIT \(limit)
            """)
        var out: [AuditRecord] = []
        for try await (id, at, actor, action, target, outcome, detail) in rows.decode((Int64, Date, String, String, String, String, String?).self) {
            out.append(AuditRecord(id: id, at: at, actor: actor, action: action, target: target, outcome: outcome, detail: detail))
        }
        return out
    }

    /// Recomputes the chain; returns the number of records checked and the first id that does not match, if any.
    public func verify() async throws -> (checked: Int, firstBroken: Int64?) {
        let rows = try await self.database.query(
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
