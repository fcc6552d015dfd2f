import Foundation

#if canImport(Glibc)
    import Glibc
#endif

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
        // Created 0600 from the first byte (never a moment readable by others), and made so if it existed.
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array((secret + "\n").utf8)
        guard fchmod(fd, 0o600) == 0, bytes.withUnsafeBytes({ Foundation.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))")
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
