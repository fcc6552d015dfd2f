import AllotCore
import AllotDatabaseTesting
import AllotFormats
import AllotServer
import AllotTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOFoundationCompat
import Testing

/// What a hostile or careless caller sends: every answer a clear 4xx naming what is wrong, small, and never a 5xx.
@Suite("Hostile input: clear 4xx, capped answers, never a 5xx", databaseTests)
struct HostileInputTests {
    static let smallAnswer = 8 << 10

    @Test("a body over a route's limit is a 413 naming the limit, over real HTTP")
    func bodyLimits() async throws {
        try await TestDatabase.with { db in
            let w = try await World.make(db)
            try await w.app.test(.live) { client in
                let big = ByteBuffer(repeating: UInt8(ascii: "a"), count: 10 << 20)
                for (uri, caller) in [("/v1/jobs", Caller.member), ("/v1/policy", .operator), ("/v1/nodes", .operator), ("/login", .none)] {
                    try await client.execute(uri: uri, method: .post, headers: w.headers(caller), body: big) { response in
                        #expect(response.status == .contentTooLarge, "\(uri): \(response.status)")
                        let error = try JSONDecoder().decode(APIErrorBody.self, from: Data(buffer: response.body)).error
                        #expect(error.code == "too_large" && error.message.contains("bytes"), "\(uri): \(error)")
                    }
                }
            }
        }
    }

