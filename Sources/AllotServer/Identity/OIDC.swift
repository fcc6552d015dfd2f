public import AllotCore
import AsyncHTTPClient
import Crypto
import CryptoExtras
public import Foundation
import NIOCore
import NIOFoundationCompat
import Synchronization

/// How allotd trusts the programme's identity provider: bearer tokens that are JWTs from `issuer`, for
/// `audience`, signed by a key of its JWKS, whose claims name the user, the organisation and the role.
public struct OIDCConfiguration: Sendable {
    public var issuer: String
    public var audience: String
    /// A JWKS file, or an `https://` URL, re-read every `refresh` (and at once for an unknown key id).
    public var jwks: String
    public var userClaim: String
    public var orgClaim: String
    public var roleClaim: String
    public var refresh: Duration
    /// Clock skew allowed on `exp` and `nbf`.
    public var leeway: TimeInterval

    public init(
        issuer: String, audience: String, jwks: String, userClaim: String = "preferred_username", orgClaim: String = "org",
        roleClaim: String = "allot_role", refresh: Duration = .seconds(300), leeway: TimeInterval = 60
    ) {
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.userClaim = userClaim
        self.orgClaim = orgClaim
        self.roleClaim = roleClaim
        self.refresh = refresh
        self.leeway = leeway
    }
}

/// Verifies JWS-signed JWTs (RS256, ES256: what identity providers sign ID and access tokens with) by hand with
/// swift-crypto, which allotd links already: jwt-kit would add its own dependency tree to every build for two
/// algorithms and a claims check. `alg: none`, HMAC algorithms and unknown keys are refused.
public final class OIDCVerifier: Sendable {
    public let configuration: OIDCConfiguration
    private let keys = Mutex<(loaded: [String: VerificationKey], at: ContinuousClock.Instant?, lastUnknownKid: ContinuousClock.Instant?)>(
        ([:], nil, nil))

    public enum Failure: Error, CustomStringConvertible, Equatable {
        case malformed(String)
        case refused(String)

        public var description: String {
            switch self {
            case .malformed(let why): "not a JWT: \(why)"
            case .refused(let why): why
            }
        }
    }

    enum VerificationKey: Sendable {
        case rsa(_RSA.Signing.PublicKey)
        case p256(P256.Signing.PublicKey)
    }

    public init(_ configuration: OIDCConfiguration) { self.configuration = configuration }

    /// Whether a bearer token looks like a JWT (three base64url parts), rather than an Allot token.
    public static func looksLikeJWT(_ token: String) -> Bool { token.split(separator: ".", omittingEmptySubsequences: false).count == 3 }

