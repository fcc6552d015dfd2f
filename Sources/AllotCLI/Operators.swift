import AllotCommandLine
import AllotCore
import AllotFormats
import AllotHTTPClient
import ArgumentParser
import Foundation

struct Nodes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List nodes, show or add one.",
        subcommands: [ListNodes.self, ShowNode.self, AddNode.self, EnrolNode.self, RestoreGPU.self, DeclareLost.self],
        defaultSubcommand: ListNodes.self)
}

struct ListNodes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List nodes with their GPUs and what is in use.")
    @OptionGroup var connection: Connection

    func run() async throws {
        let nodes: [NodeView] = try await self.connection.client().get("/v1/nodes")
        if self.connection.output == .json { return try printJSON(nodes) }
        print(
            table(
                ["NAME", "POOL", "BLOCK", "STATE", "GPUS", "MIG", "USED", "CPUS", "MEMORY", "SHARES", "HEARTBEAT"],
                nodes.map { n in
                    let used = n.usedGPUMilli.values.reduce(0, +)
                    let whole = n.gpus.filter { $0.migProfile == nil }
                    // Each product once, with its memory: "8xH100 (NVIDIA H100 80GB HBM3, 80 GiB)".
                    let kinds = Set(whole.map { "\($0.model) (\($0.productName ?? $0.model), \($0.memoryMiB / 1024) GiB)" }).sorted()
                        .joined(separator: "|")
                    let slices = Dictionary(grouping: n.gpus.compactMap(\.migProfile)) { $0 }.map { "\($0.value.count)x\($0.key)" }.sorted()
                    let unhealthy = whole.filter { $0.health != .healthy }.count
                    return [
                        n.name, n.pool, n.block ?? "-", n.state.rawValue,
                        whole.isEmpty ? "-" : "\(whole.count)x\(kinds)" + (unhealthy > 0 ? " (\(unhealthy) unhealthy)" : ""),
                        slices.isEmpty ? "-" : slices.joined(separator: ","),
                        used % 1000 == 0 ? "\(used / 1000)" : String(format: "%.2f", Double(used) / 1000),
                        "\(n.cpuMilli / 1000)", "\(n.memoryMiB / 1024)G", n.gpuSharing?.rawValue ?? "-", ago(n.lastHeartbeat),
                    ]
                }))
    }
}

/// `allot pools`: what each pool has, by kind of GPU — short model, full product name, memory, MIG profile —
/// with how many are free: what `gpuModel`, `gpuMemory` and `migProfile` can ask. Built from the node list.
struct Pools: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pools", abstract: "List pools with their GPUs by model, memory and MIG profile.")
    @OptionGroup var connection: Connection

    struct Row: Codable, Hashable {
        var pool: String
        var model: String
        var productName: String?
        var memoryMiB: Int
        var migProfile: String?
        var count: Int
        var free: Int
        var nodes: Int
    }

    func run() async throws {
        let nodes: [NodeView] = try await self.connection.client().get("/v1/nodes")
        let rows = Self.rows(nodes)
        if self.connection.output == .json { return try printJSON(rows) }
        print(
            table(
                ["POOL", "MODEL", "PRODUCT", "MEMORY", "MIG", "GPUS", "FREE", "NODES"],
                rows.map { r in
                    [
                        r.pool, r.model, r.productName ?? "-", String(format: "%.0f GiB", Double(r.memoryMiB) / 1024), r.migProfile ?? "-",
                        "\(r.count)", "\(r.free)", "\(r.nodes)",
                    ]
                }))
    }

    /// One row per pool and kind of GPU (a GPU with MIG on counts by its devices), free meaning unheld and healthy
    /// on a node that takes work.
    static func rows(_ nodes: [NodeView]) -> [Row] {
        struct Kind: Hashable {
            var pool: String
            var model: String
            var product: String?
            var memory: Int
            var profile: String?
        }
        var rows: [Kind: Row] = [:]
        var nodesOf: [Kind: Set<String>] = [:]
        for n in nodes {
            for g in n.gpus where g.migMode != "Enabled" || g.migProfile != nil {
                guard g.missingSince == nil else { continue }
                let k = Kind(pool: n.pool, model: g.model, product: g.productName, memory: g.memoryMiB, profile: g.migProfile)
                var row =
                    rows[k]
                    ?? Row(
                        pool: n.pool, model: g.model, productName: g.productName, memoryMiB: g.memoryMiB, migProfile: g.migProfile, count: 0, free: 0,
                        nodes: 0)
                row.count += 1
                if n.state == .ready && g.health != .quarantined && (n.usedGPUMilli["\(g.index)"] ?? 0) == 0 { row.free += 1 }
                rows[k] = row
                nodesOf[k, default: []].insert(n.name)
            }
        }
        return rows.map { k, r in
            var r = r
            r.nodes = nodesOf[k]?.count ?? 0
            return r
        }.sorted { ($0.pool, $0.model, $0.memoryMiB, $0.migProfile ?? "") < ($1.pool, $1.model, $1.memoryMiB, $1.migProfile ?? "") }
    }
}

