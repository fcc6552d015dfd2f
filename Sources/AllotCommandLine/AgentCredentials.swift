import Foundation

/// A node's credentials, as `allot nodes add` (or `allot nodes enrol`) writes them for its agent (mode 0600):
/// the bearer token the agent presents to allotd, and the key allotd signs its requests to the agent with.
///
/// ```
/// token=allot_…
/// node-key=…
/// ```
public struct AgentCredentials: Sendable, Hashable {
    public var token: String
    /// The node's signing key, hex.
    public var nodeKey: String

    public init(token: String, nodeKey: String) {
        self.token = token
        self.nodeKey = nodeKey
    }

    public var text: String { "token=\(self.token)\nnode-key=\(self.nodeKey)" }

    public func write(to path: String) throws { try SecretFile.write(self.text, to: path) }

    /// Reads the file; a file without a node key (written before requests were signed) is an error that says what to do.
    public static func read(_ path: String) throws -> AgentCredentials {
        var token: String?
        var key: String?
        for line in try SecretFile.read(path).split(whereSeparator: \.isNewline) {
            let kv = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2 else { continue }
            if kv[0] == "token" { token = kv[1] } else if kv[0] == "node-key" { key = kv[1] }
        }
        guard let token, let key else {
            throw SecretFile.Failure(
                description: "\(path) holds no token= and node-key= lines: enrol the node again (allot nodes enrol NODE --token-file \(path))")
        }
        return AgentCredentials(token: token, nodeKey: key)
    }
}
