public import AllotCore
import Foundation
import PostgresNIO

/// The one writer of `tokens`. Only a SHA-256 of each secret is stored; the secret is returned once, when made.
struct TokensTable {
    let tx: Transaction

    /// Makes a token and returns its secret.
    func insert(name: String, role: Role, org: String?, node: String?) async throws -> String {
        let secret = TokenStore.newSecret()
        do {
            try await self.tx.query(
                """
                INSERT INTO tokens (hash, name, role, org, node)
                VALUES (encode(sha256(convert_to(\(secret), 'UTF8')), 'hex'), \(name), \(role.rawValue)::token_role, \(org), \(node))
                """)
        } catch let error as PSQLError where error.sqlState == "23503" {
            throw StoreError.invalid(field: "org", message: "unknown organization '\(org ?? "")'")
        }
        return secret
    }
}

extension TokensTable {
    /// A node enrolled again: its agent's old tokens stop working at once.
    func revokeAgentTokens(node: String) async throws {
        try await self.tx.query("UPDATE tokens SET revoked_at = now() WHERE node = \(node) AND role = 'agent' AND revoked_at IS NULL")
    }
}

extension Transaction {
    var tokens: TokensTable { TokensTable(tx: self) }
}

/// Bearer tokens: made by operators and org-admins, the first one by `allotd bootstrap`; a secret stands for
/// the principal its row names until it is revoked.
public struct TokenStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// A new secret: `allot_` and 32 random bytes in hex.
    public static func newSecret() -> String {
        var rng = SystemRandomNumberGenerator()
        return "allot_" + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }

    public func create(name: String, role: Role, org: String?, actor: Principal) async throws -> String {
        if (role == .member || role == .orgAdmin) && org == nil {
            throw StoreError.invalid(field: "org", message: "a \(role.rawValue) token needs an organization")
        }
        if role == .agent { throw StoreError.invalid(field: "role", message: "agent tokens are made by `allot nodes add`") }
        return try await self.database.transaction { tx in
            let secret = try await tx.tokens.insert(name: name, role: role, org: org, node: nil)
            try await tx.audit.append(
                AuditEntry(actor: actor, action: "token.create", target: name, outcome: "ok", detail: ["role": role.rawValue, "org": org ?? ""]))
            return secret
        }
    }

    /// The first operator token; refuses when an operator token already exists.
    public func bootstrap() async throws -> String {
        try await self.database.transaction { tx in
            try await tx.query("LOCK TABLE tokens IN EXCLUSIVE MODE")
            let count = try await tx.query("SELECT count(*) FROM tokens WHERE role = 'operator' AND revoked_at IS NULL").decode(Int.self).first() ?? 0
            if count > 0 { throw StoreError.conflict("an operator token exists already: bootstrap runs once") }
            let secret = try await tx.tokens.insert(name: "bootstrap-operator", role: .operator, org: nil, node: nil)
            try await tx.audit.append(
                AuditEntry(
                    actor: Principal(name: "bootstrap", role: .operator), action: "token.bootstrap", target: "bootstrap-operator", outcome: "ok"))
            return secret
        }
    }

    /// The principal a secret stands for, or nil when unknown or revoked.
    public func authenticate(_ secret: String) async throws -> Principal? {
        try await self.database.read { tx in
            let rows = try await tx.query(
                """
                SELECT name, role::text, org, node FROM tokens
                WHERE hash = encode(sha256(convert_to(\(secret), 'UTF8')), 'hex') AND revoked_at IS NULL
                """)
            for try await (name, role, org, node) in rows.decode((String, String, String?, String?).self) {
                return Principal(name: name, role: try decoded(role, "tokens.role"), org: org, node: node)
            }
            return nil
        }
    }
}
