import AllotCommandLine
import AllotHTTPClient
public import Foundation

/// allotd's secret and the node keys it derives (see `NodeKey`): the one thing, kept in a file and never in the
/// database, that lets allotd command agents. Every allotd of a cluster reads the same file.
public struct NodeKeys: Sendable {
    let secret: Data

    public init(secret: Data) { self.secret = secret }

    /// The secret in `path` (hex), made there (mode 0600) when the file does not exist yet.
    public static func load(path: String) throws -> NodeKeys {
        if FileManager.default.fileExists(atPath: path) {
            guard let secret = NodeKey.parse(hex: try SecretFile.read(path)) else {
                throw SecretFile.Failure(description: "\(path) does not hold allotd's secret (64 hex digits)")
            }
            return NodeKeys(secret: secret)
        }
        var rng = SystemRandomNumberGenerator()
        let secret = Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })
        try SecretFile.write(NodeKey.hex(secret), to: path)
        return NodeKeys(secret: secret)
    }

    /// A throwaway secret, for tests that run allotd in process.
    public static func ephemeral() -> NodeKeys {
        var rng = SystemRandomNumberGenerator()
        return NodeKeys(secret: Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }))
    }

    public func key(node: String, enrolment: Int) -> Data { NodeKey.derive(secret: self.secret, node: node, enrolment: enrolment) }

    /// An attempt's step key: what the agents of a batch job's nodes sign its steps with. Derived from the
    /// attempt's launch id, so every dispatch of any of its ranks (and every allotd) gives the same one.
    public func stepKey(launchID: String) -> Data { NodeKey.derive(secret: self.secret, node: "steps/\(launchID)", enrolment: 1) }

    /// The key of the audit log's MAC chain and its checkpoints.
    public var auditKey: Data { NodeKey.derive(secret: self.secret, node: "audit-log", enrolment: 1) }

    /// A client for a node's agent that signs every request with the node's key.
    func agent(_ url: String, node: String, enrolment: Int, timeout: Duration) -> APIClient {
        APIClient(agent: url, key: self.key(node: node, enrolment: enrolment), timeout: timeout)
    }
}
