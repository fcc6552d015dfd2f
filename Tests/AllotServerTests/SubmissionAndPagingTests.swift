import AllotCore
import AllotDatabaseTesting
import AllotFormats
import AllotHTTPClient
import AllotServer
import AllotStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOFoundationCompat
import PostgresNIO
import Testing

@Suite("Submissions answered after their batch commits; the job list in pages", databaseTests)
struct SubmissionAndPagingTests {
    static func body<T: Decodable>(_ response: TestResponse, as: T.Type = T.self) throws -> T {
        try WireJSON.decoder.decode(T.self, from: Data(buffer: response.body))
    }

    @Test(
        "64 submissions from 8 clients at once over live HTTP: each a 201 with its own job, stored, audited once, the chain intact; a bad one among them a 400"
    )
    func concurrentSubmissions() async throws {
        try await TestDatabase.with { db in
            let s = try await APITests.setUp(db)
            try await s.app.test(.live) { client in
                // AsyncHTTPClient (a pool of connections), so the requests really are in flight together.
                let api = APIClient(baseURL: "http://127.0.0.1:\(try #require(client.port))", token: s.memberToken, timeout: .seconds(60))
                // Eight clients of eight submissions each: as many in flight as the client's pool has connections, so
                // none waits for one (a loaded machine made such waits time out).
                let answers = try await withThrowingTaskGroup(of: [(Int, Result<JobView, APIClient.Failure>)].self) { group in
                    for client in 0..<8 {
                        group.addTask {
                            var answers: [(Int, Result<JobView, APIClient.Failure>)] = []
                            for i in stride(from: client, to: 64, by: 8) {
                                // Every eighth asks for more GPUs than any node has: refused on its own.
                                let gpus = i % 8 == 7 ? 9 : 1
                                let spec = try JobSpecParser.parse("pool: h200\nname: c\(i)\ngpusPerNode: \(gpus)\ncommand: 'true'\n")
                                do {
                                    answers.append((i, .success(try await api.post("/v1/jobs", json: spec))))
                                } catch let failure as APIClient.Failure {
                                    answers.append((i, .failure(failure)))
                                }
                            }
                            return answers
                        }
                    }
                    return try await group.reduce(into: []) { $0 += $1 }
                }
                var ids: [Int64] = []
                for (i, answer) in answers {
                    switch answer {
                    case .success(let job):
                        #expect(i % 8 != 7, "submission \(i) asks for 9 GPUs per node")
                        #expect(job.name == "c\(i)" && job.state == .queued && job.org == "lab")
                        ids.append(job.id)
                    case .failure(let failure):
                        guard case .api(400, let body) = failure else {
                            Issue.record("submission \(i): \(failure)")
                            continue
                        }
                        #expect(i % 8 == 7 && body.error.field == "gpusPerNode", "submission \(i): \(failure)")
                    }
                }
                #expect(Set(ids).count == 56)
                let stored = try await db.query("SELECT id FROM jobs").decode(Int64.self).reduce(into: Set<Int64>()) { $0.insert($1) }
                #expect(stored == Set(ids))
                let records = try await AuditStore(database: db).list(since: nil).filter { $0.action == "job.submit" }
                let audited = records.map(\.target)
                #expect(audited.count == 56 && Set(audited) == Set(ids.map { "job/\($0)" }))
                // A batch's records share its one clock reading: fewer readings than records means they were grouped.
                #expect(Set(records.map(\.at)).count < records.count, "no two submissions shared a commit")
                let verified = try await AuditStore(database: db).verify()
                #expect(verified.intact, "\(verified.problems)")
            }
        }
    }

    @Test("GET /v1/jobs in pages: every job once, newest first, a next link on full pages only; the same for ended jobs")
    func paging() async throws {
        try await TestDatabase.with { db in
            let s = try await APITests.setUp(db)
            let auth: HTTPFields = [.authorization: "Bearer \(s.memberToken)"]
            try await s.app.test(.router) { client in
                var submitted: [Int64] = []
                for i in 0..<25 {
                    try await client.execute(
                        uri: "/v1/jobs", method: .post, headers: auth,
                        body: ByteBuffer(string: "pool: h200\nname: p\(i)\nhold: true\ncommand: 'true'\n")
                    ) { submitted.append(try Self.body($0, as: JobView.self).id) }
                }
                // Cancel some, in an order of their own, so the ended list's order differs from the ids'.
                let cancelled = [submitted[3], submitted[20], submitted[7], submitted[11], submitted[0]]
                for id in cancelled {
                    try await client.execute(uri: "/v1/jobs/\(id)/cancel", method: .post, headers: auth) { #expect($0.status == .ok) }
                }
                func walk(_ first: String) async throws -> (ids: [Int64], pages: [Int]) {
                    var (ids, pages, next) = ([Int64](), [Int](), Optional(first))
                    while let uri = next {
                        next = nil
                        try await client.execute(uri: uri, method: .get, headers: auth) { response in
                            #expect(response.status == .ok)
                            let page = try Self.body(response, as: [JobView].self)
                            ids += page.map(\.id)
                            pages.append(page.count)
                            if let link = response.headers[HTTPField.Name("Link")!] {
                                #expect(link.hasSuffix(">; rel=\"next\"") && link.hasPrefix("</v1/jobs?"))
                                next = String(link.dropFirst().prefix { $0 != ">" })
                            }
                        }
                        #expect(pages.count < 20, "the pages must end")
                    }
                    return (ids, pages)
                }
                let all = try await walk("/v1/jobs?limit=10")
                #expect(all.ids == submitted.reversed())
                #expect(all.pages == [10, 10, 5])
                // Exactly full: one more request finds the end with no link.
                let exact = try await walk("/v1/jobs?limit=5")
                #expect(exact.ids == submitted.reversed() && exact.pages == [5, 5, 5, 5, 5, 0])
                // Ended jobs, most recently ended first, through pages of 2, the filter kept in the link.
                let ended = try await walk("/v1/jobs?ended=true&limit=2")
                #expect(ended.ids == cancelled.reversed(), "\(ended.ids) vs \(cancelled)")
                #expect(ended.pages == [2, 2, 1])
                // The state filter is kept in the link too.
                let queued = try await walk("/v1/jobs?state=queued&limit=7")
                #expect(queued.ids == submitted.reversed().filter { !cancelled.contains($0) })
                try await client.execute(uri: "/v1/jobs?before=0", method: .get, headers: auth) { #expect($0.status == .badRequest) }
                try await client.execute(uri: "/v1/jobs?before=x", method: .get, headers: auth) { #expect($0.status == .badRequest) }
            }
        }
    }
}
