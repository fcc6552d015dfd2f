public import AllotCore
import Foundation
import PostgresNIO
import Synchronization

/// The pools' node shapes as submissions last read them, kept for a few seconds: at 1,000 nodes reading them
/// took 30 ms of PostgreSQL's time, once per batch. A shape is what "could this job ever run" asks of a pool, and
/// pools change shape when nodes join or leave; a node that joined in the last `lifetime` is seen that much later
/// (its jobs are refused as never fitting meanwhile, with a message that names the shapes asked for).
public final class NodeShapeCache: Sendable {
    let lifetime: Duration
    private let kept = Mutex<[String: (at: ContinuousClock.Instant, shapes: [NodeShape], models: Set<String>)]>([:])

    public init(lifetime: Duration = .seconds(5)) { self.lifetime = lifetime }

    func shapes(pool: String) -> (shapes: [NodeShape], models: Set<String>)? {
        self.kept.withLock { kept in
            guard let entry = kept[pool], ContinuousClock.now - entry.at < self.lifetime else { return nil }
            return (entry.shapes, entry.models)
        }
    }

    func keep(_ found: (shapes: [NodeShape], models: Set<String>), pool: String) {
        self.kept.withLock { $0[pool] = (.now, found.shapes, found.models) }
    }
}

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
/// one pool reads the pool's node shapes once.
final class SubmissionContext {
    let tx: Transaction
    private var defaults: (pool: String?, priorityClass: String?)?
    private var poolsOf: [String: [String]] = [:]
    private var shapesOf: [String: (shapes: [NodeShape], models: Set<String>)] = [:]
    private var restrictions: [String: [String]?] = [:]
    private var organizations: [String: Bool] = [:]
    private var grants: [String: String?] = [:]
    private var classes: [String: (String, Int, Int64?, [String], [String])] = [:]
    private var prefetched: Set<String> = []

    let cache: NodeShapeCache?

    init(tx: Transaction, cache: NodeShapeCache? = nil) {
        self.tx = tx
        self.cache = cache
    }

    /// Reads in one query what a submission by `org` to the pool named (else the default pool) with the class named
    /// (else the default class) is checked against; the lookups below then answer from what it found.
    func prefetch(org: String, pool named: String?, priorityClass className: String?) async throws {
        let key = "\(org)\u{1f}\(named ?? "")\u{1f}\(className ?? "")"
        guard self.prefetched.insert(key).inserted else { return }
        guard
            let row = try await self.tx.query(
                """
                WITH d AS (SELECT default_pool, priority_class FROM policy_defaults
                           UNION ALL SELECT NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM policy_defaults)),
                     p AS (SELECT coalesce(\(named)::text, d.default_pool) AS pool, d.default_pool, d.priority_class FROM d LIMIT 1)
                SELECT p.default_pool, p.priority_class, p.pool, (SELECT restricted_to FROM pools WHERE name = p.pool),
                       EXISTS (SELECT 1 FROM organizations WHERE name = \(org)),
                       (SELECT projects::text FROM allocations WHERE org = \(org) AND pool = p.pool AND superseded_at IS NULL
                          AND (valid_from IS NULL OR current_date BETWEEN valid_from AND valid_until)
                        ORDER BY valid_from NULLS LAST LIMIT 1),
                       c.name, c.value, c.max_time_s, c.organizations, c.roles
                FROM p LEFT JOIN priority_classes c ON c.name = coalesce(\(className)::text, p.priority_class)
                """
            ).decode((String?, String?, String?, [String]?, Bool, String?, String?, Int?, Int64?, [String]?, [String]?).self).first()
        else { return }
        let (defaultPool, defaultClass, pool, restricted, orgExists, grant, name, value, maxTime, orgs, roles) = row
        self.defaults = (defaultPool, defaultClass)
        self.organizations[org] = orgExists
        if let pool {
            self.restrictions.updateValue(restricted, forKey: pool)
            self.grants.updateValue(grant, forKey: "\(org)\u{1f}\(pool)")
        }
        if let name, let value { self.classes[name] = (name, value, maxTime, orgs ?? [], roles ?? []) }
    }

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

    /// The pool's node shapes (of the nodes that ever reported) and the GPU models among them.
    func shapes(pool: String) async throws -> (shapes: [NodeShape], models: Set<String>) {
        if let known = self.shapesOf[pool] ?? self.cache?.shapes(pool: pool) { return known }
        let shapes = try await ClusterReader(tx: self.tx).nodeShapes(pool: pool)
        // Short models and full product names: a job may name either (a full name is kept as given).
        let found = (shapes, Set(shapes.flatMap { $0.node.gpus.flatMap { [$0.model] + ($0.productName.map { [$0] } ?? []) } }))
        self.shapesOf[pool] = found
        if !shapes.isEmpty { self.cache?.keep(found, pool: pool) }
        return found
    }

    /// The organisations a pool is restricted to (empty: none), or nil for an unknown pool.
    func restriction(pool: String) async throws -> [String]? {
        if let known = self.restrictions[pool] { return known }
        let found = try await self.tx.query("SELECT restricted_to FROM pools WHERE name = \(pool)").decode([String].self).first()
        self.restrictions.updateValue(found, forKey: pool)
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
        self.grants.updateValue(found, forKey: key)
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
