import AllotCore
import AllotDatabaseTesting
import AllotServer
import Crypto
import CryptoExtras
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// A made-up identity provider: its keys, its JWKS file, and the tokens it signs (and some it should not have).
struct TestIdP {
    let ec = P256.Signing.PrivateKey()
    let rsa: _RSA.Signing.PrivateKey
    let jwks: URL
    static let issuer = "https://id.example.gov"
    static let audience = "allot"

    init() throws {
        self.rsa = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        self.jwks = FileManager.default.temporaryDirectory.appendingPathComponent("allot-jwks-\(UUID().uuidString).json")
        try self.publish(kids: ["ec-1", "rsa-1"])
    }

    /// Writes the JWKS with the keys named (a rotation drops or adds one).
    func publish(kids: [String]) throws {
        var keys: [[String: String]] = []
        if kids.contains("ec-1") {
            let raw = self.ec.publicKey.rawRepresentation
            keys.append(["kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "x": Self.b64(raw.prefix(32)), "y": Self.b64(raw.suffix(32))])
        }
        if kids.contains("rsa-1") {
            let p = try self.rsa.publicKey.getKeyPrimitives()
            keys.append(["kty": "RSA", "kid": "rsa-1", "use": "sig", "n": Self.b64(p.modulus), "e": Self.b64(p.publicExponent)])
        }
        try JSONSerialization.data(withJSONObject: ["keys": keys]).write(to: self.jwks)
    }

    var configuration: OIDCConfiguration {
        OIDCConfiguration(issuer: Self.issuer, audience: Self.audience, jwks: self.jwks.path, refresh: .seconds(3600), leeway: 30)
    }

    static func b64(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The claims of a good token for `user` of `org` as `role`, valid for an hour.
    static func claims(user: String = "carol", org: String = "lab", role: String = "member", now: Date = Date()) -> [String: Any] {
        [
            "iss": issuer, "aud": [audience, "other"], "sub": "u-123", "preferred_username": user, "org": org, "allot_role": role,
            "iat": Int(now.timeIntervalSince1970), "nbf": Int(now.timeIntervalSince1970) - 5, "exp": Int(now.timeIntervalSince1970) + 3600,
        ]
    }

    /// A JWT with these claims, signed as `alg` with key `kid` (or not at all for `none`).
    func token(_ claims: [String: Any], alg: String = "ES256", kid: String? = "ec-1", signer: P256.Signing.PrivateKey? = nil) throws -> String {
        var header: [String: Any] = ["alg": alg, "typ": "JWT"]
        if let kid { header["kid"] = kid }
        let signingInput =
            Self.b64(try JSONSerialization.data(withJSONObject: header)) + "." + Self.b64(try JSONSerialization.data(withJSONObject: claims))
        let data = Data(signingInput.utf8)
        let signature: Data
        switch alg {
        case "ES256": signature = try (signer ?? self.ec).signature(for: data).rawRepresentation
        case "RS256": signature = try self.rsa.signature(for: data, padding: .insecurePKCS1v1_5).rawRepresentation
        case "HS256": signature = Data(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: Data("secret".utf8))))
        default: signature = Data()
        }
        return signingInput + "." + Self.b64(signature)
    }
}

@Suite("OIDC: the programme's identity provider's JWTs, checked")
struct OIDCTests {
    @Test("a good ES256 or RS256 token names the user, organisation and role from the configured claims")
    func valid() async throws {
        let idp = try TestIdP()
        let verifier = OIDCVerifier(idp.configuration)
        let p = try await verifier.principal(for: try idp.token(TestIdP.claims()))
        #expect(p == Principal(name: "carol", role: .member, org: "lab"))
        let op = try await verifier.principal(for: try idp.token(TestIdP.claims(user: "dan", org: "", role: "operator"), alg: "RS256", kid: "rsa-1"))
        #expect(op == Principal(name: "dan", role: .operator))
    }

