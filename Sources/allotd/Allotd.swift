import AllotCommandLine
import AllotCore
import AllotFormats
import AllotServer
import AllotStore
import ArgumentParser
import Foundation
import Logging

/// Where the database is: `--database-url`, else `ALLOT_DATABASE_URL`.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "postgres://user:password@host:port/db (default: $ALLOT_DATABASE_URL)")
    var url: String?
    @Option(
        name: .customLong("database-url-file"),
        help: "A file holding the database URL, so its password is in no process's environment (default: $ALLOT_DATABASE_URL_FILE).")
    var urlFile: String?

    @Option(help: "How much to log (default: $ALLOT_LOG_LEVEL, else info).")
    var logLevel: LogLevel = ProcessInfo.processInfo.environment["ALLOT_LOG_LEVEL"].flatMap(LogLevel.init(rawValue:)) ?? .info

    func database() throws -> Database {
        let env = ProcessInfo.processInfo.environment
        var text = self.url
        if text == nil, let file = self.urlFile ?? env["ALLOT_DATABASE_URL_FILE"] {
            do {
                text = try SecretFile.read(file)
            } catch {
                throw ValidationError("--database-url-file: \(error)")
            }
        }
        guard let text = text ?? env["ALLOT_DATABASE_URL"], !text.isEmpty else {
            throw ValidationError("no database: pass --database-url or --database-url-file, or set ALLOT_DATABASE_URL")
        }
        let logger = self.logLevel.bootstrap(label: "allotd")
        do {
            return Database(url: try DatabaseURL(text), logger: logger)
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

/// allotd's secret file: the one thing that lets allotd command agents, kept out of the database.
struct SecretOptions: ParsableArguments {
    @Option(
        name: .customLong("secret-file"),
        help:
            "allotd's secret, made (mode 0600) when missing; every allotd of a cluster reads the same (default: $ALLOT_SECRET_FILE, else /etc/allot/allotd.secret as root, else ~/.config/allot/allotd.secret)."
    )
    var explicit: String?

    var path: String {
        if let explicit { return explicit }
        if let env = ProcessInfo.processInfo.environment["ALLOT_SECRET_FILE"], !env.isEmpty { return env }
        if getuid() == 0 { return "/etc/allot/allotd.secret" }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".config/allot/allotd.secret").path
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
        try SecretFile.write(secret, to: self.tokenFile)
        print("operator token written to \(self.tokenFile)")
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the API, web page, scheduler, dispatcher and node monitor.")
    @OptionGroup var db: DatabaseOptions
    @Option(help: "Address to listen on, HOST:PORT.")
    var listen = HostPort(host: "127.0.0.1", port: 8080)
    @Option(help: "Heartbeat timeout before a node is lost, e.g. 30s; a bare number is minutes (default: Policies/ defaults).")
    var heartbeatTimeout: DurationArgument?
    @Option(help: "Placement strategy: \(ScoringStrategy.allCases.map(\.rawValue).joined(separator: ", ")).")
    var strategy: ScoringStrategy = .fragmentationAware
    @OptionGroup var secret: SecretOptions

    func validate() throws {
        if let t = self.heartbeatTimeout, t.seconds <= 0 { throw ValidationError("--heartbeat-timeout: must be more than 0s") }
    }

    func run() async throws {
        var options = ServeOptions()
        options.host = self.listen.host
        options.port = self.listen.port
        options.heartbeatTimeoutSeconds = self.heartbeatTimeout.map { Int($0.seconds) }
        options.strategy = self.strategy
        options.nodeKeys = try NodeKeys.load(path: self.secret.path)
        let database = try self.db.database()
        try await serveAllotd(database: database, options: options, logger: database.logger)
    }
}
