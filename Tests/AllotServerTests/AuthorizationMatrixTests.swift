import AllotCore
import AllotDatabaseTesting
import AllotServer
import AllotStore
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOFoundationCompat
import Testing

/// Every route × every kind of caller, against the real router and database: the status each gets, written out
/// here by hand (not derived from `Access`, which it checks), and no body that carries another organisation's
/// job names, commands, owners, tokens or quota rows; every answer checked against openapi.yaml's schemas.
@Suite("Authorization matrix: every route × every caller", databaseTests)
struct AuthorizationMatrixTests {
    /// A request to make: its path (with query), and its body.
    struct Call {
        var uri: String
        var body: String? = nil
        var headers: HTTPFields = [:]
    }

    /// How to call each route so that a caller who may gets its success, and the statuses expected, in the
    /// order of `Caller.allCases`: none, member, otherMember, orgAdmin, otherOrgAdmin, operator, auditor, agent,
    /// otherAgent, scraper. "member" and "orgAdmin" are of lab, whose data the calls name; "agent" is n1's.
    static func plan(_ endpoint: Endpoint, _ w: World) async throws -> (Call, [Int]) {
        let readers = [401, 200, 200, 200, 200, 200, 200, 403, 403, 403]
        let labData = [401, 200, 404, 200, 404, 200, 200, 403, 403, 403]
        func operatorOnly(_ success: Int) -> [Int] { [401, 403, 403, 403, 403, success, 403, 403, 403, 403] }
        let auditors = [401, 403, 403, 403, 403, 200, 200, 403, 403, 403]
        let agentOfN1 = [401, 403, 403, 403, 403, 403, 403, 200, 403, 403]
        let json = String(decoding: try JSONEncoder().encode(World.report("n1")), as: UTF8.self)
        switch endpoint {
        case .healthz: return (Call(uri: "/healthz"), Array(repeating: 200, count: 10))
        case .readyz: return (Call(uri: "/readyz"), Array(repeating: 200, count: 10))
        case .metrics: return (Call(uri: "/metrics"), [401, 403, 403, 403, 403, 200, 200, 403, 403, 200])
        case .page: return (Call(uri: "/"), [200, 200, 200, 200, 200, 200, 200, 403, 403, 403])
        case .login:
            return (
                Call(uri: "/login", body: "token=\(w.tokens[.member]!)", headers: [.contentType: "application/x-www-form-urlencoded"]),
                Array(repeating: 303, count: 10)
            )
        case .logout: return (Call(uri: "/logout"), Array(repeating: 303, count: 10))
        case .quota: return (Call(uri: "/v1/quota?org=lab"), [401, 200, 403, 200, 403, 200, 200, 403, 403, 403])
        case .report: return (Call(uri: "/v1/report?org=lab&by=user"), [401, 200, 403, 200, 403, 200, 200, 403, 403, 403])
        case .adjustUsage:
            return (
                Call(
                    uri: "/v1/adjustments",
                    body:
                        #"{"org": "lab", "pool": "h200", "gpuSeconds": -3600, "appliesAt": "2030-01-15T00:00:00Z", "reason": "node n1 misreported"}"#),
                operatorOnly(201)
            )
        case .submitJob:
            return (
                Call(uri: "/v1/jobs", body: "name: labsecret-new\norg: lab\npool: h200\ngpusPerNode: 1\ncommand: echo labsecret-command"),
                [401, 201, 403, 201, 403, 201, 403, 403, 403, 403]
            )
        case .listJobs: return (Call(uri: "/v1/jobs"), readers)
        case .showJob: return (Call(uri: "/v1/jobs/\(w.labJob)"), labData)
        case .cancelJob: return (Call(uri: "/v1/jobs/\(try await w.freshLabJob())/cancel"), [401, 200, 404, 200, 404, 200, 403, 403, 403, 403])
        case .holdJob: return (Call(uri: "/v1/jobs/\(try await w.freshLabJob())/hold"), [401, 200, 404, 200, 404, 200, 403, 403, 403, 403])
        case .releaseJob:
            return (Call(uri: "/v1/jobs/\(try await w.freshLabJob())/release"), [401, 200, 404, 200, 404, 200, 403, 403, 403, 403])
        case .requeueJob:
            // Queued, not running: those who may are told it cannot be requeued now.
            return (Call(uri: "/v1/jobs/\(try await w.freshLabJob())/requeue"), [401, 409, 404, 409, 404, 409, 403, 403, 403, 403])
        case .updateJob:
            return (
                Call(uri: "/v1/jobs/\(try await w.freshLabJob())", body: #"{"name": "renamed labsecret"}"#),
                [401, 200, 404, 200, 404, 200, 403, 403, 403, 403]
            )
        case .jobLog:
            // Not started, so those who may read it are told so (404 too, but a different one: see `notStarted`).
            return (Call(uri: "/v1/jobs/\(w.labJob)/log?rank=0&offset=0"), [401, 404, 404, 404, 404, 404, 404, 403, 403, 403])
        case .listNodes: return (Call(uri: "/v1/nodes"), readers)
        case .showNode: return (Call(uri: "/v1/nodes/n1"), readers)
        case .showDrain:
            let node = try await w.freshNode()
            let id = try await NodeLifecycleStore(database: w.db).drain([node], reason: "firmware", deadlineSeconds: nil, by: World.op)
            return (Call(uri: "/v1/drains/\(id)"), readers)
        case .listMaintenance: return (Call(uri: "/v1/maintenance?all=true"), readers)
        case .addNode:
            return (Call(uri: "/v1/nodes", body: #"{"name": "m\#(UUID().uuidString.prefix(8).lowercased())", "pool": "h200"}"#), operatorOnly(201))
        case .enrolNode:
            return (Call(uri: "/v1/nodes/\(try await w.freshNode())/enrol", body: #"{"agentURL": "http://127.0.0.1:9"}"#), operatorOnly(200))
        case .cordon: return (Call(uri: "/v1/nodes/\(try await w.freshNode())/cordon"), operatorOnly(200))
        case .uncordon:
            let node = try await w.freshNode()
            try await NodeLifecycleStore(database: w.db).cordon(node, by: World.op)
            return (Call(uri: "/v1/nodes/\(node)/uncordon"), operatorOnly(200))
        case .undrain:
            let node = try await w.freshNode()
            _ = try await NodeLifecycleStore(database: w.db).drain([node], reason: "firmware", deadlineSeconds: nil, by: World.op)
            return (Call(uri: "/v1/nodes/\(node)/undrain"), operatorOnly(200))
        case .declareLost: return (Call(uri: "/v1/nodes/\(try await w.freshNode())/lost"), operatorOnly(200))
        case .restoreGPU: return (Call(uri: "/v1/nodes/n1/gpus/0/restore", body: #"{"reason": "reseated"}"#), operatorOnly(200))
        case .drain:
            return (Call(uri: "/v1/drains", body: #"{"nodes": ["\#(try await w.freshNode())"], "reason": "firmware"}"#), operatorOnly(201))
        case .addMaintenance:
            return (
                Call(
                    uri: "/v1/maintenance",
                    body: #"{"nodes": ["n2"], "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-02T00:00:00Z", "reason": "power"}"#),
                operatorOnly(201)
            )
        case .removeMaintenance:
            let window = try await NodeLifecycleStore(database: w.db).addMaintenance(
                MaintenanceRequest(
                    nodes: ["n2"], startsAt: Date(timeIntervalSinceNow: 86400), endsAt: Date(timeIntervalSinceNow: 2 * 86400), reason: "power"),
                by: World.op)
            return (Call(uri: "/v1/maintenance/\(window.id)"), operatorOnly(200))
        case .applyPolicy:
            let body = String(decoding: try JSONEncoder().encode(World.policy), as: UTF8.self)
            return (Call(uri: "/v1/policy?dryRun=true", body: body), operatorOnly(200))
        case .register: return (Call(uri: "/v1/agents/register", body: json), agentOfN1)
        case .heartbeat: return (Call(uri: "/v1/agents/heartbeat", body: json), agentOfN1)
        case .createToken:
            return (
                Call(
                    uri: "/v1/tokens", body: #"{"name": "c\#(UUID().uuidString.prefix(8).lowercased())-labsecret", "role": "member", "org": "lab"}"#),
                [401, 403, 403, 201, 403, 201, 403, 403, 403, 403]
            )
        case .listTokens: return (Call(uri: "/v1/tokens"), [401, 403, 403, 200, 200, 200, 403, 403, 403, 403])
        case .revokeToken: return (Call(uri: "/v1/tokens/\(try await w.freshLabToken())/revoke"), [401, 403, 403, 200, 404, 200, 403, 403, 403, 403])
        case .audit: return (Call(uri: "/v1/audit?limit=50"), auditors)
        case .verifyAudit: return (Call(uri: "/v1/audit/verify"), auditors)
        case .verifyAuditAgainst: return (Call(uri: "/v1/audit/verify", body: #"{"checkpoints": []}"#), auditors)
        }
    }

    @Test("each route answers each caller as the table says, and never with another organisation's data")
    func matrix() async throws {
        try await TestDatabase.with { db in
            let w = try await World.make(db)
            let doc = try OpenAPIDocument(path: OpenAPIDocument.path)
            let cases = try await w.app.test(.router) { client in
                var cases = 0
                for endpoint in Endpoint.allCases {
                    for (i, caller) in Caller.allCases.enumerated() {
                        // Each call gets its own fresh target (a job to cancel, a node to cordon), so all meet the same state.
                        let (call, statuses) = try await Self.plan(endpoint, w)
                        var headers = w.headers(caller)
                        headers.append(contentsOf: call.headers)
                        let path = call.uri.split(separator: "?").first.map(String.init) ?? call.uri
                        cases += try await client.execute(
                            uri: call.uri, method: endpoint.method, headers: headers, body: call.body.map { ByteBuffer(string: $0) }
                        ) { response in
                            let body = String(buffer: response.body)
                            #expect(
                                Int(response.status.code) == statuses[i],
                                "\(endpoint.rawValue) (\(path)) as \(caller): \(response.status.code), expected \(statuses[i]): \(body.prefix(300))")
                            if let foreign = caller.foreignMarker {
                                #expect(!body.contains(foreign), "\(endpoint.rawValue) as \(caller) shows \(foreign): \(body.prefix(300))")
                                let otherOrg = foreign == "unisecret" ? "uni" : "lab"
                                #expect(
                                    !body.contains("\"\(otherOrg)\"") && !body.contains(">\(otherOrg)<"),
                                    "\(endpoint.rawValue) as \(caller) names \(otherOrg)")
                            }
                            if endpoint == .jobLog, statuses[i] == 404, [.member, .orgAdmin, .operator, .auditor].contains(caller) {
                                #expect(body.contains("not started"), "\(caller) should be told the job has not started: \(body)")
                            }
                            // Every answer, success or refusal, is one the OpenAPI document describes.
                            let problems = doc.problems(
                                endpoint, status: Int(response.status.code), contentType: response.headers[.contentType],
                                body: Data(buffer: response.body))
                            #expect(problems.isEmpty, "as \(caller): \(problems.prefix(5))")
                            return 1
                        }
                    }
                }
                return cases
            }
            #expect(cases == Endpoint.allCases.count * Caller.allCases.count)
            print("authorization matrix: \(Endpoint.allCases.count) routes × \(Caller.allCases.count) callers = \(cases) cases")
        }
    }
}
