public import AllotCore
public import Foundation
import PostgresNIO

/// The one writer of `tokens`. Only a SHA-256 of each secret is stored; the secret is returned once, when made.
struct TokensTable {
    let tx: Transaction

    /// Makes a token and returns its id and secret.
    func insert(
        name: String, role: Role, org: String?, node: String?, expiresAt: Date? = nil, createdBy: String? = nil
    ) async throws -> (
        id: Int64, secret: String
    ) {
        let secret = TokenStore.newSecret()
        do {
            guard
                let id = try await self.tx.query(
                    """
                    INSERT INTO tokens (hash, name, role, org, node, expires_at, created_by)
                    VALUES (encode(sha256(convert_to(\(secret), 'UTF8')), 'hex'), \(name), \(role.rawValue)::token_role, \(org), \(node),
                            \(expiresAt), \(createdBy))
                    RETURNING id
                    """
                ).decode(Int64.self).first()
            else { throw StoreError.conflict("the token was not stored") }
            return (id, secret)
        } catch let error as PSQLError where error.sqlState == "23503" {
            throw StoreError.invalid(field: "org", message: "unknown organization '\(org ?? "")'")
        } catch let error as PSQLError where error.sqlState == "23505" {
            throw StoreError.conflict("a live token named '\(name)' exists already\(org.map { " in \($0)" } ?? ""): revoke it or choose another name")
        }
    }

    /// A node enrolled again: its agent's old tokens stop working at once.
    func revokeAgentTokens(node: String) async throws {
        try await self.tx.query("UPDATE tokens SET revoked_at = now() WHERE node = \(node) AND role = 'agent' AND revoked_at IS NULL")
    }

    /// The live token with this secret (or id), its last use recorded when it is over a minute old: a busy client
    /// costs one indexed read per request, and a write a minute.
    func live(secret: String?, id: Int64?) async throws -> (id: Int64, principal: Principal, expiresIn: Duration?)? {
        guard secret != nil || id != nil else { return nil }
        let rows = try await self.tx.query(
            """
            WITH t AS (
                SELECT id, name, role, org, node, last_used_at, expires_at FROM tokens
                WHERE (\(secret)::text IS NULL OR hash = encode(sha256(convert_to(\(secret), 'UTF8')), 'hex'))
                  AND (\(id)::bigint IS NULL OR id = \(id))
                  AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
            ), touched AS (
                UPDATE tokens SET last_used_at = now() FROM t
                WHERE tokens.id = t.id AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
            )
            SELECT id, name, role::text, org, node, extract(epoch FROM expires_at - now())::float8 FROM t
            """)
        for try await (id, name, role, org, node, left) in rows.decode((Int64, String, String, String?, String?, Double?).self) {
            return (id, Principal(name: name, role: try decoded(role, "tokens.role"), org: org, node: node), left.map { .seconds($0) })
        }
        return nil
    }

    func revoke(_ id: Int64) async throws {
        try await self.tx.query("UPDATE tokens SET revoked_at = now() WHERE id = \(id) AND revoked_at IS NULL")
    }
}

extension Transaction {
    var tokens: TokensTable { TokensTable(tx: self) }
}

/// Bearer tokens: made by operators and org-admins, the first one by `allotd bootstrap`; a secret stands for
/// the principal its row names until it is revoked or expires — checked on every request, in the database or, with
/// a `TokenCache`, against what the database said within the last minute and has not since notified a change of.
public struct TokenStore: Sendable {
    public let database: Database
    public let cache: TokenCache?
    public init(database: Database, cache: TokenCache? = nil) {
        self.database = database
        self.cache = cache
    }

    /// A new secret: `allot_` and 32 random bytes in hex.
    public static func newSecret() -> String {
        var rng = SystemRandomNumberGenerator()
        return "allot_" + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }

    /// Why `name` cannot name a token, or nil: 1–64 letters, digits, `.`, `_`, `-` or `@`, starting with a letter or
    /// digit (a person's login or e-mail, a service's name).
    public static func nameProblem(_ name: String) -> String? {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
        guard let first = name.first, first.isLetter || first.isNumber, name.count <= 64, name.allSatisfy({ allowed.contains($0) }) else {
            return "must be 1–64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit, not '\(name.prefix(80))'"
        }
        return nil
    }

    /// Makes a token of `role` (for `org`, for members and org-admins) that expires after `expiresIn` seconds
    /// (default and maximum from Policies/ defaults).
    public func create(name: String, role: Role, org: String?, expiresIn: Int64? = nil, actor: Principal) async throws -> CreateTokenResponse {
        if let why = Self.nameProblem(name) { throw StoreError.invalid(field: "name", message: why) }
        if (role == .member || role == .orgAdmin) && org == nil {
            throw StoreError.invalid(field: "org", message: "a \(role.rawValue) token needs an organization")
        }
        if role != .member && role != .orgAdmin && org != nil {
            throw StoreError.invalid(field: "org", message: "a \(role.rawValue) token belongs to no organization")
        }
        if role == .agent { throw StoreError.invalid(field: "role", message: "agent tokens are made by `allot nodes add`") }
        if let e = expiresIn, e <= 0 { throw StoreError.invalid(field: "expiresInSeconds", message: "must be more than 0") }
        return try await self.database.transaction { tx in
            let (lifetime, maxLifetime) =
                try await tx.query("SELECT token_lifetime_s, token_max_lifetime_s FROM policy_defaults").decode((Int64, Int64).self).first()
                ?? (90 * 86400, 365 * 86400)
            let seconds = expiresIn ?? lifetime
            if seconds > maxLifetime {
                throw StoreError.invalid(
                    field: "expiresInSeconds",
                    message: "\(seconds)s is longer than tokens may live here (Policies/ defaults.tokenMaxLifetime: \(maxLifetime)s)")
            }
            let expiresAt = (try await tx.now()).addingTimeInterval(Double(seconds))
            let (id, secret) = try await tx.tokens.insert(
                name: name, role: role, org: org, node: nil, expiresAt: expiresAt, createdBy: actor.auditName)
            try await tx.audit.append(
                AuditEntry(
                    actor: actor, action: "token.create", target: "token/\(id)", outcome: "ok",
                    detail: ["name": name, "role": role.rawValue, "org": org ?? "", "expires": ISO8601DateFormatter().string(from: expiresAt)]))
            return CreateTokenResponse(id: id, name: name, token: secret, expiresAt: expiresAt)
        }
    }

