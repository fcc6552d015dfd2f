import AllotCore
import AllotDatabaseTesting
import AllotFormats
import AllotServer
import AllotStore
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore

/// Everyone who may call allotd, as the authorization matrix walks them: "this" organisation is `lab`,
/// "another" is `uni`; "this node" is n1.
enum Caller: String, CaseIterable, Sendable, CustomStringConvertible {
    case none, member, otherMember, orgAdmin, otherOrgAdmin, `operator`, auditor, agent, otherAgent, scraper
    var description: String { self.rawValue }

    /// The organisation whose data must never reach this caller (nil: one that sees all, or none).
    var foreignMarker: String? {
        switch self {
        case .member, .orgAdmin: "unisecret"
        case .otherMember, .otherOrgAdmin: "labsecret"
        default: nil
        }
    }
}

/// A programme of two organisations with jobs, tokens and nodes, behind allotd's real router on a real database.
/// Every name, command and owner of an organisation carries its marker (`labsecret`, `unisecret`), so a body
/// that leaks one is found by looking for the other's.
struct World {
    let db: Database
    let app: Application<RouterResponder<AllotRequestContext>>
    let tokens: [Caller: String]
    let labJob: Int64
    let uniJob: Int64
    static let op = Principal(name: "op", role: .operator)

    static func make(_ db: Database, oidc: OIDCVerifier? = nil) async throws -> World {
        _ = try await PolicyStore(database: db).apply(Self.policy, by: Self.op, dryRun: false)
        var tokens: [Caller: String] = [:]
        let store = TokenStore(database: db)
        tokens[.operator] = try await store.bootstrap()
        tokens[.member] = try await store.create(name: "alice-labsecret", role: .member, org: "lab", actor: Self.op).token
        tokens[.otherMember] = try await store.create(name: "bob-unisecret", role: .member, org: "uni", actor: Self.op).token
        tokens[.orgAdmin] = try await store.create(name: "admin-labsecret", role: .orgAdmin, org: "lab", actor: Self.op).token
        tokens[.otherOrgAdmin] = try await store.create(name: "admin-unisecret", role: .orgAdmin, org: "uni", actor: Self.op).token
        tokens[.auditor] = try await store.create(name: "audit", role: .auditor, org: nil, actor: Self.op).token
        tokens[.scraper] = try await store.create(name: "prometheus", role: .scraper, org: nil, actor: Self.op).token
        for (caller, node) in [(Caller.agent, "n1"), (.otherAgent, "n2")] {
            tokens[caller] = try await NodeStore(database: db).add(name: node, pool: "h200", block: nil, by: Self.op)
            _ = try await AgentStore(database: db).report(Self.report(node), from: Principal(name: "agent:\(node)", role: .agent, node: node))
        }
        let jobs = JobStore(database: db)
        let lab = try await jobs.submit(
            try Self.spec("name: labsecret-train\norg: lab\ncommand: echo labsecret-command"),
            by: Principal(name: "alice-labsecret", role: .member, org: "lab")
        ) { _, _ in nil }
        let uni = try await jobs.submit(
            try Self.spec("name: unisecret-train\norg: uni\ncommand: echo unisecret-command"),
            by: Principal(name: "bob-unisecret", role: .member, org: "uni")
        ) { _, _ in nil }
        // Tokens are kept as allotd keeps them: while the database's notices of changes are heard (the listener
        // ends with the test's database).
        let cache = TokenCache()
        Task { try await db.listen(TokenCache.channel, listening: { cache.listening(true) }, received: { cache.forget() }) }
        for _ in 0..<100 where cache.begin() == nil { try await Task.sleep(for: .milliseconds(20)) }
        let router = API(database: db, wake: Wakeup(), oidc: oidc, tokenCache: cache, logger: db.logger).router()
        return World(db: db, app: Application(router: router), tokens: tokens, labJob: lab, uniJob: uni)
    }

    static let policy = Policy(
        pools: [Pool(name: "h200")],
        organizations: [
            Organization(name: "lab", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 16, gpuHours: 100)]),
            Organization(name: "uni", allocations: [Allocation(pool: "h200", guaranteedGPUs: 8, limitGPUs: 16, gpuHours: 100)]),
        ],
        priorityClasses: [PriorityClass(name: "standard", value: 100)],
        defaults: PolicyDefaults(priorityClass: "standard"))

    static func spec(_ yaml: String) throws -> JobSpec { try JobSpecParser.parse("pool: h200\ngpusPerNode: 1\n" + yaml) }

    static func report(_ node: String) -> AgentReport {
        AgentReport(
            node: node, agentURL: "http://127.0.0.1:1", cpuMilli: 8000, memoryMiB: 65536,
            gpus: (0..<8).map { GPUInfo(index: $0, uuid: "\(node)-g\($0)", model: "H200", memoryMiB: 1, minorNumber: $0) }, ranks: [])
    }

    func headers(_ caller: Caller) -> HTTPFields {
        guard let token = self.tokens[caller] else { return [:] }
        return [.authorization: "Bearer \(token)"]
    }

    // Fresh things for a request that changes what it names, so that every caller meets the same state.

    func freshNode() async throws -> String {
        let name = "x\(UUID().uuidString.prefix(8).lowercased())"
        _ = try await NodeStore(database: self.db).add(name: name, pool: "h200", block: nil, by: Self.op)
        return name
    }

    func freshLabJob() async throws -> Int64 {
        try await JobStore(database: self.db).submit(
            try Self.spec("name: labsecret-more\norg: lab\ncommand: echo labsecret-command"),
            by: Principal(name: "alice-labsecret", role: .member, org: "lab")
        ) { _, _ in nil }
    }

    func freshLabToken() async throws -> Int64 {
        try await TokenStore(database: self.db).create(
            name: "t\(UUID().uuidString.prefix(8).lowercased())-labsecret", role: .member, org: "lab", actor: Self.op
        )
        .id
    }
}