    /// The principal `token` stands for, or why it does not.
    public func principal(for token: String, now: Date = Date()) async throws(Failure) -> Principal {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, let headerData = Self.base64URL(parts[0]), let payloadData = Self.base64URL(parts[1]),
            let signature = Self.base64URL(parts[2])
        else { throw .malformed("three base64url parts expected") }
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any],
            let claims = try? JSONSerialization.jsonObject(with: payloadData) as? [String: Any]
        else { throw .malformed("header and payload must be JSON objects") }
        guard let alg = header["alg"] as? String, alg == "RS256" || alg == "ES256" else {
            throw .refused("algorithm '\(header["alg"] ?? "none")' is not accepted (RS256 or ES256)")
        }
        let kid = header["kid"] as? String
        guard let key = try await self.key(kid) else { throw .refused("unknown signing key '\(kid ?? "-")'") }
        let signed = Data((parts[0] + "." + parts[1]).utf8)
        let valid: Bool
        switch (alg, key) {
        case ("RS256", .rsa(let k)):
            valid =
                (try? k.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: signed, padding: .insecurePKCS1v1_5)) ?? false
        case ("ES256", .p256(let k)):
            valid = (try? k.isValidSignature(P256.Signing.ECDSASignature(rawRepresentation: signature), for: signed)) ?? false
        default:
            throw .refused("key '\(kid ?? "-")' is not a key for \(alg)")
        }
        guard valid else { throw .refused("bad signature") }
        let c = self.configuration
        guard claims["iss"] as? String == c.issuer else { throw .refused("issuer '\(claims["iss"] ?? "-")' is not \(c.issuer)") }
        let audiences = (claims["aud"] as? [String]) ?? (claims["aud"] as? String).map { [$0] } ?? []
        guard audiences.contains(c.audience) else { throw .refused("audience \(audiences) does not include \(c.audience)") }
        guard let exp = (claims["exp"] as? NSNumber)?.doubleValue else { throw .refused("no expiry (exp)") }
        guard exp + c.leeway > now.timeIntervalSince1970 else { throw .refused("expired") }
        if let nbf = (claims["nbf"] as? NSNumber)?.doubleValue, nbf - c.leeway > now.timeIntervalSince1970 { throw .refused("not valid yet") }
        guard let user = claims[c.userClaim] as? String, !user.isEmpty else { throw .refused("no \(c.userClaim) claim") }
        guard let roleName = claims[c.roleClaim] as? String, let role = Role(rawValue: roleName),
            [.member, .orgAdmin, .operator, .auditor].contains(role)
        else { throw .refused("claim \(c.roleClaim) must be member, org-admin, operator or auditor") }
        let org = (claims[c.orgClaim] as? String) ?? (claims[c.orgClaim] as? [String])?.first
        if (role == .member || role == .orgAdmin) && (org ?? "").isEmpty { throw .refused("a \(role.rawValue) needs the \(c.orgClaim) claim") }
        return Principal(name: user, role: role, org: role == .member || role == .orgAdmin ? org : nil)
    }

    /// The key `kid`: from the loaded JWKS, reloaded when it is older than `refresh`, or — for a key id not seen
    /// yet — at most every 30 s (a rotated key is found at once; a flood of made-up ids costs one fetch).
    private func key(_ kid: String?) async throws(Failure) -> VerificationKey? {
        let now = ContinuousClock.now
        let (loaded, at, lastUnknown) = self.keys.withLock { $0 }
        let stale = at.map { now - $0 > self.configuration.refresh } ?? true
        var keys = loaded
        let known = kid.map { keys[$0] != nil } ?? (keys.count == 1)
        let mayRefetch = lastUnknown.map { now - $0 > .seconds(30) } ?? true
        if stale || (!known && mayRefetch) {
            keys = try await self.load()
            // Only a fetch for an unknown id counts against the 30 s; the first load and a stale reload do not.
            self.keys.withLock { $0 = (keys, now, stale ? $0.lastUnknownKid : now) }
        }
        if let kid { return keys[kid] }
        return keys.count == 1 ? keys.first?.value : nil
    }

    private func load() async throws(Failure) -> [String: VerificationKey] {
        let source = self.configuration.jwks
        let data: Data
        if source.hasPrefix("https://") || source.hasPrefix("http://") {
            do {
                let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: source), timeout: .seconds(5))
                data = Data(buffer: try await response.body.collect(upTo: 1 << 20))
            } catch {
                throw .refused("cannot fetch the JWKS from \(source): \(error)")
            }
        } else {
            guard let d = FileManager.default.contents(atPath: source) else { throw .refused("cannot read the JWKS file \(source)") }
            data = d
        }
        return try Self.parseJWKS(data)
    }

    /// RSA (`n`, `e`) and P-256 (`x`, `y`) signing keys of a JWKS document, by `kid`.
    static func parseJWKS(_ data: Data) throws(Failure) -> [String: VerificationKey] {
        guard let doc = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let list = doc["keys"] as? [[String: Any]] else {
            throw .refused("the JWKS is not {\"keys\": [...]}")
        }
        var out: [String: VerificationKey] = [:]
        for (i, k) in list.enumerated() where (k["use"] as? String ?? "sig") == "sig" {
            let kid = k["kid"] as? String ?? "#\(i)"
            switch k["kty"] as? String {
            case "RSA":
                if let n = (k["n"] as? String).flatMap(Self.base64URL), let e = (k["e"] as? String).flatMap(Self.base64URL),
                    let key = try? _RSA.Signing.PublicKey(n: n, e: e)
                {
                    out[kid] = .rsa(key)
                }
            case "EC" where k["crv"] as? String == "P-256":
                if let x = (k["x"] as? String).flatMap(Self.base64URL), let y = (k["y"] as? String).flatMap(Self.base64URL),
                    let key = try? P256.Signing.PublicKey(rawRepresentation: x + y)
                {
                    out[kid] = .p256(key)
                }
            default: continue
            }
        }
        return out
    }

    static func base64URL(_ text: String) -> Data? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s)
    }
}