struct AddNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Register a node and write its agent token.")
    @Argument(help: "The node's name.") var name: String
    @Option(help: "The pool it belongs to.") var pool: String
    @Option(help: "Its network block (switch or rack); gangs prefer one block.") var block: String?
    @Option(help: "Where allotd reaches its agent, http://HOST:PORT (default: what the agent's first registration says; fixed from then on).")
    var agentURL: String?
    @Option(help: "Where to write the agent's credentials (mode 0600): its token and the node's signing key.")
    var tokenFile: String
    @OptionGroup var connection: Connection

    func run() async throws {
        let response: AddNodeResponse = try await self.connection.client().post(
            "/v1/nodes", json: AddNodeRequest(name: self.name, pool: self.pool, block: self.block, agentURL: self.agentURL))
        try AgentCredentials(token: response.token, nodeKey: response.nodeKey).write(to: self.tokenFile)
        if self.connection.output == .json { return try printJSON(["node": response.node, "tokenFile": self.tokenFile]) }
        print("node \(response.node) added to pool \(self.pool); agent credentials written to \(self.tokenFile)")
    }
}

struct EnrolNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enrol",
        abstract: "Enrol a node again: new agent credentials (the old ones stop working at once), and a new agent address if given.")
    @Argument(help: "The node's name.") var name: String
    @Option(help: "Where allotd reaches its agent from now on (default: what the agent's next registration says).") var agentURL: String?
    @Option(help: "Where to write the agent's new credentials (mode 0600).") var tokenFile: String
    @OptionGroup var connection: Connection

    func run() async throws {
        let response: AddNodeResponse = try await self.connection.client().post(
            "/v1/nodes/\(self.name)/enrol", json: EnrolRequest(agentURL: self.agentURL))
        try AgentCredentials(token: response.token, nodeKey: response.nodeKey).write(to: self.tokenFile)
        if self.connection.output == .json { return try printJSON(["node": response.node, "tokenFile": self.tokenFile]) }
        print("node \(response.node) enrolled again; restart its agent with the credentials in \(self.tokenFile)")
    }
}

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Validate or apply Policies/.", subcommands: [ValidatePolicy.self, ApplyPolicy.self])
}

struct ValidatePolicy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate", abstract: "Check Policies/ (a folder or one file); every error with its line.")
    @Argument(help: "Policies/ or one YAML file.") var path: String
    @Option(help: "table or json") var output: OutputFormat = .table

    func run() async throws {
        let policy: Policy
        do {
            policy = try PolicyParser.load(path: self.path)
        } catch {
            if self.output == .json {
                let rows: [[String: String]] = error.issues.map { issue in
                    let line: String = issue.line.map { String($0) } ?? ""
                    return ["file": issue.file ?? "", "line": line, "field": issue.field, "message": issue.message]
                }
                try printJSON(rows)
            } else {
                print(error.description)
            }
            throw ExitCode(1)
        }
        if self.output == .json { return try printJSON(["valid": true]) }
        print(
            "\(self.path): valid (\(policy.pools.count) pools, \(policy.organizations.count) organizations, "
                + "\(policy.organizations.reduce(0) { $0 + $1.allocations.count }) allocations, \(policy.priorityClasses.count) priority classes)")
    }
}

struct ApplyPolicy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "apply", abstract: "Make the cluster's policy match Policies/; prints what changes.")
    @Argument(help: "Policies/ or one YAML file.") var path: String
    @Flag(help: "Print what would change, and change nothing.") var dryRun = false
    @OptionGroup var connection: Connection

    func run() async throws {
        let policy: Policy
        do {
            policy = try PolicyParser.load(path: self.path)
        } catch {
            for issue in error.issues { FileHandle.standardError.write(Data("\(issue)\n".utf8)) }
            throw ExitCode(1)
        }
        let changes: [PolicyChange] = try await self.connection.client().post("/v1/policy" + (self.dryRun ? "?dryRun=true" : ""), json: policy)
        if self.connection.output == .json { return try printJSON(changes) }
        if changes.isEmpty { print("no changes") }
        for c in changes {
            print("\(c.kind.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)) \(c.what)\(c.detail.map { ": \($0)" } ?? "")")
        }
        if self.dryRun { print("(dry run: nothing changed)") }
    }
}

struct Tokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make, list and revoke tokens.", subcommands: [CreateToken.self, ListTokens.self, RevokeToken.self],
        defaultSubcommand: ListTokens.self)
}

