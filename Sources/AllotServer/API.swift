import AllotCore
import AllotFormats
import AllotHTTP
import AllotStore
import Foundation
import Hummingbird
import Logging
import PostgresNIO

/// The HTTP API of allotd (SPEC §5), under `/v1`, with bearer tokens.
public struct API: Sendable {
    public let database: Database
    public let wake: Wakeup
    public let metrics: Metrics
    public let logger: Logger

    public init(database: Database, wake: Wakeup, metrics: Metrics = Metrics(), logger: Logger) {
        self.database = database
        self.wake = wake
        self.metrics = metrics
        self.logger = logger
    }

    var jobs: JobStore { JobStore(database: self.database) }
    var nodes: NodeStore { NodeStore(database: self.database) }

    public func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/healthz") { _, _ in JSON.text("ok\n") }
        router.get("/readyz") { _, _ in
            do {
                try await self.database.query("SELECT 1 FROM leader LIMIT 1")
                return JSON.text("ready\n")
            } catch {
                return JSON.text("database unreachable: \(error)\n", status: .serviceUnavailable)
            }
        }
        router.get("/metrics") { _, _ in
            try await self.handle {
                JSON.text(try await self.metrics.render(database: self.database), contentType: "text/plain; version=0.0.4; charset=utf-8")
            }
        }
        router.get("/") { _, _ in
            try await self.handle { JSON.text(try await Dashboard(database: self.database).html(), contentType: "text/html; charset=utf-8") }
        }
        let v1 = router.group("/v1")
        v1.get("/quota") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                let asked = request.uri.queryParameters.get("org")
                if !principal.seesAllOrganizations, let asked, asked != principal.org {
                    throw APIError.forbidden("members see their own organization's quota only")
                }
                let org = principal.seesAllOrganizations ? asked : principal.org
                return JSON.response(
                    try await QuotaStore(database: self.database).rows(
                        org: org, pool: request.uri.queryParameters.get("pool"), period: request.uri.queryParameters.get("period")))
            }
        }

        // Jobs.
        v1.post("/jobs") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                let text = String(buffer: try await request.body.collect(upTo: 2 << 20))
                let spec: JobSpec
                do {
                    spec = try JobSpecParser.parse(text)
                } catch {
                    throw Self.apiError(error)
                }
                let id = try await self.jobs.submit(spec, by: principal) { nodes in
                    Placer.neverFitsReason(
                        PendingJob(id: 0, pool: spec.pool, gpuModels: spec.gpuModel, nodes: spec.nodes, perNode: spec.nodeRequest), nodes: nodes)
                }
                self.wake.signal()
                return JSON.response(try await self.jobs.show(id, visibleTo: principal), status: .created)
            }
        }
        v1.get("/jobs") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                let state = try request.uri.queryParameters.get("state").map { s in
                    guard let state = JobState(rawValue: s) else {
                        throw APIError.badRequest(
                            "must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", ")), not '\(s)'", field: "state")
                    }
                    return state
                }
                let org = request.uri.queryParameters.get("org")
                return JSON.response(try await self.jobs.list(state: state, org: org, visibleTo: principal))
            }
        }
        v1.get("/jobs/:id") { request, context in
            try await self.handle {
                let principal = try await self.authenticate(request)
                return JSON.response(try await self.jobs.show(try Self.id(context), visibleTo: principal))
            }
        }
        v1.post("/jobs/:id/cancel") { request, context in
            try await self.handle {
                let principal = try await self.authenticate(request)
                let job = try await self.jobs.cancel(try Self.id(context), by: principal)
                self.wake.signal()
                return JSON.response(job)
            }
        }
        v1.get("/jobs/:id/log") { request, context in
            try await self.handle {
                let principal = try await self.authenticate(request)
                return try await self.log(
                    job: try Self.id(context), attempt: request.uri.queryParameters.get("attempt", as: Int.self),
                    rank: request.uri.queryParameters.get("rank", as: Int.self) ?? 0,
                    offset: request.uri.queryParameters.get("offset", as: Int.self) ?? 0, principal: principal)
            }
        }

        // Nodes and agents.
        v1.get("/nodes") { request, _ in
            try await self.handle {
                _ = try await self.authenticate(request)
                return JSON.response(try await self.nodes.list())
            }
        }
        v1.post("/nodes") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                let body = try await JSON.body(AddNodeRequest.self, from: request)
                let token = try await self.nodes.add(name: body.name, pool: body.pool, block: body.block, by: principal)
                return JSON.response(AddNodeResponse(node: body.name, token: token), status: .created)
            }
        }
        let lifecycle = NodeLifecycleStore(database: self.database)
        v1.get("/nodes/:name") { request, context in
            try await self.handle {
                _ = try await self.authenticate(request)
                return JSON.response(try await lifecycle.detail(try Self.name(context)))
            }
        }
        for (action, change) in [
            ("cordon", lifecycle.cordon), ("uncordon", lifecycle.uncordon), ("undrain", lifecycle.undrain), ("lost", lifecycle.declareLost),
        ] as [(String, @Sendable (String, Principal) async throws -> Void)] {
            v1.post(RouterPath(stringLiteral: "/nodes/:name/\(action)")) { request, context in
                try await self.handle {
                    let principal = try await self.authenticate(request)
                    let node = try Self.name(context)
                    try await change(node, principal)
                    self.wake.signal()
                    return JSON.response(try await lifecycle.detail(node))
                }
            }
        }
        v1.post("/nodes/:name/gpus/:index/restore") { request, context in
            try await self.handle {
                let principal = try await self.authenticate(request)
                let node = try Self.name(context)
                guard let index = context.parameters.get("index", as: Int.self) else {
                    throw APIError.badRequest("must be a GPU index", field: "index")
                }
                let body = try await JSON.body([String: String].self, from: request)
                try await lifecycle.restoreGPU(node: node, index: index, reason: body["reason"] ?? "returned to service", by: principal)
                self.wake.signal()
                return JSON.response(try await lifecycle.detail(node))
            }
        }
        v1.post("/drains") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                let body = try await JSON.body(DrainRequest.self, from: request)
                let id = try await lifecycle.drain(body.nodes, reason: body.reason, deadlineSeconds: body.deadlineSeconds, by: principal)
                try await lifecycle.advanceDrains()
                return JSON.response(try await lifecycle.drainView(id), status: .created)
            }
        }
        v1.get("/drains/:id") { request, context in
            try await self.handle {
                _ = try await self.authenticate(request)
                return JSON.response(try await lifecycle.drainView(try Self.id(context)))
            }
        }
        v1.get("/maintenance") { request, _ in
            try await self.handle {
                _ = try await self.authenticate(request)
                return JSON.response(try await lifecycle.listMaintenance(includeEnded: request.uri.queryParameters.get("all") == "true"))
            }
        }
        v1.post("/maintenance") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                let window = try await lifecycle.addMaintenance(try await JSON.body(MaintenanceRequest.self, from: request), by: principal)
                self.wake.signal()
                return JSON.response(window, status: .created)
            }
        }
        v1.delete("/maintenance/:id") { request, context in
            try await self.handle {
                let principal = try await self.authenticate(request)
                try await lifecycle.removeMaintenance(try Self.id(context), by: principal)
                self.wake.signal()
                return JSON.response(["removed": true])
            }
        }
        for path in ["/agents/register", "/agents/heartbeat"] {
            v1.post(RouterPath(stringLiteral: path)) { request, _ in
                try await self.handle {
                    let principal = try await self.authenticate(request)
                    let report = try await JSON.body(AgentReport.self, from: request)
                    let reply = try await self.nodes.report(report, from: principal)
                    if !report.ranks.isEmpty || path.hasSuffix("register") { self.wake.signal() }
                    return JSON.response(reply)
                }
            }
        }

        // Policy, tokens, audit.
        v1.post("/policy") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                let policy = try await JSON.body(Policy.self, from: request)
                let dryRun = request.uri.queryParameters.get("dryRun") == "true"
                let changes = try await PolicyStore(database: self.database).apply(policy, by: principal, dryRun: dryRun)
                return JSON.response(changes)
            }
        }
        v1.post("/tokens") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                guard principal.role == .operator || (principal.role == .orgAdmin) else {
                    throw APIError.forbidden("only operators and org-admins make tokens")
                }
                let body = try await JSON.body(CreateTokenRequest.self, from: request)
                if principal.role == .orgAdmin && (body.org != principal.org || body.role != .member) {
                    throw APIError.forbidden("an org-admin makes member tokens of its own organization only")
                }
                let token = try await TokenStore(database: self.database).create(name: body.name, role: body.role, org: body.org, actor: principal)
                return JSON.response(CreateTokenResponse(name: body.name, token: token), status: .created)
            }
        }
        v1.get("/audit") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                guard principal.seesAllOrganizations else { throw APIError.forbidden("only operators and auditors read the audit log") }
                let since = request.uri.queryParameters.get("since").flatMap { ISO8601DateFormatter().date(from: $0) }
                return JSON.response(try await AuditStore(database: self.database).list(since: since))
            }
        }
        v1.get("/audit/verify") { request, _ in
            try await self.handle {
                let principal = try await self.authenticate(request)
                guard principal.seesAllOrganizations else { throw APIError.forbidden("only operators and auditors verify the audit log") }
                let (checked, broken) = try await AuditStore(database: self.database).verify()
                return JSON.response(AuditVerification(checked: checked, intact: broken == nil, firstBrokenID: broken))
            }
        }
    }

    /// Fetches a rank's output from its agent.
    private func log(job: Int64, attempt: Int?, rank: Int, offset: Int, principal: Principal) async throws -> Response {
        let view = try await self.jobs.show(job, visibleTo: principal)
        guard let chosen = attempt.flatMap({ n in view.attempts.first { $0.number == n } }) ?? view.attempts.last else {
            throw APIError.notFound("job \(job) has not started yet: no log")
        }
        guard let r = chosen.nodes.first(where: { $0.rank == rank }) else { throw APIError.notFound("attempt \(chosen.number) has no rank \(rank)") }
        let rows = try await self.database.query("SELECT agent_url, callback_token FROM nodes WHERE name = \(r.node)")
        guard let (url, token) = try await rows.decode((String?, String?).self).first(where: { _ in true }), let url else {
            throw APIError(.badGateway, code: "agent_unreachable", message: "node \(r.node) has no agent address")
        }
        do {
            let data = try await APIClient(baseURL: url, token: token, timeout: .seconds(5)).send(
                .GET, "/v1/attempts/\(job)/\(chosen.number)/\(rank)/log?offset=\(offset)")
            return JSON.text(String(decoding: data, as: UTF8.self))
        } catch {
            throw APIError(.badGateway, code: "agent_unreachable", message: "cannot read the log from \(r.node): \(error)")
        }
    }

    func authenticate(_ request: Request) async throws -> Principal {
        guard let token = request.bearerToken, let principal = try await TokenStore(database: self.database).authenticate(token) else {
            throw APIError.unauthorized
        }
        return principal
    }

    static func name(_ context: BasicRequestContext) throws -> String {
        guard let name = context.parameters.get("name"), !name.isEmpty else { throw APIError.badRequest("must name a node", field: "name") }
        return name
    }

    static func id(_ context: BasicRequestContext) throws -> Int64 {
        guard let id = context.parameters.get("id", as: Int64.self), id > 0 else { throw APIError.badRequest("must be a job number", field: "id") }
        return id
    }

    /// Runs a handler, turning store and format errors into the API's error shape (never a 500 for bad input).
    func handle(_ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch {
            let api = Self.apiError(error)
            if api.status == .internalServerError { self.logger.error("request failed", metadata: ["error": "\(error)"]) }
            throw api
        }
    }

    static func apiError(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError:
            return e
        case let e as FormatErrors:
            let first = e.issues.first
            let message = e.issues.count == 1 ? (first?.message ?? "invalid") : e.issues.map(\.description).joined(separator: "; ")
            return .badRequest(message, field: first.flatMap { $0.field.isEmpty ? nil : $0.field })
        case let e as StoreError:
            switch e {
            case .notFound(let what): return .notFound("\(what) not found")
            case .conflict(let m): return .conflict(m)
            case .invalid(let field, let m): return .badRequest(m, field: field)
            case .forbidden(let m): return .forbidden(m)
            case .unreachable, .migration: return APIError(.serviceUnavailable, code: "unavailable", message: e.description)
            }
        case let e as PSQLError where e.sqlState?.hasPrefix("23") == true || e.sqlState?.hasPrefix("22") == true:
            // Constraint and data errors come from input the validation let through: still the caller's.
            return .badRequest(e.serverMessage ?? "rejected by the database", field: e.constraint)
        case let e as HTTPError:
            return APIError(e.status, code: "http", message: e.body ?? "\(e.status)")
        default:
            return APIError(.internalServerError, code: "internal", message: "internal error: \(error)")
        }
    }
}
