import AllotCore
import AllotHTTPServer
import AllotStore
import Foundation
import Hummingbird

/// The programme's side: `/v1/policy`, `/v1/tokens`, `/v1/quota` and `/v1/audit`.
struct ProgrammeRoutes {
    let database: Database
    let auditCheckpoints: String?
    let tokenCache: TokenCache?
    var tokens: TokenStore { TokenStore(database: self.database, cache: self.tokenCache) }

    var routes: RouteCollection<AllotRequestContext> {
        let routes = RouteCollection(context: AllotRequestContext.self)
        routes.on(.applyPolicy) { request, context in
            let policy = try await JSON.body(Policy.self, from: request)
            let dryRun = try request.query("dryRun", as: Bool.self) ?? false
            return JSON.response(try await PolicyStore(database: self.database).apply(policy, by: try context.caller().principal, dryRun: dryRun))
        }
        routes.on(.createToken) { request, context in
            let (principal, scope) = try context.caller()
            var body = try await JSON.body(CreateTokenRequest.self, from: request)
            // Within an organisation's scope (an org-admin), only member tokens of that organisation (its own,
            // when the request names none).
            if let own = scope.organization, body.org == nil { body.org = own }
            if let own = scope.organization, body.org != own || body.role != .member {
                throw APIError.forbidden("an org-admin makes member tokens of its own organization only")
            }
            let made = try await self.tokens.create(
                name: body.name, role: body.role, org: body.org, expiresIn: body.expiresInSeconds, actor: principal)
            return JSON.response(made, status: .created)
        }
        routes.on(.listTokens) { request, context in
            let scope = try context.caller().scope
            return JSON.response(
                try await self.tokens.list(scope: scope, includeRevoked: try request.query("all", as: Bool.self) ?? false))
        }
        routes.on(.revokeToken) { _, context in
            let (principal, scope) = try context.caller()
            return JSON.response(try await self.tokens.revoke(try context.id(), scope: scope, actor: principal))
        }
        routes.on(.quota) { request, context in
            let (principal, scope) = try context.caller()
            let org = try Self.organization(asked: request.uri.queryParameters.get("org"), within: scope, what: "quota")
            let period = request.uri.queryParameters.get("period")
            let rows = try await QuotaStore(database: self.database).rows(org: org, pool: request.uri.queryParameters.get("pool"), period: period)
            // A statement read is on the record (the page's own refreshes are not: they are views, not statements).
            try await AuditStore(database: self.database).record([
                AuditEntry(
                    actor: principal, action: "quota.read", target: "quota/\(org ?? "all")", outcome: "read", detail: ["period": period ?? "now"])
            ])
            return JSON.response(rows)
        }
        routes.on(.report) { request, context in
            let (principal, scope) = try context.caller()
            guard let org = try Self.organization(asked: request.uri.queryParameters.get("org"), within: scope, what: "statements") else {
                throw APIError.badRequest("is required (the organisation to report on)", field: "org")
            }
            let period = request.uri.queryParameters.get("period")
            let by = request.uri.queryParameters.get("by").flatMap(Statement.Grouping.init(rawValue:)) ?? .pool
            let statement = try await StatementStore(database: self.database).statement(org: org, period: period, by: by)
            try await AuditStore(database: self.database).record([
                AuditEntry(
                    actor: principal, action: "report.read", target: "report/\(org)", outcome: statement.digest,
                    detail: ["period": statement.period, "by": by.rawValue])
            ])
            return JSON.response(statement)
        }
        routes.on(.adjustUsage) { request, context in
            let body = try await JSON.body(AdjustUsageRequest.self, from: request)
            let id = try await StatementStore(database: self.database).adjust(
                org: body.org, pool: body.pool, gpuSeconds: body.gpuSeconds, appliesAt: body.appliesAt, reason: body.reason, project: body.project,
                owner: body.user, by: try context.caller().principal)
            return JSON.response(["id": id], status: .created)
        }
        routes.on(.audit) { request, _ in
            // The middleware checked the parameters against the route's declaration.
            let since = request.uri.queryParameters.get("since").flatMap { WireJSON.date(String($0)) }
            return JSON.response(
                try await AuditStore(database: self.database).list(since: since, limit: try request.query("limit", as: Int.self) ?? 1000))
        }
        routes.on(.verifyAudit) { _, _ in
            JSON.response(try await AuditStore(database: self.database).verify(checkpoints: self.auditCheckpoints.map(AuditCheckpointer.read) ?? []))
        }
        routes.on(.verifyAuditAgainst) { request, _ in
            let body = try await JSON.body(AuditVerifyRequest.self, from: request, limit: 16 << 20)
            let given = body.checkpoints.compactMap(AuditChain.Checkpoint.init(line:))
            let own = self.auditCheckpoints.map(AuditCheckpointer.read) ?? []
            return JSON.response(try await AuditStore(database: self.database).verify(checkpoints: given + own))
        }
        return routes
    }

