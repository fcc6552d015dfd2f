import AllotCore
import AllotDatabaseTesting
import AllotServer
import AllotStore
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOFoundationCompat
import PostgresNIO
import Testing

/// Tokens from the making to the end: expiry within Policies/, names unique per organisation, org-admins over
/// their own organisation's members, revocation and expiry at once, the audit actor `role:org/name`.
@Suite("Tokens: create, list, revoke, expire", databaseTests)
struct TokenLifecycleTests {
    static func create(
        _ client: some TestClientProtocol, _ w: World, as caller: Caller, _ body: String
    ) async throws -> (status: HTTPResponse.Status, made: CreateTokenResponse?, error: APIErrorBody.Detail?) {
        try await client.execute(uri: "/v1/tokens", method: .post, headers: w.headers(caller), body: ByteBuffer(string: body)) { r in
            let data = Data(buffer: r.body)
            return (
                r.status, try? WireJSON.decoder.decode(CreateTokenResponse.self, from: data),
                try? JSONDecoder().decode(APIErrorBody.self, from: data).error
            )
        }
    }

    static func status(_ client: some TestClientProtocol, token: String) async throws -> HTTPResponse.Status {
        try await client.execute(uri: "/v1/jobs", method: .get, headers: [.authorization: "Bearer \(token)"]) { $0.status }
    }

