public import AllotCore
import AsyncHTTPClient
public import Foundation
import NIOCore
import NIOFoundationCompat
public import NIOHTTP1

/// A small JSON-over-HTTP client for the CLI, the dispatcher and the agent's heartbeats.
public struct APIClient: Sendable {
    public var baseURL: String
    public var token: String?
    public var timeout: Duration
    /// A node's key: requests are signed with it (allotd calling an agent) instead of carrying a token.
    public var signingKey: Data?

    public init(baseURL: String, token: String?, timeout: Duration = .seconds(10)) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.timeout = timeout
    }

    /// A client for an agent's API, signing every request with the node's key.
    public init(agent baseURL: String, key: Data, timeout: Duration) {
        self.init(baseURL: baseURL, token: nil, timeout: timeout)
        self.signingKey = key
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

    /// One client for the process. Connection failures are not retried inside the client: every caller
    /// (the CLI, the dispatcher's backoff, the heartbeat loop) has its own retry policy, and a refused
    /// connection should say so at once rather than at the deadline. Redirects are never followed: a peer
    /// answers itself or not at all.
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        // Above the default 8 per host: one `allot-agent simulate` is thousands of nodes behind one address, and
        // allotd reaches all of them there (a real agent is one host, far below this).
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        configuration.timeout.connect = .seconds(3)
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// Sends a request and returns the raw body of a 2xx answer.
    public func send(_ method: HTTPMethod, _ path: String, body: Data? = nil, contentType: String = "application/json") async throws -> Data {
        var request = HTTPClientRequest(url: self.baseURL + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let signingKey {
            request.headers.add(
                name: AgentSignature.header, value: AgentSignature.sign(method: method.rawValue, path: path, body: body ?? Data(), key: signingKey))
        }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await Self.http.execute(request, timeout: TimeAmount(self.timeout))
        } catch {
            throw Failure.unreachable(url: self.baseURL, underlying: "\(error)")
        }
        let data = Data(buffer: try await response.body.collect(upTo: 64 << 20))
        guard (200..<300).contains(Int(response.status.code)) else {
            if let error = try? WireJSON.decoder.decode(APIErrorBody.self, from: data) { throw Failure.api(status: Int(response.status.code), error) }
            throw Failure.http(status: Int(response.status.code), body: String(decoding: data, as: UTF8.self))
        }
        return data
    }

    /// The raw body of a GET.
    public func get(_ path: String) async throws -> Data { try await self.send(.GET, path) }

    /// The raw body of a DELETE.
    @discardableResult
    public func delete(_ path: String) async throws -> Data { try await self.send(.DELETE, path) }

    public func get<T: Decodable>(_ path: String, as type: T.Type = T.self) async throws -> T {
        try WireJSON.decoder.decode(type, from: try await self.send(.GET, path))
    }

    public func post<T: Decodable>(_ path: String, json body: some Encodable, as type: T.Type = T.self) async throws -> T {
        try WireJSON.decoder.decode(type, from: try await self.send(.POST, path, body: try WireJSON.encoder.encode(body)))
    }

    public func patch<T: Decodable>(_ path: String, json body: some Encodable, as type: T.Type = T.self) async throws -> T {
        try WireJSON.decoder.decode(type, from: try await self.send(.PATCH, path, body: try WireJSON.encoder.encode(body)))
    }
}
