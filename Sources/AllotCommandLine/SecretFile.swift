import Foundation

/// Token files: written readable by their owner only, read back trimmed. A write that fails is an error, never
/// a silent loss of the only copy of a secret.
public enum SecretFile {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Writes `secret` to `path` (mode 0600), creating the folder if need be.
    public static func write(_ secret: String, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw Failure(description: "cannot make the folder for \(path): \(error.localizedDescription)")
        }
        guard FileManager.default.createFile(atPath: path, contents: Data((secret + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw Failure(description: "cannot write \(path)")
        }
    }

    /// The secret in `path`, trimmed; an error naming the file when it cannot be read or is empty.
    public static func read(_ path: String) throws -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw Failure(description: "cannot read the token file \(path)") }
        let secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !secret.isEmpty else { throw Failure(description: "the token file \(path) is empty") }
        return secret
    }
}