struct ListTokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "The tokens you manage (operators: all; org-admins: their organisation's members'), never their secrets.")
    @Flag(help: "Revoked tokens too.") var all = false
    @OptionGroup var connection: Connection

    func run() async throws {
        let tokens: [TokenView] = try await self.connection.client().get("/v1/tokens" + (self.all ? "?all=true" : ""))
        if self.connection.output == .json { return try printJSON(tokens) }
        print(
            table(
                ["ID", "NAME", "ROLE", "ORG", "CREATED", "EXPIRES", "LAST USED", "REVOKED"],
                tokens.map { t in
                    [
                        String(t.id), t.name, t.role.rawValue, t.org ?? t.node.map { "node \($0)" } ?? "-", ago(t.createdAt),
                        t.expiresAt.map { ago($0) } ?? "never", ago(t.lastUsedAt), t.revokedAt.map { ago($0) } ?? "-",
                    ]
                }))
    }
}

struct RevokeToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a token: it stops working at once.")
    @Argument(help: "The token's id (allot tokens list).") var id: Int64
    @OptionGroup var connection: Connection

    func run() async throws {
        let token: TokenView = try await self.connection.client().post("/v1/tokens/\(self.id)/revoke", json: [String: String]())
        if self.connection.output == .json { return try printJSON(token) }
        print("token \(token.id) (\(token.name)) revoked")
    }
}

struct CreateToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Make a token and write it to a file (mode 0600).")
    @Option(help: "Its name (a person or service).") var name: String?
    @Option(help: "member, org-admin, operator, auditor or scraper (reads /metrics only).") var role: Role = .member
    @Option(help: "The organization, for members and org-admins.") var org: String?
    @Option(help: "How long it lives, e.g. 90d (default and maximum: Policies/ defaults.tokenLifetime and tokenMaxLifetime).")
    var expires: DurationArgument?
    @Option(help: "Where to write the token.") var tokenFile: String
    @OptionGroup var connection: Connection

    func run() async throws {
        let role = self.role
        guard role != .agent else {
            throw CLIError("--role: agent tokens are made by `allot nodes add`; choose member, org-admin, operator, auditor or scraper")
        }
        let name = self.name ?? URL(fileURLWithPath: self.tokenFile).deletingPathExtension().lastPathComponent
        let response: CreateTokenResponse = try await self.connection.client().post(
            "/v1/tokens", json: CreateTokenRequest(name: name, role: role, org: self.org, expiresInSeconds: self.expires?.seconds))
        try SecretFile.write(response.token, to: self.tokenFile)
        if self.connection.output == .json { return try printJSON(["name": name, "role": role.rawValue, "tokenFile": self.tokenFile]) }
        print(
            "\(role.rawValue) token '\(name)' (id \(response.id)) written to \(self.tokenFile)"
                + (response.expiresAt.map { "; it expires \(ISO8601DateFormatter().string(from: $0))" } ?? ""))
    }
}

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read or verify the audit log.", subcommands: [ListAudit.self, VerifyAudit.self], defaultSubcommand: ListAudit.self)
}

struct ListAudit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Print audit records.")
    @Option(help: "Only records since this time (ISO 8601).") var since: String?
    @OptionGroup var connection: Connection

    func run() async throws {
        let records: [AuditRecord] = try await self.connection.client().get(
            "/v1/audit" + (self.since.map { "?since=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0)" } ?? ""))
        if self.connection.output == .json { return try printJSON(records) }
        print(
            table(
                ["ID", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME"],
                records.map { [String($0.id), ISO8601DateFormatter().string(from: $0.at), $0.actor, $0.action, $0.target, $0.outcome] }))
    }
}

struct VerifyAudit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Recompute the audit log's chains (SHA-256 and allotd's keyed MAC) and check it against allotd's checkpoints.")
    @Option(help: "A file of checkpoint lines kept elsewhere (a copy of allotd's, or from its log) to check the log against too.")
    var checkpoints: String?
    @OptionGroup var connection: Connection

    func run() async throws {
        let result: AuditVerification
        if let file = self.checkpoints {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw CLIError("cannot read \(file)") }
            let lines = text.split(whereSeparator: \.isNewline).map(String.init).filter { $0.hasPrefix("checkpoint ") }
            result = try await self.connection.client().post("/v1/audit/verify", json: AuditVerifyRequest(checkpoints: lines))
        } else {
            result = try await self.connection.client().get("/v1/audit/verify")
        }
        if self.connection.output == .json {
            try printJSON(result)
        } else if result.intact {
            print("audit log intact: \(result.checked) records, \(result.checkpointsChecked) checkpoints")
        } else {
            print("audit log BROKEN at record \(result.firstBrokenID ?? 0) (of \(result.checked)):")
            for p in result.problems { print("  \(p)") }
        }
        if !result.intact { throw ExitCode(2) }
    }
}
