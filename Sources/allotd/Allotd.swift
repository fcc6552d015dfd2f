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

    /// The database, with the audit log's key (from allotd's secret; a command that writes no audit record may
    /// go without one).
    func database(nodeKeys: NodeKeys = .ephemeral()) throws -> Database {
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
            return Database(url: try DatabaseURL(text), logger: logger, auditKey: nodeKeys.auditKey)
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

/// The programme's identity provider, whose JWTs allotd accepts as bearer tokens (and as the page's login).
struct OIDCOptions: ParsableArguments {
    @Option(help: "The identity provider's issuer (the JWTs' iss); with it, --oidc-audience and --oidc-jwks.") var oidcIssuer: String?
    @Option(help: "The audience the JWTs must name (aud).") var oidcAudience: String?
    @Option(help: "Its signing keys: a JWKS file, or its https:// URL (re-read every 5 minutes).") var oidcJwks: String?
    @Option(help: "The claim that names the user.") var oidcUserClaim = "preferred_username"
    @Option(help: "The claim that names the organisation.") var oidcOrgClaim = "org"
    @Option(help: "The claim that names the role (member, org-admin, operator or auditor).") var oidcRoleClaim = "allot_role"

    func configuration() throws -> OIDCConfiguration? {
        guard let issuer = self.oidcIssuer else {
            if self.oidcAudience != nil || self.oidcJwks != nil {
                throw ValidationError("--oidc-issuer is needed with --oidc-audience and --oidc-jwks")
            }
            return nil
        }
        guard let audience = self.oidcAudience, let jwks = self.oidcJwks else {
            throw ValidationError("--oidc-issuer needs --oidc-audience and --oidc-jwks")
        }
        return OIDCConfiguration(
            issuer: issuer, audience: audience, jwks: jwks, userClaim: self.oidcUserClaim, orgClaim: self.oidcOrgClaim, roleClaim: self.oidcRoleClaim)
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
    @Option(
        help:
            "The role allotd serves as: granted the tables, but only to read and append the audit log. Migrate as the schema's owner, serve as this role."
    )
    var appRole: String?

    func run() async throws {
        let database = try self.db.database()
        let folder = Migrator.locateFolder(self.migrations)
        let files = try Migrator.files(in: folder)
        let appRole = self.appRole
        let applied = try await database.withRunningClient {
            try await database.waitUntilReachable()
            let applied = try await Migrator(database: database).migrate(files)
            if let appRole { try await Migrator(database: database).grant(to: appRole) }
            return applied
        }
        print(applied.isEmpty ? "schema up to date (\(files.count) migrations)" : "applied \(applied.joined(separator: ", "))")
        if let appRole { print("granted \(appRole): the tables, and the audit log to read and append only") }
    }
}

struct Bootstrap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make the first operator token, once; refuses if one exists.")
    @OptionGroup var db: DatabaseOptions
    @Option(help: "Where to write the token (mode 0600).")
    var tokenFile: String
    @OptionGroup var secret: SecretOptions

    func run() async throws {
        let database = try self.db.database(nodeKeys: try NodeKeys.load(path: self.secret.path))
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
    @OptionGroup var oidc: OIDCOptions
    @Option(help: "Where allotd appends the audit log's signed checkpoints, outside the database (default: beside the secret file).")
    var auditCheckpoints: String?
    @Option(help: "Write an audit checkpoint when the log has grown by this many records…")
    var auditCheckpointRecords: Int = 1000
    @Option(help: "…or when this long has passed since the last one (e.g. 60s; a bare number is minutes).")
    var auditCheckpointInterval = DurationArgument(seconds: 60)

    func validate() throws {
        if let t = self.heartbeatTimeout, t.seconds <= 0 { throw ValidationError("--heartbeat-timeout: must be more than 0s") }
        if self.auditCheckpointRecords < 1 { throw ValidationError("--audit-checkpoint-records: must be at least 1") }
        if self.auditCheckpointInterval.seconds < 1 { throw ValidationError("--audit-checkpoint-interval: must be at least 1s") }
    }

    func run() async throws {
        var options = ServeOptions()
        options.host = self.listen.host
        options.port = self.listen.port
        options.heartbeatTimeoutSeconds = self.heartbeatTimeout.map { Int($0.seconds) }
        options.strategy = self.strategy
        options.nodeKeys = try NodeKeys.load(path: self.secret.path)
        options.oidc = try self.oidc.configuration()
        options.auditCheckpoints =
            self.auditCheckpoints
            ?? URL(fileURLWithPath: self.secret.path).deletingLastPathComponent().appendingPathComponent("audit.checkpoints").path
        options.auditCheckpointRecords = Int64(self.auditCheckpointRecords)
        options.auditCheckpointInterval = .seconds(self.auditCheckpointInterval.seconds)
        let database = try self.db.database(nodeKeys: options.nodeKeys)
        try await serveAllotd(database: database, options: options, logger: database.logger)
    }
}