    /// The tokens `scope` manages: every token for operators; an organisation's own member tokens for its org-admins.
    public func list(scope: Scope, includeRevoked: Bool = false) async throws -> [TokenView] {
        if !scope.seesOrganizations { return [] }
        return try await self.database.read { tx in
            let org = scope.organization
            let rows = try await tx.query(
                """
                SELECT id, name, role::text, org, node, created_at, created_by, expires_at, last_used_at, revoked_at FROM tokens
                WHERE (\(org)::text IS NULL OR (org = \(org) AND role = 'member')) AND (\(includeRevoked) OR revoked_at IS NULL)
                ORDER BY id
                """)
            var out: [TokenView] = []
            for try await (id, name, role, org, node, created, by, expires, used, revoked) in rows.decode(
                (Int64, String, String, String?, String?, Date, String?, Date?, Date?, Date?).self)
            {
                out.append(
                    TokenView(
                        id: id, name: name, role: try decoded(role, "tokens.role"), org: org, node: node, createdAt: created, createdBy: by,
                        expiresAt: expires, lastUsedAt: used, revokedAt: revoked))
            }
            return out
        }
    }

    /// Revokes token `id` if `scope` manages it (notFound otherwise, so an org-admin learns nothing of others'
    /// tokens); it stops working at once.
    public func revoke(_ id: Int64, scope: Scope, actor: Principal) async throws -> TokenView {
        guard scope.seesOrganizations else { throw StoreError.notFound("token \(id)") }
        try await self.database.transaction { tx in
            let org = scope.organization
            guard
                let (name, role) = try await tx.query(
                    """
                    SELECT name, role::text FROM tokens WHERE id = \(id) AND (\(org)::text IS NULL OR (org = \(org) AND role = 'member')) FOR UPDATE
                    """
                ).decode((String, String).self).first()
            else { throw StoreError.notFound("token \(id)") }
            try await tx.tokens.revoke(id)
            try await tx.audit.append(
                AuditEntry(actor: actor, action: "token.revoke", target: "token/\(id)", outcome: "revoked", detail: ["name": name, "role": role]))
        }
        // Here at once, before the revocation is answered; other allotds as its notice reaches them.
        self.cache?.forget()
        guard let view = try await self.list(scope: scope, includeRevoked: true).first(where: { $0.id == id }) else {
            throw StoreError.notFound("token \(id)")
        }
        return view
    }

    /// The first operator token; refuses when an operator token already exists.
    public func bootstrap() async throws -> String {
        try await self.database.transaction { tx in
            try await tx.query("LOCK TABLE tokens IN EXCLUSIVE MODE")
            let count = try await tx.query("SELECT count(*) FROM tokens WHERE role = 'operator' AND revoked_at IS NULL").decode(Int.self).first() ?? 0
            if count > 0 { throw StoreError.conflict("an operator token exists already: bootstrap runs once") }
            // The first operator token does not expire: it is how the others are made (revoke it once they are).
            let (_, secret) = try await tx.tokens.insert(name: "bootstrap-operator", role: .operator, org: nil, node: nil, createdBy: "bootstrap")
            try await tx.audit.append(
                AuditEntry(
                    actor: Principal(name: "bootstrap", role: .operator), action: "token.bootstrap", target: "bootstrap-operator", outcome: "ok"))
            return secret
        }
    }

    /// The principal a secret stands for, or nil when unknown, revoked or expired. Its last use is recorded (at
    /// most once a minute, so a busy client does not write on every request).
    public func authenticate(_ secret: String) async throws -> Principal? { try await self.authenticateWithID(secret)?.principal }

    /// The same, with the token's id (what the web page's session remembers instead of the secret).
    public func authenticateWithID(_ secret: String) async throws -> (id: Int64, principal: Principal)? {
        if let kept = self.cache?.principal(for: secret) { return kept }
        let generation = self.cache?.begin()
        guard let found = try await self.lookUp(secret: secret, id: nil) else { return nil }
        if let generation { self.cache?.keep(secret, id: found.id, principal: found.principal, expiresIn: found.expiresIn, since: generation) }
        return (found.id, found.principal)
    }

    /// The principal token `id` stands for while it is live.
    public func principal(tokenID id: Int64) async throws -> Principal? { try await self.lookUp(secret: nil, id: id)?.principal }

    private func lookUp(secret: String?, id: Int64?) async throws -> (id: Int64, principal: Principal, expiresIn: Duration?)? {
        // One statement, atomic on its own: no BEGIN and COMMIT round trips on every request.
        try await self.database.read { tx in try await tx.tokens.live(secret: secret, id: id) }
    }
}
