import AllotCore
import AllotFormats
import AllotHTTPServer
import AllotStore
import Hummingbird
import Logging

/// Authentication and authorization before any handler runs: the bearer token names a principal, and the
/// route's rule (`Access`) allows it — with a scope — or answers 401/403. Unmatched paths pass on to a 404.
struct AccessMiddleware: RouterMiddleware {
    typealias Context = AllotRequestContext
    let authenticator: Authenticator
    static let sessionCookie = "allot_session"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let matched = context.endpointPath else { return try await next(request, context) }
        // A route registered other than through `Endpoint` has no rule: refused, never let through.
        guard let endpoint = Endpoint.matching(request.method, matched) else { throw APIError.forbidden("no access rule for this route") }
        var principal: Principal?
        let rule = Access.rule(endpoint)
        // A public route answers whatever token comes with it (a health check must not depend on the database).
        if rule.roles == nil {
            try endpoint.check(query: request.uri.queryParameters)
            return try await next(request, context)
        }
        if let token = request.bearerToken {
            do {
                principal = try await self.authenticator.bearer(token)
            } catch let failure as Authenticator.Failure {
                throw APIError(.unauthorized, code: "unauthorized", message: failure.description)
            }
            if principal == nil { throw APIError.unauthorized }
        } else if rule.acceptsSession, let cookie = request.cookies[Self.sessionCookie]?.value {
            principal = try await self.authenticator.principal(session: cookie)
        }
        switch Access.decide(endpoint, for: principal) {
        case .unauthenticated:
            throw APIError.unauthorized
        case .forbidden(let why):
            throw APIError.forbidden(why)
        case .allowed(let scope):
            try endpoint.check(query: request.uri.queryParameters)
            var context = context
            context.principal = principal
            context.scope = scope
            return try await next(request, context)
        }
    }
}

/// Every error a handler or middleware throws, answered in the API's error shape: the caller's mistakes as
/// 4xx naming the field, the database's absence as 503, and anything else as 500 (logged).
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = AllotRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let api = Self.apiError(error)
            if api.status == .internalServerError {
                self.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            }
            return try api.response(from: request, context: context)
        }
    }

    static func apiError(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError:
            return e
        case let e as FormatErrors:
            let first = e.issues.first
            let message = e.total == 1 ? (first?.message ?? "invalid") : e.told(separator: "; ")
            return .badRequest(message, field: first.flatMap { $0.field.isEmpty ? nil : $0.field })
        case let e as StoreError:
            switch e {
            case .notFound(let what): return .notFound("\(what) not found")
            case .conflict(let m): return .conflict(m)
            case .invalid(let field, let m): return .badRequest(m, field: field.isEmpty ? nil : field)
            case .forbidden(let m): return .forbidden(m)
            // The database restarting or failing over: the client should try again shortly.
            case .unreachable: return APIError(.serviceUnavailable, code: "unavailable", message: e.description, retryAfterSeconds: 2)
            case .busy: return APIError(.serviceUnavailable, code: "busy", message: e.description, retryAfterSeconds: 1)
            case .migration, .fenced: return APIError(.serviceUnavailable, code: "unavailable", message: e.description, retryAfterSeconds: 5)
            case .unknownValue: return APIError(.internalServerError, code: "internal", message: e.description)
            }
        case let e as Refusal:
            return .conflict(e.description)
        case let e as HTTPError:
            return APIError(e.status, code: "http", message: e.body ?? "\(e.status)")
        case _ where StoreError.sqlState(of: error) != nil:
            // PostgresNIO keeps the server's message out of `description`: the SQLSTATE says what went wrong.
            return APIError(.internalServerError, code: "internal", message: "internal error: database error \(StoreError.sqlState(of: error)!)")
        default:
            return APIError(.internalServerError, code: "internal", message: "internal error: \(error)")
        }
    }
}
