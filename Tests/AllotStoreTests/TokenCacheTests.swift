import AllotCore
import AllotDatabaseTesting
import AllotStore
import Foundation
import PostgresNIO
import Testing

@Suite("Tokens looked up lately: kept only while changes are heard, forgotten at each")
struct TokenCacheTests {
    let who = Principal(name: "ana", role: .member, org: "lab")

    @Test("nothing is kept while not listening; a lookup begun before a change is not kept; an entry outlives neither its lifetime nor its token")
    func keeping() async throws {
        // Each check waits at least as long as it needs: a slow machine only makes the waits longer.
        let cache = TokenCache(lifetime: .seconds(600))
        #expect(cache.begin() == nil, "not listening: nothing may be kept")
        cache.listening(true)
        let early = try #require(cache.begin())
        cache.forget()  // a token changed while the lookup ran
        cache.keep("s1", id: 1, principal: self.who, expiresIn: nil, since: early)
        #expect(cache.principal(for: "s1") == nil, "a lookup that began before a change would keep what the change undid")

        cache.keep("s1", id: 1, principal: self.who, expiresIn: nil, since: try #require(cache.begin()))
        cache.keep("s3", id: 3, principal: self.who, expiresIn: .milliseconds(50), since: try #require(cache.begin()))
        #expect(cache.principal(for: "s1")?.principal == self.who)
        #expect(cache.principal(for: "s2") == nil)
        try await Task.sleep(for: .milliseconds(100))
        #expect(cache.principal(for: "s3") == nil, "never past the token's own expiry")
        #expect(cache.principal(for: "s1") != nil, "no expiry: kept for its lifetime")

        let brief = TokenCache(lifetime: .milliseconds(50))
        brief.listening(true)
        brief.keep("s1", id: 1, principal: self.who, expiresIn: nil, since: try #require(brief.begin()))
        try await Task.sleep(for: .milliseconds(100))
        #expect(brief.principal(for: "s1") == nil, "past its lifetime the database is asked again")

        cache.keep("s4", id: 4, principal: self.who, expiresIn: nil, since: try #require(cache.begin()))
        cache.listening(false)
        #expect(cache.principal(for: "s4") == nil, "the listening connection lost: notices may be missed, so nothing kept is used")
        cache.listening(true)
        #expect(cache.principal(for: "s4") == nil, "and what was kept before is gone")
    }

    @Test("a revoked token stops on every allotd as its revocation's notice arrives; recording a token's use notifies nothing", databaseTests)
    func revocation() async throws {
        try await TestDatabase.with { db in
            let cache = TokenCache()
            let listener = Task { try await db.listen(TokenCache.channel, listening: { cache.listening(true) }, received: { cache.forget() }) }
            defer { listener.cancel() }
            for _ in 0..<100 where cache.begin() == nil { try await Task.sleep(for: .milliseconds(50)) }
            #expect(cache.begin() != nil, "the listener took effect")

            let plain = TokenStore(database: db)
            let cached = TokenStore(database: db, cache: cache)
            let op = try #require(try await plain.authenticate(try await plain.bootstrap()))
            _ = try await StoreFixture(db, nodes: [])
            let made = try await plain.create(name: "ana", role: .member, org: "lab", actor: op)
            #expect(try await cached.authenticate(made.token)?.name == "ana")
            #expect(cache.principal(for: made.token) != nil, "kept after the lookup")
            // The lookup recorded the token's first use (last_used_at): that is no change to the token.
            try await Task.sleep(for: .milliseconds(500))
            #expect(cache.principal(for: made.token) != nil, "recording a use forgot what was kept")
            #expect(try await cached.authenticate(made.token + "x") == nil, "an unknown secret is asked of the database, and refused")

            _ = try await plain.revoke(made.id, scope: .all, actor: op)
            var stopped = false
            for _ in 0..<100 {
                if try await cached.authenticate(made.token) == nil {
                    stopped = true
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(stopped, "a revoked token still authenticated 2 s after its revocation committed")
            #expect(cache.principal(for: made.token) == nil)

            // Any other change to a token (here its expiry, by hand) is a change too.
            let other = try await plain.create(name: "bo", role: .member, org: "lab", actor: op)
            _ = try await cached.authenticate(other.token)
            #expect(cache.principal(for: other.token) != nil)
            try await db.query("UPDATE tokens SET expires_at = now() - interval '1 second' WHERE id = \(other.id)")
            for _ in 0..<100 where cache.principal(for: other.token) != nil { try await Task.sleep(for: .milliseconds(20)) }
            #expect(try await cached.authenticate(other.token) == nil, "an expired token authenticated")
        }
    }
}
