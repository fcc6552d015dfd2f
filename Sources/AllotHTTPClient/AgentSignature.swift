import Crypto
public import Foundation

/// What allotd's requests to an agent carry instead of a bearer token: `Allot-Signature: v1 t=TIME n=NONCE
/// s=HMAC`, an HMAC-SHA256 with the node's key over the method, the path with its query, the time, a fresh
/// nonce and the body's SHA-256. The agent accepts a request whose signature matches, whose time is within
/// `maxSkew` of its clock and whose nonce it has not seen: a copied request cannot be replayed, changed, or sent
/// by anyone without the key — and the key is in no database (see `NodeKey`).
public enum AgentSignature {
    public static let header = "Allot-Signature"
    /// How far the signer's clock may be from the agent's.
    public static let maxSkew: TimeInterval = 30

    /// The header value for a request.
    public static func sign(method: String, path: String, body: Data, key: Data, at time: Date = Date(), nonce: String = Self.newNonce()) -> String {
        let t = Int64(time.timeIntervalSince1970)
        return "v1 t=\(t) n=\(nonce) s=\(self.mac(method: method, path: path, time: t, nonce: nonce, body: body, key: key))"
    }

    /// Why a request's signature is refused, or nil when it is good. `seen` answers whether a nonce was
    /// already used (and records it).
    public static func problem(
        header: String?, method: String, path: String, body: Data, key: Data, now: Date = Date(), seen: (String) -> Bool
    ) -> String? {
        guard let header else { return "no \(Self.header) header: only allotd may call this agent" }
        var fields: [String: String] = [:]
        let words = header.split(separator: " ")
        guard words.first == "v1" else { return "unknown signature version" }
        for word in words.dropFirst() {
            let kv = word.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
        }
        guard let t = fields["t"].flatMap({ Int64($0) }), let nonce = fields["n"], let signature = fields["s"], nonce.count >= 16, nonce.count <= 64
        else { return "malformed signature" }
        let expected = self.mac(method: method, path: path, time: t, nonce: nonce, body: body, key: key)
        // Compared in constant time, so the answer's timing tells nothing of the expected value.
        guard expected.utf8.count == signature.utf8.count, zip(expected.utf8, signature.utf8).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else {
            return "bad signature"
        }
        guard abs(now.timeIntervalSince1970 - Double(t)) <= self.maxSkew else { return "stale signature (signed at \(t))" }
        if seen(nonce) { return "replayed request" }
        return nil
    }

    public static func newNonce() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }

    static func mac(method: String, path: String, time: Int64, nonce: String, body: Data, key: Data) -> String {
        let bodyHash = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
        let message = "\(method.uppercased())\n\(path)\n\(time)\n\(nonce)\n\(bodyHash)"
        let mac = HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: SymmetricKey(data: key))
        return Data(mac).map { String(format: "%02x", $0) }.joined()
    }
}

/// A node's signing key: HMAC-SHA256 of allotd's secret over the node's name and enrolment. Every allotd with the
/// secret file derives the same key; the database holds only the enrolment number, so a dump of it commands no
/// agent; enrolling a node again (a new number) retires its old key.
public enum NodeKey {
    public static func derive(secret: Data, node: String, enrolment: Int) -> Data {
        Data(HMAC<SHA256>.authenticationCode(for: Data("allot-node-key/v1/\(node)/\(enrolment)".utf8), using: SymmetricKey(data: secret)))
    }

    public static func hex(_ key: Data) -> String { key.map { String(format: "%02x", $0) }.joined() }

    public static func parse(hex text: String) -> Data? {
        let chars = Array(text.utf8)
        guard chars.count >= 32, chars.count % 2 == 0 else { return nil }
        var out = Data()
        for i in stride(from: 0, to: chars.count, by: 2) {
            guard let byte = UInt8(String(decoding: chars[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            out.append(byte)
        }
        return out
    }
}
