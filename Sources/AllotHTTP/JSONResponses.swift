import AllotCore
import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1

/// An error a handler throws to answer `{"error": {"code", "message", "field"}}` with the right status.
public struct APIError: HTTPResponseError, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var body: APIErrorBody

    public init(_ status: HTTPResponse.Status, code: String, message: String, field: String? = nil) {
        self.status = status
        self.body = APIErrorBody(code: code, message: message, field: field)
    }

    public static func badRequest(_ message: String, field: String? = nil) -> APIError {
        APIError(.badRequest, code: "invalid", message: message, field: field)
    }
    public static func notFound(_ message: String) -> APIError { APIError(.notFound, code: "not_found", message: message) }
    public static let unauthorized = APIError(.unauthorized, code: "unauthorized", message: "a valid bearer token is required")
    public static func forbidden(_ message: String) -> APIError { APIError(.forbidden, code: "forbidden", message: message) }
    public static func conflict(_ message: String) -> APIError { APIError(.conflict, code: "conflict", message: message) }

    public var description: String { self.body.description }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        JSON.response(self.body, status: self.status)
    }
}

/// JSON in and out of handlers, with one encoder configuration for the whole API.
public enum JSON {
    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    public static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }()

    public static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? self.encoder.encode(value)) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    public static func text(_ text: String, status: HTTPResponse.Status = .ok, contentType: String = "text/plain; charset=utf-8") -> Response {
        Response(status: status, headers: [.contentType: contentType], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// Reads a JSON body of at most `limit` bytes into `T`; a malformed body is a 400 naming the field at fault.
    public static func body<T: Decodable>(_ type: T.Type, from request: Request, limit: Int = 4 << 20) async throws -> T {
        let buffer = try await request.body.collect(upTo: limit)
        return try self.decode(type, from: Data(buffer: buffer))
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        do {
            return try self.decoder.decode(type, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw APIError.badRequest("is required", field: self.path(context.codingPath + [key]))
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw APIError.badRequest(context.debugDescription, field: self.path(context.codingPath))
        } catch let DecodingError.dataCorrupted(context) {
            throw APIError.badRequest("malformed JSON: \(context.debugDescription)", field: self.path(context.codingPath))
        } catch {
            throw APIError.badRequest("malformed JSON: \(error)")
        }
    }

    static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: CharacterSet(charactersIn: "."))
    }
}

extension Request {
    /// The token after `Bearer ` in the Authorization header.
    public var bearerToken: String? {
        guard let header = self.headers[.authorization], header.lowercased().hasPrefix("bearer ") else { return nil }
        let token = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }
}

/// A small JSON-over-HTTP client for the CLI, the dispatcher and the agent's heartbeats.
public struct APIClient: Sendable {
    public var baseURL: String
    public var token: String?
    public var timeout: TimeAmount

    public init(baseURL: String, token: String?, timeout: TimeAmount = .seconds(10)) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.timeout = timeout
    }

    public enum Failure: Error, CustomStringConvertible {
        /// The server answered with an error body.
        case api(status: Int, APIErrorBody)
        /// The server answered with something that is not our error shape.
        case http(status: Int, body: String)
        case unreachable(url: String, underlying: String)

        public var description: String {
            switch self {
            case .api(_, let body): body.description
            case .http(let status, let body): "HTTP \(status): \(body.prefix(300))"
            case .unreachable(let url, let underlying): "cannot reach \(url): \(underlying)"
            }
        }
    }

    /// Sends a request and returns the raw body of a 2xx answer.
    /// One client for the process. Connection failures are not retried inside the client: every caller
    /// (the CLI, the dispatcher's backoff, the heartbeat loop) has its own retry policy, and a refused
    /// connection should say so at once rather than at the deadline.
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(3)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    public func send(_ method: HTTPMethod, _ path: String, body: Data? = nil, contentType: String = "application/json") async throws -> Data {
        var request = HTTPClientRequest(url: self.baseURL + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await Self.http.execute(request, timeout: self.timeout)
        } catch {
            throw Failure.unreachable(url: self.baseURL, underlying: "\(error)")
        }
        let data = Data(buffer: try await response.body.collect(upTo: 64 << 20))
        guard (200..<300).contains(Int(response.status.code)) else {
            if let error = try? JSON.decoder.decode(APIErrorBody.self, from: data) { throw Failure.api(status: Int(response.status.code), error) }
            throw Failure.http(status: Int(response.status.code), body: String(decoding: data, as: UTF8.self))
        }
        return data
    }

    public func get<T: Decodable>(_ path: String, as type: T.Type = T.self) async throws -> T {
        try JSON.decoder.decode(type, from: try await self.send(.GET, path))
    }

    public func post<T: Decodable>(_ path: String, json body: some Encodable, as type: T.Type = T.self) async throws -> T {
        try JSON.decoder.decode(type, from: try await self.send(.POST, path, body: try JSON.encoder.encode(body)))
    }
}
