public import AllotStore
import Foundation
public import Logging
public import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// While this allotd leads, whenever the audit log has grown by `everyRecords` records or `interval` has passed
/// since the last one: appends a signed checkpoint of its head (`checkpoint id=… mac=… at=… sig=…`) to a file
/// outside the database, and to allotd's log (journald keeps it), so that `allot audit verify` can tell a
/// truncated log, or one whose newest records were deleted, from a true one.
public struct AuditCheckpointer: Service {
    public let store: AuditStore
    public let path: String
    public let leadership: Leadership
    public let interval: Duration
    public let everyRecords: Int64
    public let logger: Logger

    public init(
        store: AuditStore, path: String, leadership: Leadership, interval: Duration = .seconds(60), everyRecords: Int64 = 1000, logger: Logger
    ) {
        self.store = store
        self.path = path
        self.leadership = leadership
        self.interval = interval
        self.everyRecords = everyRecords
        self.logger = logger
    }

    public func run() async throws {
        var last: Int64?
        var lastAt = ContinuousClock.now
        // Looks often (the head is one indexed row), writes when a checkpoint is due.
        let look = min(self.interval, .seconds(5))
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if self.leadership.isLeader {
                do {
                    if let c = try await self.store.checkpoint(), c.id != last,
                        last == nil || c.id - (last ?? 0) >= self.everyRecords || ContinuousClock.now - lastAt >= self.interval
                    {
                        try Self.append(c.line, to: self.path)
                        self.logger.info("audit checkpoint", metadata: ["checkpoint": "\(c.line)"])
                        last = c.id
                        lastAt = .now
                    }
                } catch {
                    self.logger.warning("audit checkpoint failed", metadata: ["error": "\(error)"])
                }
            }
            try? await Task.sleep(for: look)
        }
    }

    /// Appends one line (O_APPEND: lines are never rewritten), creating the file 0600.
    static func append(_ line: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CheckpointError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count, fsync(fd) == 0 else {
            throw CheckpointError(description: "cannot append to \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The checkpoints in `path` (none when it does not exist).
    static func read(_ path: String) -> [AuditChain.Checkpoint] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(whereSeparator: \.isNewline).compactMap { AuditChain.Checkpoint(line: String($0)) }
    }

    struct CheckpointError: Error, CustomStringConvertible { var description: String }
}
