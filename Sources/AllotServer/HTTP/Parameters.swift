import AllotHTTPServer
import Hummingbird

extension Request {
    /// A query parameter as `T`: nil when absent, a 400 naming it when present but not a `T`.
    func query<T: LosslessStringConvertible>(_ name: String, as type: T.Type = T.self) throws -> T? {
        guard let text = self.uri.queryParameters.get(name) else { return nil }
        guard let value = T(text) else { throw APIError.badRequest("must be a \(Self.describe(T.self)), not '\(text.prefix(64))'", field: name) }
        return value
    }

    /// A query parameter naming a case of `T`; a 400 listing the choices otherwise.
    func query<T: RawRepresentable & CaseIterable>(_ name: String, oneOf type: T.Type) throws -> T? where T.RawValue == String {
        guard let text = self.uri.queryParameters.get(name) else { return nil }
        guard let value = T(rawValue: text) else {
            throw APIError.badRequest("must be one of \(T.allCases.map(\.rawValue).joined(separator: ", ")), not '\(text.prefix(64))'", field: name)
        }
        return value
    }

    private static func describe(_ type: Any.Type) -> String {
        type == Int.self || type == Int64.self ? "whole number" : type == Bool.self ? "true or false" : "\(type)"
    }
}

extension AllotRequestContext {
    /// A path parameter that must be a positive number (a job, drain or window id).
    func id(_ name: String = "id") throws -> Int64 {
        guard let id = self.parameters.get(name, as: Int64.self), id > 0 else { throw APIError.badRequest("must be a positive number", field: name) }
        return id
    }

    /// The node named in the path.
    func nodeName() throws -> String {
        guard let name = self.parameters.get("name"), !name.isEmpty else { throw APIError.badRequest("must name a node", field: "name") }
        return name
    }
}

extension RouteCollection where Context == AllotRequestContext {
    /// Registers `handler` for `endpoint`: every route goes through here, so every route has an access rule.
    @discardableResult
    func on(_ endpoint: Endpoint, use handler: @escaping @Sendable (Request, AllotRequestContext) async throws -> Response) -> Self {
        self.on(RouterPath(endpoint.path), method: endpoint.method, use: handler)
    }
}