    @Test("refused: expired, not yet valid, wrong audience, wrong issuer, bad signature, unknown kid, alg none or HS256, no role")
    func refused() async throws {
        let idp = try TestIdP()
        let verifier = OIDCVerifier(idp.configuration)
        let now = Date()
        var expired = TestIdP.claims()
        expired["exp"] = Int(now.timeIntervalSince1970) - 120
        var early = TestIdP.claims()
        early["nbf"] = Int(now.timeIntervalSince1970) + 600
        var audience = TestIdP.claims()
        audience["aud"] = "someone-else"
        var issuer = TestIdP.claims()
        issuer["iss"] = "https://evil.example"
        var noRole = TestIdP.claims()
        noRole["allot_role"] = "agent"
        var noExpiry = TestIdP.claims()
        noExpiry["exp"] = nil
        let good = try idp.token(TestIdP.claims())
        let tampered = good.split(separator: ".").enumerated().map { i, part in
            i == 1 ? TestIdP.b64(try! JSONSerialization.data(withJSONObject: TestIdP.claims(role: "operator"))) : String(part)
        }.joined(separator: ".")
        let cases: [(String, String, String)] = [
            ("expired", try idp.token(expired), "expired"),
            ("not yet valid", try idp.token(early), "not valid yet"),
            ("wrong audience", try idp.token(audience), "audience"),
            ("wrong issuer", try idp.token(issuer), "issuer"),
            ("signed by another key", try idp.token(TestIdP.claims(), signer: P256.Signing.PrivateKey()), "bad signature"),
            ("claims changed after signing", tampered, "bad signature"),
            ("unknown kid", try idp.token(TestIdP.claims(), kid: "ec-9"), "unknown signing key"),
            ("alg none", try idp.token(TestIdP.claims(), alg: "none"), "not accepted"),
            ("HS256 with a guessable secret", try idp.token(TestIdP.claims(), alg: "HS256"), "not accepted"),
            ("RS256 header on an EC key", try idp.token(TestIdP.claims(), alg: "RS256", kid: "ec-1"), "is not a key for"),
            ("an agent role", try idp.token(noRole), "allot_role"),
            ("no expiry", try idp.token(noExpiry), "no expiry"),
            ("garbage", "a.b.c", "not a JWT"),
        ]
        for (name, token, says) in cases {
            do {
                let p = try await verifier.principal(for: token)
                Issue.record("\(name): accepted as \(p)")
            } catch {
                #expect(error.description.contains(says), "\(name): \(error.description)")
            }
        }
    }

    @Test("a rotated key is found at once: an unknown kid reloads the JWKS")
    func rotation() async throws {
        let idp = try TestIdP()
        try idp.publish(kids: ["ec-1"])
        let verifier = OIDCVerifier(idp.configuration)
        _ = try await verifier.principal(for: try idp.token(TestIdP.claims()))
        let rsaToken = try idp.token(TestIdP.claims(), alg: "RS256", kid: "rsa-1")
        try idp.publish(kids: ["ec-1", "rsa-1"])
        #expect(try await verifier.principal(for: rsaToken).name == "carol")
    }

    @Test("through allotd: a JWT member sees its organisation's jobs only; a refused JWT is a 401 saying why", databaseTests)
    func throughTheAPI() async throws {
        let idp = try TestIdP()
        try await TestDatabase.with { db in
            let w = try await World.make(db, oidc: OIDCVerifier(idp.configuration))
            try await w.app.test(.router) { client in
                let jwt = try idp.token(TestIdP.claims(user: "carol", org: "uni"))
                try await client.execute(uri: "/v1/jobs", method: .get, headers: [.authorization: "Bearer \(jwt)"]) { response in
                    #expect(response.status == .ok)
                    let body = String(buffer: response.body)
                    #expect(body.contains("unisecret-train") && !body.contains("labsecret"))
                }
                var expired = TestIdP.claims()
                expired["exp"] = Int(Date().timeIntervalSince1970) - 3600
                try await client.execute(uri: "/v1/jobs", method: .get, headers: [.authorization: "Bearer \(try idp.token(expired))"]) { response in
                    #expect(response.status == .unauthorized)
                    #expect(String(buffer: response.body).contains("expired"))
                }
                // The same JWT logs in to the page; the session it gets shows uni's jobs, not lab's.
                let cookie = try await client.execute(
                    uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                    body: ByteBuffer(string: "token=\(jwt)")
                ) { response in
                    #expect(response.status == .seeOther)
                    return response.headers[.setCookie] ?? ""
                }
                let session = try #require(cookie.split(separator: ";").first.map(String.init))
                try await client.execute(uri: "/", method: .get, headers: [.cookie: session]) { response in
                    let page = String(buffer: response.body)
                    #expect(page.contains("unisecret-train") && !page.contains("labsecret"))
                }
            }
        }
    }
}
