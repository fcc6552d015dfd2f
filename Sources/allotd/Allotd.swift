import AllotCore
import AllotServer
import AllotStore
import ArgumentParser
import Foundation
import Hummingbird
import Logging

/// Where the database is: `--database-url`, else `ALLOT_DATABASE_URL`.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "postgres://user:password@host:port/db (default: $ALLOT_DATABASE_URL)")
    var url: String?

    @Option(help: "Log level: trace, debug, info, warning, error.")
    var logLevel: String = ProcessInfo.processInfo.environment["ALLOT_LOG_LEVEL"] ?? "info"

    func database() throws -> Database {
        guard let text = self.url ?? ProcessInfo.processInfo.environment["ALLOT_DATABASE_URL"], !text.isEmpty else {
            throw ValidationError("no database: pass --database-url or set ALLOT_DATABASE_URL")
        }
        let level = Logger.Level(rawValue: self.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "allotd")
        logger.logLevel = level
        do {
            return Database(url: try DatabaseURL(text), logger: logger)
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

@main
struct Allotd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allotd", abstract: "The Allot scheduler daemon.", subcommands: [Migrate.self, Bootstrap.self, Serve.self])
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply Migrations/NNNN_*.sql in order, each once, with checksums.")
    @OptionGroup var db: DatabaseOptions
    @Option(help: "The migrations folder (default: Migrations next to the package, or $ALLOT_MIGRATIONS).")
    var migrations: String?

    func run() async throws {
        let database = try self.db.database()
        let folder = Migrator.locateFolder(self.migrations)
        let files = try Migrator.files(in: folder)
        let applied = try await database.withRunningClient {
            try await database.waitUntilReachable()
            return try await Migrator(database: database).migrate(files)
        }
        print(applied.isEmpty ? "schema up to date (\(files.count) migrations)" : "applied \(applied.joined(separator: ", "))")
    }
}

struct Bootstrap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make the first operator token, once; refuses if one exists.")
    @OptionGroup var db: DatabaseOptions
    @Option(help: "Where to write the token (mode 0600).")
    var tokenFile: String

    func run() async throws {
        let database = try self.db.database()
        let secret = try await database.withRunningClient {
            try await database.waitUntilReachable()
            return try await TokenStore(database: database).bootstrap()
        }
        try writeSecret(secret, to: self.tokenFile)
        print("operator token written to \(self.tokenFile)")
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the API, web page, scheduler, dispatcher and node monitor.")
    @OptionGroup var db: DatabaseOptions
    @Option(help: "Address to listen on, HOST:PORT.")
    var listen: String = "127.0.0.1:8080"
    @Option(help: "Heartbeat timeout before a node is lost, e.g. 30s (default: Policies/ defaults).")
    var heartbeatTimeout: String?
    @Option(help: "Placement strategy: \(ScoringStrategy.allCases.map(\.rawValue).joined(separator: ", ")).")
    var strategy: String = ScoringStrategy.fragmentationAware.rawValue

    func run() async throws {
        var options = ServeOptions()
        guard let colon = self.listen.lastIndex(of: ":"), let port = Int(self.listen[self.listen.index(after: colon)...]) else {
            throw ValidationError("--listen: '\(self.listen)' must be HOST:PORT")
        }
        options.host = String(self.listen[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        options.port = port
        if let text = self.heartbeatTimeout {
            guard let seconds = parseSeconds(text), seconds > 0 else {
                throw ValidationError("--heartbeat-timeout: '\(text)' is not a duration like 30s")
            }
            options.heartbeatTimeoutSeconds = seconds
        }
        guard let strategy = ScoringStrategy(rawValue: self.strategy) else { throw ValidationError("--strategy: unknown '\(self.strategy)'") }
        options.strategy = strategy
        let database = try self.db.database()
        let app = buildAllotd(database: database, options: options, logger: database.logger)
        try await app.runService()
    }
}

/// `30s`, `2m`, `1h`, or plain seconds.
func parseSeconds(_ text: String) -> Int? {
    if let n = Int(text) { return n }
    guard let unit = text.last, let n = Int(text.dropLast()) else { return nil }
    switch unit {
    case "s": return n
    case "m": return n * 60
    case "h": return n * 3600
    default: return nil
    }
}

/// Writes a secret readable by its owner only.
func writeSecret(_ secret: String, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: path, contents: Data((secret + "\n").utf8), attributes: [.posixPermissions: 0o600])
}
