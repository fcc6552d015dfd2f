public import AllotCore
public import Foundation
public import Hummingbird
public import NIOCore
import NIOFoundationCompat

/// An error a handler throws to answer `{"error": {"code", "message", "field"}}` with the right status.
public struct APIError: HTTPResponseError, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var body: APIErrorBody
    /// Seconds after which the request may succeed (`Retry-After`), for 503s that pass by themselves.
    public var retryAfterSeconds: Int?

    public init(_ status: HTTPResponse.Status, code: String, message: String, field: String? = nil, retryAfterSeconds: Int? = nil) {
        self.status = status
        self.retryAfterSeconds = retryAfterSeconds
        // An error may quote its request: never answer with more than a few kilobytes of it.
        self.body = APIErrorBody(code: code, message: Self.capped(message, 4096), field: field.map { Self.capped($0, 256) })
    }

    public static func badRequest(_ message: String, field: String? = nil) -> APIError {
        APIError(.badRequest, code: "invalid", message: message, field: field)
    }
    public static func notFound(_ message: String) -> APIError { APIError(.notFound, code: "not_found", message: message) }
    public static let unauthorized = APIError(.unauthorized, code: "unauthorized", message: "a valid bearer token is required")
    public static func forbidden(_ message: String) -> APIError { APIError(.forbidden, code: "forbidden", message: message) }
    public static func conflict(_ message: String) -> APIError { APIError(.conflict, code: "conflict", message: message) }

    public var description: String { self.body.description }

    static func capped(_ text: String, _ limit: Int) -> String {
        text.utf8.count <= limit ? text : String(decoding: text.utf8.prefix(limit), as: UTF8.self) + "… (cut)"
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = JSON.response(self.body, status: self.status)
        if let seconds = self.retryAfterSeconds { response.headers[.retryAfter] = String(seconds) }
        return response
    }
}

/// JSON in and out of handlers, with the wire's one encoder configuration.
public enum JSON {
    public static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        self.response(encoded: self.encoded(value), status: status)
    }

    /// A body encoded once, answered many times (the same reply to most heartbeats).
    public static func response(encoded: ByteBuffer, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json; charset=utf-8"], body: ResponseBody(byteBuffer: encoded))
    }

    public static func encoded<T: Encodable>(_ value: T) -> ByteBuffer { ByteBuffer(bytes: (try? WireJSON.encoder.encode(value)) ?? Data("{}".utf8)) }

    public static func text(_ text: String, status: HTTPResponse.Status = .ok, contentType: String = "text/plain; charset=utf-8") -> Response {
        Response(status: status, headers: [.contentType: contentType], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// Reads a JSON body of at most `limit` bytes into `T`; a malformed body is a 400 naming the field at fault.
    public static func body<T: Decodable>(_ type: T.Type, from request: Request, limit: Int = 4 << 20) async throws -> T {
        try self.decode(type, from: Data(buffer: try await request.collectBody(upTo: limit)))
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        do {
            return try WireJSON.decoder.decode(type, from: data)
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
    /// The body, at most `limit` bytes: a larger one (by its Content-Length, or as it streams in) is a 413
    /// naming the limit, answered before the rest is read.
    public func collectBody(upTo limit: Int) async throws -> ByteBuffer {
        let tooLarge = APIError(
            .contentTooLarge, code: "too_large", message: "the request body is larger than \(limit) bytes, the most this route reads")
        if let length = self.headers[.contentLength].flatMap({ Int($0) }), length > limit { throw tooLarge }
        do {
            return try await self.body.collect(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw tooLarge
        }
    }

    /// The token after `Bearer ` in the Authorization header.
    public var bearerToken: String? {
        // On every request: no lowercased copy of the whole header, no Foundation trimming.
        guard let header = self.headers[.authorization], header.utf8.count > 7, header.prefix(7).lowercased() == "bearer " else { return nil }
        var token = header.dropFirst(7)
        while let c = token.first, c == " " || c == "\t" { token.removeFirst() }
        while let c = token.last, c == " " || c == "\t" { token.removeLast() }
        return token.isEmpty ? nil : String(token)
    }
}
