import AllotCore
import AllotHTTPServer
import AllotStore
import Foundation
import Hummingbird

/// The programme's side: `/v1/policy`, `/v1/tokens`, `/v1/quota` and `/v1/audit`.
struct ProgrammeRoutes {
    let database: Database

    var routes: RouteCollection<AllotRequestContext> {
        let routes = RouteCollection(context: AllotRequestContext.self)
        routes.on(.applyPolicy) { request, context in
            let policy = try await JSON.body(Policy.self, from: request)
            let dryRun = try request.query("dryRun", as: Bool.self) ?? false
            return JSON.response(try await PolicyStore(database: self.database).apply(policy, by: try context.caller().principal, dryRun: dryRun))
        }
        routes.on(.createToken) { request, context in
            let (principal, scope) = try context.caller()
            let body = try await JSON.body(CreateTokenRequest.self, from: request)
            // Within an organisation's scope (an org-admin), only member tokens of that organisation.
            if let own = scope.organization, body.org != own || body.role != .member {
                throw APIError.forbidden("an org-admin makes member tokens of its own organization only")
            }
            let token = try await TokenStore(database: self.database).create(name: body.name, role: body.role, org: body.org, actor: principal)
            return JSON.response(CreateTokenResponse(name: body.name, token: token), status: .created)
        }
        routes.on(.quota) { request, context in
            let scope = try context.caller().scope
            let asked = request.uri.queryParameters.get("org")
            if let asked, !scope.includes(org: asked) { throw APIError.forbidden("members see their own organization's quota only") }
            return JSON.response(
                try await QuotaStore(database: self.database).rows(
                    org: scope.organization ?? asked, pool: request.uri.queryParameters.get("pool"), period: request.uri.queryParameters.get("period")
                ))
        }
        routes.on(.audit) { request, _ in
            let since = try request.uri.queryParameters.get("since").map { text in
                guard let date = ISO8601DateFormatter().date(from: text) else {
                    throw APIError.badRequest("must be a time in ISO 8601, like 2026-11-01T00:00:00Z, not '\(text.prefix(64))'", field: "since")
                }
                return date
            }
            return JSON.response(try await AuditStore(database: self.database).list(since: since))
        }
        routes.on(.verifyAudit) { _, _ in
            let (checked, broken) = try await AuditStore(database: self.database).verify()
            return JSON.response(AuditVerification(checked: checked, intact: broken == nil, firstBrokenID: broken))
        }
        return routes
    }
}

/// Liveness and readiness for load balancers and systemd, Prometheus metrics, and the web page.
struct StatusRoutes {
    let database: Database
    let metrics: Metrics

    var routes: RouteCollection<AllotRequestContext> {
        let routes = RouteCollection(context: AllotRequestContext.self)
        routes.on(.healthz) { _, _ in JSON.text("ok\n") }
        routes.on(.readyz) { _, _ in
            await self.database.isReachable() ? JSON.text("ready\n") : JSON.text("database unreachable\n", status: .serviceUnavailable)
        }
        routes.on(.metrics) { _, _ in
            JSON.text(
                self.metrics.render(try await StatusStore(database: self.database).gauges()), contentType: "text/plain; version=0.0.4; charset=utf-8")
        }
        routes.on(.page) { _, _ in
            JSON.text(try await Dashboard(database: self.database).html(), contentType: "text/html; charset=utf-8")
        }
        return routes
    }
}
