public import AllotCore
import AllotHTTPClient
public import AllotStore
import Crypto
public import Foundation

/// Who a request is: an Allot token, a JWT from the programme's identity provider (when one is configured), or
/// the web page's session cookie — a token's id (or a verified JWT's claims) and an expiry, signed with a key
/// derived from allotd's secret. Tokens are looked up on every request, so a revoked or expired one stops at once.
public struct Authenticator: Sendable {
    let tokens: TokenStore
    let oidc: OIDCVerifier?
    let sessionKey: Data
    /// How long a page session lasts (a token's own expiry and revocation end it sooner).
    static let sessionLifetime: TimeInterval = 12 * 3600

    public init(tokens: TokenStore, oidc: OIDCVerifier?, nodeKeys: NodeKeys) {
        self.tokens = tokens
        self.oidc = oidc
        self.sessionKey = NodeKey.derive(secret: nodeKeys.secret, node: "page-sessions", enrolment: 1)
    }

    public enum Failure: Error, CustomStringConvertible {
        case invalid(String)
        public var description: String {
            switch self {
            case .invalid(let why): why
            }
        }
    }

    /// The principal of a bearer token; nil when it stands for nothing (unknown, revoked, expired).
    public func bearer(_ token: String) async throws -> Principal? {
        if let oidc, OIDCVerifier.looksLikeJWT(token) {
            do {
                return try await oidc.principal(for: token)
            } catch {
                throw Failure.invalid(error.description)
            }
        }
        return try await self.tokens.authenticate(token)
    }

    /// A session cookie's value for what `token` (an Allot token or a JWT) stands for; nil when it stands for nothing.
    func session(for token: String, now: Date = Date()) async throws -> (cookie: String, principal: Principal)? {
        var payload: [String: Any] = ["exp": Int64(now.addingTimeInterval(Self.sessionLifetime).timeIntervalSince1970)]
        let principal: Principal
        if let oidc, OIDCVerifier.looksLikeJWT(token) {
            guard let p = try? await oidc.principal(for: token) else { return nil }
            principal = p
            payload["p"] = ["name": p.name, "role": p.role.rawValue, "org": p.org ?? ""]
        } else {
            guard let (id, p) = try await self.tokens.authenticateWithID(token) else { return nil }
            principal = p
            payload["t"] = id
        }
        let data = try JSONSerialization.data(withJSONObject: payload, options: [.sortedKeys])
        let body = data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return ("\(body).\(self.mac(body))", principal)
    }

    /// The principal a session cookie stands for, or nil (forged, expired, or its token revoked).
    func principal(session cookie: String, now: Date = Date()) async throws -> Principal? {
        let parts = cookie.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, Self.constantTimeEqual(self.mac(parts[0]), parts[1]), let data = OIDCVerifier.base64URL(parts[0]),
            let payload = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let exp = (payload["exp"] as? NSNumber)?.doubleValue,
            exp > now.timeIntervalSince1970
        else { return nil }
        if let id = (payload["t"] as? NSNumber)?.int64Value { return try await self.tokens.principal(tokenID: id) }
        if let p = payload["p"] as? [String: String], let name = p["name"], let role = p["role"].flatMap(Role.init(rawValue:)) {
            return Principal(name: name, role: role, org: (p["org"] ?? "").isEmpty ? nil : p["org"])
        }
        return nil
    }

    /// Compares without stopping at the first difference, so the time taken tells nothing of the MAC.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    private func mac(_ text: String) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: SymmetricKey(data: self.sessionKey))).map { String(format: "%02x", $0) }
            .joined()
    }
}
