import AllotDatabaseTesting
import AllotStore
import Foundation
import Logging
import PostgresNIO
import Testing

@Suite("Database URLs: libpq's host lists and target_session_attrs")
struct DatabaseURLTests {
    @Test("several servers, IPv6 in brackets, default ports; read-write kept; the password never in the description")
    func hostList() throws {
        let url = try DatabaseURL("postgres://app:s%40cret@db1:5433,[::1]:6543,db3/allot?target_session_attrs=read-write&sslmode=require")
        #expect(url.servers.map(\.host) == ["db1", "::1", "db3"])
        #expect(url.servers.map(\.port) == [5433, 6543, 5432])
        #expect(url.user == "app" && url.password == "s@cret" && url.database == "allot" && url.readWrite && url.requireTLS)
        #expect(url.description == "postgres://app@db1:5433,[::1]:6543,db3:5432/allot")
        let again = try DatabaseURL(url.urlString)
        #expect(again.servers == url.servers && again.readWrite && again.password == "s@cret")
        let one = try DatabaseURL("postgres://app@127.0.0.1:5432/allot")
        #expect(one.servers.count == 1 && !one.readWrite && !one.preferTLS)
    }

    @Test("a bad server in the list or a target allotd cannot write to is refused, naming ALLOT_DATABASE_URL")
    func refusals() {
        for text in [
            "postgres://app@db1:5432,db2:notaport/allot", "postgres://app@db1:5432,,db2/allot", "postgres://app@db1,db2:70000/allot",
            "postgres://app@db1/allot?target_session_attrs=read-only", "postgres://app@db1,db2/allot?target_session_attrs=standby",
            // Junk after a bracketed address, a bare IPv6 address, a stray bracket.
            "postgres://app@db1,[::1]x:5432/allot", "postgres://app@db1,::1:5432/allot", "postgres://app@db1,db]2/allot",
        ] {
            let error = #expect(throws: StoreError.self, "\(text)") { _ = try DatabaseURL(text) }
            guard case .invalid(let field, let message) = error else {
                Issue.record("\(text): \(String(describing: error))")
                continue
            }
            #expect(field == "ALLOT_DATABASE_URL" && !message.isEmpty && message.count < 200, "\(message)")
        }
    }

    @Test("with a dead server first in the list, operations go to the next one that serves", databaseTests)
    func movesOn() async throws {
        let db = Self.database(try Self.deadServerFirst())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await db.run() }
            defer { group.cancelAll() }
            // The probe finds 127.0.0.1:1 refusing and moves on; the first operation waits for its verdict.
            let started = ContinuousClock.now
            #expect(await db.isReachable())
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }

    @Test("a one-shot command (migrate, bootstrap) with a dead server first in the list uses the next one that serves", databaseTests)
    func oneShotMovesOn() async throws {
        let db = Self.database(try Self.deadServerFirst())
        let answer = try await db.withRunningClient {
            var answer: Int?
            for try await value in try await db.query("SELECT 42").decode(Int.self) { answer = value }
            return answer
        }
        #expect(answer == 42)
    }

    @Test(
        "a server that ends the session in the middle of a large result: the query fails as the database unavailable, allotd lives on, and the next query is answered",
        databaseTests)
    func sessionEndedMidResult() async throws {
        // PostgresNIO 1.33.2's streaming rows trap the process when the server closes the connection while a stream
        // waits for its consumer (seen when a primary stopped mid-load); Allot reads every result whole instead. And a
        // query written to a connection that had just closed was never answered: the last query here hung 1 run in 3.
        let db = Self.database(try DatabaseURL(try #require(TestDatabase.adminURL)))
        try await db.withRunningClient {
            for _ in 0..<3 {
                let tag = "allot-test-\(UUID().uuidString.prefix(8))"
                async let killed: Void = {
                    for _ in 0..<100 {
                        try await Task.sleep(for: .milliseconds(50))
                        // The pool may hand out the connection a previous round ended before it notices: unavailable, once.
                        guard
                            let ended = try? await db.query(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE \("%" + tag + "%") AND pid <> pg_backend_pid()"
                            )
                        else { continue }
                        for try await killed in ended.decode(Bool.self) where killed { return }
                    }
                }()
                let error = await #expect(throws: (any Error).self) {
                    try await db.query(
                        PostgresQuery(unsafeSQL: "SELECT g, repeat('x', 100) FROM generate_series(1, 2000000) g, pg_sleep(0.3) /* \(tag) */"))
                }
                try await killed
                if let error, case .unreachable? = error as? StoreError {} else { Issue.record("\(String(describing: error))") }
            }
            var one: Int?
            for _ in 0..<3 where one == nil {
                guard let rows = try? await db.query("SELECT 1") else { continue }
                for try await value in rows.decode(Int.self) { one = value }
            }
            #expect(one == 1)
        }
    }

    /// The test server's URL behind a server that refuses (127.0.0.1:1), read-write.
    static func deadServerFirst() throws -> DatabaseURL {
        let admin = try DatabaseURL(try #require(TestDatabase.adminURL))
        let auth = admin.password.map { "\(admin.user):\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0)" } ?? admin.user
        return try DatabaseURL(
            "postgres://\(auth)@127.0.0.1:1,\(admin.host):\(admin.port)/\(admin.database)?target_session_attrs=read-write")
    }

    /// A database on `url` whose logger stays quiet.
    static func database(_ url: DatabaseURL) -> Database {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return Database(url: url, logger: logger, auditKey: TestDatabase.auditKey)
    }

    static func raising(_ state: String) -> PostgresQuery {
        PostgresQuery(unsafeSQL: "DO $$ BEGIN RAISE EXCEPTION 'raised by a test' USING ERRCODE = '\(state)'; END $$")
    }

    @Test(
        "trouble that passes is a 503: contention (serialization, deadlock, a lock not granted) says so, an idle session ended or a query cancelled is the database unavailable; an error of another kind keeps its SQLSTATE",
        databaseTests)
    func transientErrors() async throws {
        let db = Self.database(try DatabaseURL(try #require(TestDatabase.adminURL)))
        try await db.withRunningClient {
            for state in ["40001", "40P01", "55P03"] {
                let error = await #expect(throws: StoreError.self, "\(state)") { try await db.query(Self.raising(state)) }
                guard case .busy? = error else {
                    Issue.record("\(state): \(String(describing: error))")
                    continue
                }
                #expect(error?.description.contains("nothing was changed: try again") == true)
            }
            for state in ["25P02", "25P03", "53300", "57014"] {
                let error = await #expect(throws: StoreError.self, "\(state)") {
                    try await db.query(Self.raising(state))
                }
                guard case .unreachable? = error else {
                    Issue.record("\(state): \(String(describing: error))")
                    continue
                }
            }
            let other = await #expect(throws: (any Error).self) { try await db.query(Self.raising("XX001")) }
            #expect(other.flatMap(StoreError.sqlState(of:)) == "XX001")
        }
    }
}
