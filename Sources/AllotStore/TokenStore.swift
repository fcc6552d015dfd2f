import AllotCore
import Foundation
import PostgresNIO

/// Bearer tokens. Only a SHA-256 of each secret is stored; the secret is returned once, when made.
public struct TokenStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// A new secret: `allot_` and 32 random bytes in hex.
    public static func newSecret() -> String {
        var rng = SystemRandomNumberGenerator()
        return "allot_" + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }

    /// Makes a token inside an open transaction and returns its secret.
    public func create(name: String, role: Role, org: String?, node: String?, on connection: PostgresConnection) async throws -> String {
        let secret = Self.newSecret()
        do {
            try await connection.query(
                """
                INSERT INTO tokens (hash, name, role, org, node)
                VALUES (encode(sha256(convert_to(\(secret), 'UTF8')), 'hex'), \(name), \(role.rawValue)::token_role, \(org), \(node))
                """, logger: self.database.logger)
        } catch let error as PSQLError where error.sqlState == "23503" {
            throw StoreError.invalid(field: "org", message: "unknown organization '\(org ?? "")'")
        }
        return secret
    }

    public func create(name: String, role: Role, org: String?, actor: Principal) async throws -> String {
        if (role == .member || role == .orgAdmin) && org == nil {
            throw StoreError.invalid(field: "org", message: "a \(role.rawValue) token needs an organization")
        }
        if role == .agent { throw StoreError.invalid(field: "role", message: "agent tokens are made by `allot nodes add`") }
        return try await self.database.transaction { connection in
            let secret = try await self.create(name: name, role: role, org: org, node: nil, on: connection)
            try await AuditStore.append(
                connection, logger: self.database.logger, actor: actor, action: "token.create", target: name, outcome: "ok",
                detail: ["role": role.rawValue, "org": org ?? ""])
            return secret
        }
    }

    /// The first operator token; refuses when an operator token already exists.
    public func bootstrap() async throws -> String {
        try await self.database.transaction { connection in
            try await connection.query("LOCK TABLE tokens IN EXCLUSIVE MODE", logger: self.database.logger)
            let count =
                try await connection.query(
                    "SELECT count(*) FROM tokens WHERE role = 'operator' AND revoked_at IS NULL", logger: self.database.logger
                ).decode(Int.self).first { _ in true } ?? 0
            if count > 0 { throw StoreError.conflict("an operator token exists already: bootstrap runs once") }
            let secret = try await self.create(name: "bootstrap-operator", role: .operator, org: nil, node: nil, on: connection)
            try await AuditStore.append(
                connection, logger: self.database.logger, actor: Principal(name: "bootstrap", role: .operator),
                action: "token.bootstrap", target: "bootstrap-operator", outcome: "ok", detail: [:])
            return secret
        }
    }

    /// The principal a secret stands for, or nil when unknown or revoked.
    public func authenticate(_ secret: String) async throws -> Principal? {
        let rows = try await self.database.query(
            """
            SELECT name, role::text, org, node FROM tokens
            WHERE hash = encode(sha256(convert_to(\(secret), 'UTF8')), 'hex') AND revoked_at IS NULL
            """)
        for try await (name, role, org, node) in rows.decode((String, String, String?, String?).self) {
            guard let role = Role(rawValue: role) else { return nil }
            return Principal(name: name, role: role, org: org, node: node)
        }
        return nil
    }
}