    @Test("YAML that expands without end (aliases of aliases), 5000 unknown keys, and a megabyte key: small 400s")
    func yamlBombs() async throws {
        var laughs = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].enumerated() {
            let previous = i == 0 ? "a" : ["b", "c", "d", "e", "f", "g", "h"][i - 1]
            laughs += "\(name): &\(name) [" + Array(repeating: "*\(previous)", count: 9).joined(separator: ",") + "]\n"
        }
        let bomb = laughs
        let manyKeys = "pool: h200\ncommand: x\n" + (0..<5000).map { "unknown\($0): 1" }.joined(separator: "\n")
        // An explicit key, which YAML lets be as long as it likes (a plain one stops at 1024 characters).
        let hugeKey = "pool: h200\ncommand: x\n? " + String(repeating: "k", count: 1 << 20) + "\n: 1\n"
        try await TestDatabase.with { db in
            let w = try await World.make(db)
            try await w.app.test(.router) { client in
                for (name, body, says) in [
                    ("billion laughs", "pool: h200\ncommand: x\n" + bomb, "aliases"), ("5000 unknown keys", manyKeys, "more)"),
                    ("a 1 MiB key", hugeKey, "more characters"),
                ] {
                    try await client.execute(uri: "/v1/jobs", method: .post, headers: w.headers(.member), body: ByteBuffer(string: body)) {
                        response in
                        #expect(response.status == .badRequest, "\(name): \(response.status)")
                        #expect(response.body.readableBytes < Self.smallAnswer, "\(name): a \(response.body.readableBytes)-byte answer")
                        #expect(String(buffer: response.body).contains(says), "\(name): \(String(buffer: response.body).prefix(300))")
                    }
                }
            }
        }
        // The same cap where the CLI reads files (policy validate, simulate): the first issues and a count.
        let errors = FormatErrors((0..<5000).map { (i: Int) in FormatIssue(line: i, field: "f\(i)", message: "unknown field") })
        #expect(errors.description.split(separator: "\n").count == FormatErrors.shown + 1)
        #expect(errors.description.hasSuffix("(and \(5000 - FormatErrors.shown) more)"))
        #expect(throws: FormatErrors.self) { try JobSpecParser.parse("pool: h200\ncommand: x\n" + laughs) }
    }

    @Test(
        "every query parameter is checked: a wrong value, an unknown name or a repeat is a 400 naming it",
        arguments: [
            ("/v1/jobs/1/log?offset=abc", "offset"), ("/v1/jobs/1/log?offset=-1", "offset"), ("/v1/jobs/1/log?attempt=0", "attempt"),
            ("/v1/jobs/1/log?attempt=999999999999", "attempt"), ("/v1/jobs/1/log?rank=x", "rank"), ("/v1/jobs?state=sleeping", "state"),
            ("/v1/jobs?state=queued&state=running", "state"), ("/v1/jobs?limit=0", "limit"), ("/v1/jobs?stat=queued", "stat"),
            ("/v1/maintenance?all=yes", "all"), ("/v1/policy?dryRun=1", "dryRun"), ("/v1/audit?since=yesterday", "since"),
            ("/v1/quota?period=2026-13", "period"), ("/v1/quota?org=", "org"), ("/v1/nodes?x=1", "x"), ("/v1/tokens?all=maybe", "all"),
            ("/v1/jobs/abc", "id"), ("/v1/jobs/-4", "id"), ("/v1/nodes/n1/gpus/x/restore", "index"),
        ])
    func queryParameters(uri: String, field: String) async throws {
        try await TestDatabase.with { db in
            let w = try await World.make(db)
            let endpoint = Endpoint.allCases.first { e in
                let path = uri.split(separator: "?")[0].split(separator: "/")
                let pattern = e.path.split(separator: "/")
                return path.count == pattern.count && zip(path, pattern).allSatisfy { $1.hasPrefix(":") || $0 == $1 }
                    && (e.method == .get || uri.contains("policy") || uri.contains("restore"))
            }
            let method = try #require(endpoint).method
            try await w.app.test(.router) { client in
                try await client.execute(uri: uri, method: method, headers: w.headers(.operator), body: ByteBuffer(string: "{}")) { response in
                    #expect(response.status == .badRequest, "\(uri): \(response.status) \(String(buffer: response.body))")
                    let error = try JSONDecoder().decode(APIErrorBody.self, from: Data(buffer: response.body)).error
                    #expect(error.field == field, "\(uri): \(error)")
                }
            }
        }
    }

    @Test("random bytes, truncated JSON and wrong types to every route that reads a body: never a 5xx (seeded)")
    func garbage() async throws {
        let seeds = (0..<UInt64(ProcessInfo.processInfo.environment["ALLOT_PROPERTY_RUNS"].flatMap(Int.init).map { $0 / 20 } ?? 300)).map {
            $0 &* 7919 &+ 3
        }
        try await TestDatabase.with { db in
            let w = try await World.make(db)
            let doc = try OpenAPIDocument(path: OpenAPIDocument.path)
            let routes: [(Endpoint, String)] = [
                (.submitJob, "/v1/jobs"), (.applyPolicy, "/v1/policy?dryRun=true"), (.addNode, "/v1/nodes"), (.drain, "/v1/drains"),
                (.addMaintenance, "/v1/maintenance"), (.createToken, "/v1/tokens"), (.heartbeat, "/v1/agents/heartbeat"),
                (.register, "/v1/agents/register"), (.verifyAuditAgainst, "/v1/audit/verify"), (.enrolNode, "/v1/nodes/n2/enrol"),
                (.restoreGPU, "/v1/nodes/n1/gpus/0/restore"), (.login, "/login"),
            ]
            let samples = [
                #"{"name": "n9", "pool": "h200", "block": 7}"#, #"{"nodes": "n1", "reason": null}"#,
                #"{"nodes": [], "reason": "x", "deadlineSeconds": -5}"#,
                #"{"name": "", "role": "god", "org": "lab"}"#, #"{"checkpoints": [1, 2]}"#, #"{"startsAt": "tomorrow"}"#, "[]", "null", "\"x\"",
                #"{"node": "n1", "agentURL": "file:///etc/passwd", "cpuMilli": -1, "memoryMiB": 1e40, "gpus": [], "ranks": []}"#,
                "pool: h200\ncommand: x\nnodes: 99999999999999999999", "pool: [\ncommand", "\u{0}\u{1}\u{2}", "---\n--- \n...",
            ]
            try await w.app.test(.router) { client in
                for seed in seeds {
                    var rng = SeededRandom(seed: seed)
                    let (endpoint, uri) = routes[Int(rng.next() % UInt64(routes.count))]
                    let caller: Caller = endpoint == .heartbeat || endpoint == .register ? .agent : endpoint == .submitJob ? .member : .operator
                    var bytes = Array(samples[Int(rng.next() % UInt64(samples.count))].utf8)
                    // Mutate: cut it, flip bytes, or repeat it.
                    switch rng.next() % 4 {
                    case 0: bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1))))
                    case 1:
                        for _ in 0..<3 where !bytes.isEmpty { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                    case 2: bytes = Array(repeating: bytes, count: Int(rng.next() % 50) + 1).flatMap { $0 }
                    default: break
                    }
                    try await client.execute(uri: uri, method: endpoint.method, headers: w.headers(caller), body: ByteBuffer(bytes: bytes)) {
                        response in
                        #expect(
                            response.status.code < 500,
                            "seed \(seed) (replay: ALLOT_PROPERTY_SEED=\(seed)): \(uri) answered \(response.status) to \(String(decoding: bytes.prefix(200), as: UTF8.self))"
                        )
                        #expect(response.body.readableBytes < Self.smallAnswer || response.status.code < 300, "seed \(seed): a large error answer")
                        let problems = doc.problems(
                            endpoint, status: Int(response.status.code), contentType: response.headers[.contentType],
                            body: Data(buffer: response.body))
                        #expect(problems.isEmpty, "seed \(seed): \(problems.prefix(3))")
                    }
                }
            }
        }
    }
}