    @Test("an org-admin makes its own organisation's member tokens, with an expiry within Policies/, under unique valid names")
    func create() async throws {
        try await TestDatabase.with { db in
            let w = try await World.make(db)
            try await w.app.test(.router) { client in
                let made = try await Self.create(
                    client, w, as: .orgAdmin, #"{"name": "carol", "role": "member", "org": "lab", "expiresInSeconds": 3600}"#)
                #expect(made.status == .created)
                let expires = try #require(made.made?.expiresAt)
                #expect(abs(expires.timeIntervalSinceNow - 3600) < 60)
                #expect(try await Self.status(client, token: try #require(made.made?.token)) == .ok)
                // Without an expiry: Policies/ defaults.tokenLifetime (90 days unless set).
                let defaulted = try await Self.create(client, w, as: .orgAdmin, #"{"name": "dave", "role": "member", "org": "lab"}"#)
                #expect(abs((defaulted.made?.expiresAt?.timeIntervalSinceNow ?? 0) - 90 * 86400) < 60)
                // Names: unique among an organisation's live tokens; another organisation may use the same.
                let twice = try await Self.create(client, w, as: .orgAdmin, #"{"name": "carol", "role": "member", "org": "lab"}"#)
                #expect(twice.status == .conflict)
                #expect(
                    try await Self.create(client, w, as: .otherOrgAdmin, #"{"name": "carol", "role": "member", "org": "uni"}"#).status == .created)
                for bad in ["", "a b", "../x", String(repeating: "x", count: 65), "-lead", "caf\u{e9}\u{301}"] {
                    let json = String(decoding: try JSONEncoder().encode(["name": bad, "role": "member", "org": "lab"]), as: UTF8.self)
                    let r = try await Self.create(client, w, as: .orgAdmin, json)
                    #expect(r.status == .badRequest && r.error?.field == "name", "'\(bad)': \(r.status)")
                }
                let long = try await Self.create(
                    client, w, as: .orgAdmin, #"{"name": "eve", "role": "member", "org": "lab", "expiresInSeconds": 99999999999}"#)
                #expect(long.status == .badRequest && long.error?.field == "expiresInSeconds")
                let negative = try await Self.create(
                    client, w, as: .orgAdmin, #"{"name": "eve", "role": "member", "org": "lab", "expiresInSeconds": -1}"#)
                #expect(negative.status == .badRequest && negative.error?.field == "expiresInSeconds")
                // An org-admin makes neither an operator token nor another organisation's, nor another org-admin.
                for body in [
                    #"{"name": "x1", "role": "operator"}"#, #"{"name": "x2", "role": "member", "org": "uni"}"#,
                    #"{"name": "x3", "role": "org-admin", "org": "lab"}"#,
                ] {
                    #expect(try await Self.create(client, w, as: .orgAdmin, body).status == .forbidden, "\(body)")
                }
                // An operator makes any person's token, but never an agent's (nodes enrol for those).
                #expect(try await Self.create(client, w, as: .operator, #"{"name": "ops2", "role": "operator"}"#).status == .created)
                #expect(try await Self.create(client, w, as: .operator, #"{"name": "a", "role": "agent"}"#).status == .badRequest)
            }
        }
    }

    @Test("list shows each manager its own; revoked and expired tokens stop at once; last use is kept")
    func listRevokeExpire() async throws {
        try await TestDatabase.with { db in
            let w = try await World.make(db)
            try await w.app.test(.router) { client in
                let carol = try #require(
                    try await Self.create(client, w, as: .orgAdmin, #"{"name": "carol", "role": "member", "org": "lab"}"#).made)
                #expect(try await Self.status(client, token: carol.token) == .ok)
                let listed: (HTTPFields) async throws -> [TokenView] = { headers in
                    try await client.execute(uri: "/v1/tokens?all=true", method: .get, headers: headers) { r in
                        try WireJSON.decoder.decode([TokenView].self, from: Data(buffer: r.body))
                    }
                }
                let lab = try await listed(w.headers(.orgAdmin))
                #expect(Set(lab.map(\.name)) == ["alice-labsecret", "carol"], "\(lab.map(\.name))")
                #expect(lab.first { $0.name == "carol" }?.lastUsedAt != nil)
                #expect(try await listed(w.headers(.otherOrgAdmin)).map(\.name) == ["bob-unisecret"])
                #expect(try await listed(w.headers(.operator)).count >= 9)
                // uni's admin cannot revoke it (it is not theirs to know of); lab's can, and it stops at once.
                try await client.execute(uri: "/v1/tokens/\(carol.id)/revoke", method: .post, headers: w.headers(.otherOrgAdmin)) {
                    #expect($0.status == .notFound)
                }
                #expect(try await Self.status(client, token: carol.token) == .ok)
                try await client.execute(uri: "/v1/tokens/\(carol.id)/revoke", method: .post, headers: w.headers(.orgAdmin)) { r in
                    #expect(r.status == .ok)
                    let view = try WireJSON.decoder.decode(TokenView.self, from: Data(buffer: r.body))
                    #expect(view.revokedAt != nil)
                }
                #expect(try await Self.status(client, token: carol.token) == .unauthorized)
                #expect(try await listed(w.headers(.orgAdmin)).contains { $0.name == "carol" && $0.revokedAt != nil })
                // The name is free again once the old token is revoked.
                let again = try #require(try await Self.create(client, w, as: .orgAdmin, #"{"name": "carol", "role": "member", "org": "lab"}"#).made)
                // Expiry: the moment passes (set in the database rather than waited for), and the token stops.
                #expect(try await Self.status(client, token: again.token) == .ok)
                try await db.query("UPDATE tokens SET expires_at = now() - interval '1 second' WHERE id = \(again.id)")
                // Changed behind allotd's back, the token stops as the change's notice reaches it (TokenCache); a real
                // expiry is checked against the time on every request.
                var status = try await Self.status(client, token: again.token)
                for _ in 0..<100 where status != .unauthorized {
                    try await Task.sleep(for: .milliseconds(20))
                    status = try await Self.status(client, token: again.token)
                }
                #expect(status == .unauthorized)
            }
        }
    }

    @Test("the audit log names the actor role:org/name, and what a token did is told apart from a namesake elsewhere")
    func auditActor() async throws {
        try await TestDatabase.with { db in
            let w = try await World.make(db)
            try await w.app.test(.router) { client in
                let carol = try #require(try await Self.create(client, w, as: .orgAdmin, #"{"name": "carol", "role": "member", "org": "lab"}"#).made)
                try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer \(carol.token)"],
                    body: ByteBuffer(string: "pool: h200\ngpusPerNode: 1\ncommand: 'true'")
                ) { #expect($0.status == .created) }
                try await client.execute(uri: "/v1/quota?period=2026-11", method: .get, headers: [.authorization: "Bearer \(carol.token)"]) {
                    #expect($0.status == .ok)
                }
            }
            let records = try await AuditStore(database: db).list(since: nil)
            // Reading a statement is on the record too.
            #expect(records.contains { $0.actor == "member:lab/carol" && $0.action == "quota.read" && $0.target == "quota/lab" })
            #expect(records.contains { $0.actor == "member:lab/carol" && $0.action == "job.submit" })
            #expect(records.contains { $0.actor == "org-admin:lab/admin-labsecret" && $0.action == "token.create" })
        }
    }

    @Test("Policies/ says which organisations and roles may submit with a priority class")
    func priorityClasses() async throws {
        try await TestDatabase.with { db in
            let w = try await World.make(db)
            var policy = World.policy
            policy.priorityClasses.append(
                PriorityClass(name: "critical", value: 1000, preempts: true, organizations: ["lab"], roles: [.orgAdmin, .operator]))
            _ = try await PolicyStore(database: db).apply(policy, by: World.op, dryRun: false)
            try await w.app.test(.router) { client in
                for (caller, org, status) in [
                    (Caller.member, "lab", HTTPResponse.Status.forbidden), (.orgAdmin, "lab", .created), (.otherOrgAdmin, "uni", .forbidden),
                    (.operator, "uni", .forbidden), (.operator, "lab", .created),
                ] {
                    try await client.execute(
                        uri: "/v1/jobs", method: .post, headers: w.headers(caller),
                        body: ByteBuffer(string: "org: \(org)\npool: h200\ngpusPerNode: 1\npriorityClass: critical\ncommand: 'true'")
                    ) { r in
                        #expect(r.status == status, "\(caller) for \(org): \(r.status) \(String(buffer: r.body))")
                        if status == .forbidden { #expect(String(buffer: r.body).contains("priority class critical")) }
                    }
                }
            }
        }
    }
}
