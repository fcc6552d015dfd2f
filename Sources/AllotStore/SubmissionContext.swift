public import AllotCore
import Foundation
import PostgresNIO

/// One job submitted: the spec, who submits it and the scope they act in (nil: the principal's own).
public struct Submission: Sendable {
    public var spec: JobSpec
    public var principal: Principal
    public var scope: Scope?

    public init(_ spec: JobSpec, by principal: Principal, scope: Scope? = nil) {
        self.spec = spec
        self.principal = principal
        self.scope = scope
    }
}

/// What the submissions of one batch look up — the default pool, a pool's nodes and restriction, organisations,
/// grants, priority classes — read once per batch and transaction, not once per job: a batch of submissions to
/// one pool reads the pool's nodes once.
final class SubmissionContext {
    let tx: Transaction
    private var defaults: (pool: String?, priorityClass: String?)?
    private var poolsOf: [String: [String]] = [:]
    private var nodesOf: [String: (nodes: [NodeSnapshot], models: Set<String>)] = [:]
    private var restrictions: [String: [String]?] = [:]
    private var organizations: [String: Bool] = [:]
    private var grants: [String: String?] = [:]
    private var classes: [String: (String, Int, Int64?, [String], [String])] = [:]

    init(tx: Transaction) { self.tx = tx }

    private func policyDefaults() async throws -> (pool: String?, priorityClass: String?) {
        if let defaults { return defaults }
        let row = try await self.tx.query("SELECT default_pool, priority_class FROM policy_defaults").decode((String?, String?).self).first()
        let found = (pool: row?.0, priorityClass: row?.1)
        self.defaults = found
        return found
    }

    /// The pool named, else the policy's default pool, else the one pool the organisation has an allocation in
    /// force in (Slurm's default partition); where none of those decides, an error naming the choices.
    func pool(_ named: String?, org: String) async throws -> String {
        if let named { return named }
        if let fallback = try await self.policyDefaults().pool { return fallback }
        let pools: [String]
        if let known = self.poolsOf[org] {
            pools = known
        } else {
            pools = try await self.tx.query(
                """
                SELECT DISTINCT pool FROM allocations WHERE org = \(org) AND superseded_at IS NULL
                  AND (valid_from IS NULL OR current_date BETWEEN valid_from AND valid_until)
                ORDER BY pool
                """
            ).decode(String.self).reduce(into: [String]()) { $0.append($1) }
            self.poolsOf[org] = pools
        }
        if pools.count == 1 { return pools[0] }
        if pools.isEmpty { throw StoreError.invalid(field: "pool", message: "is not given, and \(org) has no allocation in force in any pool") }
        throw StoreError.invalid(
            field: "pool",
            message: "is not given and there is no default pool: choose one of \(org)'s pools (\(pools.joined(separator: ", "))) with -p or pool:")
    }

    /// The pool's nodes (those that ever reported) and the GPU models among them.
    func nodes(pool: String) async throws -> (nodes: [NodeSnapshot], models: Set<String>) {
        if let known = self.nodesOf[pool] { return known }
        let nodes = try await ClusterReader(tx: self.tx).nodeSnapshots(pool: pool)
        let found = (nodes, Set(nodes.flatMap { $0.gpus.map(\.model) }))
        self.nodesOf[pool] = found
        return found
    }

    /// The organisations a pool is restricted to (empty: none), or nil for an unknown pool.
    func restriction(pool: String) async throws -> [String]? {
        if let known = self.restrictions[pool] { return known }
        let found = try await self.tx.query("SELECT restricted_to FROM pools WHERE name = \(pool)").decode([String].self).first()
        self.restrictions[pool] = found
        return found
    }

    func organizationExists(_ org: String) async throws -> Bool {
        if let known = self.organizations[org] { return known }
        let found = try await self.tx.query("SELECT 1 FROM organizations WHERE name = \(org)").decode(Int.self).first() != nil
        self.organizations[org] = found
        return found
    }

    /// The projects (JSON) of the organisation's allocation in force in the pool, or nil when it has none.
    func grant(org: String, pool: String) async throws -> String? {
        let key = "\(org)\u{1f}\(pool)"
        if let known = self.grants[key] { return known }
        let found = try await self.tx.query(
            """
            SELECT projects::text FROM allocations WHERE org = \(org) AND pool = \(pool) AND superseded_at IS NULL
              AND (valid_from IS NULL OR current_date BETWEEN valid_from AND valid_until)
            ORDER BY valid_from NULLS LAST LIMIT 1
            """
        ).decode(String.self).first()
        self.grants[key] = found
        return found
    }

    /// The named class, the policy's default class, or (when no classes are declared) `default` at 0: its name,
    /// value, longest time limit, and the organisations and roles it is for (empty: all).
    func priorityClass(_ name: String?) async throws -> (String, Int, Int64?, [String], [String]) {
        var wanted = name
        if wanted == nil { wanted = try await self.policyDefaults().priorityClass }
        guard let wanted else { return ("default", 0, nil, [], []) }
        if let known = self.classes[wanted] { return known }
        let found = try await JobStore.priorityClass(wanted, in: self.tx)
        self.classes[wanted] = found
        return found
    }
}