    /// The organisation a programme read is for: the caller's own (members and org-admins, who may not name
    /// another), or the one an operator or auditor names (nil: every one).
    static func organization(asked: String?, within scope: Scope, what: String) throws -> String? {
        if !scope.seesOrganizations || asked.map({ !scope.includes(org: $0) }) == true {
            throw APIError.forbidden("members see their own organization's \(what) only")
        }
        return scope.organization ?? asked
    }
}

/// Liveness and readiness for load balancers and systemd, Prometheus metrics, and the web page with its login.
struct StatusRoutes {
    let database: Database
    let metrics: Metrics
    let authenticator: Authenticator

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
        routes.on(.page) { _, context in
            guard let principal = context.principal, let scope = context.scope else { return Self.page(Dashboard.loginForm(message: nil)) }
            return Self.page(try await Dashboard(database: self.database).html(for: principal, scope: scope))
        }
        routes.on(.login) { request, _ in
            // A form posted from another site would log the browser in as someone else: only the page's own.
            if let origin = request.headers[.origin], let authority = request.head.authority,
                let url = URL(string: origin), url.host.map({ $0 + (url.port.map { ":\($0)" } ?? "") }) != authority
            {
                throw APIError.forbidden("a login is posted from allotd's own page only")
            }
            let form = String(buffer: try await request.collectBody(upTo: 64 << 10))
            let token = URLComponents(string: "?" + form)?.queryItems?.first { $0.name == "token" }?.value?.trimmingCharacters(
                in: .whitespacesAndNewlines)
            guard let token, !token.isEmpty, let (cookie, principal) = try await self.authenticator.session(for: token) else {
                return Self.page(Dashboard.loginForm(message: "That token is not valid (unknown, revoked or expired)."), status: .unauthorized)
            }
            // The page is for people: a machine's token (an agent's, a scraper's) does not sign in.
            guard Access.rule(.page).roles?.contains(principal.role) == true else {
                return Self.page(Dashboard.loginForm(message: "A \(principal.role.rawValue) token cannot sign in to the page."), status: .forbidden)
            }
            var response = Response(status: .seeOther, headers: [.location: "/"])
            response.setCookie(
                Cookie(
                    name: AccessMiddleware.sessionCookie, value: cookie, maxAge: Int(Authenticator.sessionLifetime), path: "/",
                    secure: Self.isTLS(request), httpOnly: true, sameSite: .strict))
            return response
        }
        routes.on(.logout) { request, _ in
            var response = Response(status: .seeOther, headers: [.location: "/"])
            response.setCookie(
                Cookie(
                    name: AccessMiddleware.sessionCookie, value: "", maxAge: 0, path: "/", secure: Self.isTLS(request), httpOnly: true,
                    sameSite: .strict))
            return response
        }
        return routes
    }

    /// Behind a TLS-terminating proxy (which says so), or on TLS itself: the cookie is then Secure.
    static func isTLS(_ request: Request) -> Bool {
        request.uri.scheme == .https || request.headers[.init("X-Forwarded-Proto")!]?.lowercased() == "https"
    }

    /// The page, never cached, framed by no one.
    static func page(_ html: String, status: HTTPResponse.Status = .ok) -> Response {
        var response = JSON.text(html, status: status, contentType: "text/html; charset=utf-8")
        response.headers[.cacheControl] = "no-store"
        response.headers[.init("X-Frame-Options")!] = "DENY"
        response.headers[.init("Content-Security-Policy")!] =
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
        return response
    }
}
