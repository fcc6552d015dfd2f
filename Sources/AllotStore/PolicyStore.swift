public import AllotCore
import Foundation
import PostgresNIO

/// Pools, organisations, allocations, priority classes and defaults, as `Policies/` declares them.
public struct PolicyStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// Makes the database match `policy` in one transaction and returns what changed. Idempotent: applying
    /// the same policy twice changes nothing the second time. With `dryRun`, computes the changes and rolls back.
    /// Pools and organisations that jobs or nodes still use are kept (reported as `kept`), never cascaded away.
    public func apply(_ policy: Policy, by actor: Principal, dryRun: Bool) async throws -> [PolicyChange] {
        struct DryRun: Error { var changes: [PolicyChange] }
        do {
            return try await self.database.transaction { tx in
                let changes = try await self.apply(policy, actor: actor, in: tx)
                if dryRun { throw DryRun(changes: changes) }
                return changes
            }
        } catch let dry as DryRun {
            return dry.changes
        }
    }

    private func apply(_ policy: Policy, actor: Principal, in tx: Transaction) async throws -> [PolicyChange] {
        var changes: [PolicyChange] = []
        try await tx.query("SELECT pg_advisory_xact_lock(7321002)")

        // Pools.
        var pools: [String: Pool] = [:]
        for try await (name, model, restricted, isolate) in try await tx.query(
            "SELECT name, gpu_model, restricted_to, isolate_shared_gpus FROM pools"
        ).decode((String, String?, [String], Bool).self) {
            pools[name] = Pool(name: name, gpuModel: model, restrictedTo: restricted, isolateSharedGPUs: isolate)
        }

        // Organisations first: pools' restrictions name them.
        var orgs = Set<String>()
        var accounts: [String: (String?, [String: String])] = [:]
        for try await (name, account, users) in try await tx.query("SELECT name, account, user_accounts::text FROM organizations").decode(
            (String, String?, String).self)
        {
            orgs.insert(name)
            accounts[name] = (account, (try? JSONDecoder().decode([String: String].self, from: Data(users.utf8))) ?? [:])
        }
        for org in policy.organizations {
            let users = String(decoding: try JSONEncoder().encode(org.userAccounts), as: UTF8.self)
            if !orgs.contains(org.name) {
                try await tx.query(
                    "INSERT INTO organizations (name, account, user_accounts) VALUES (\(org.name), \(org.account), \(users)::jsonb)")
                changes.append(PolicyChange(kind: .added, what: "organization \(org.name)"))
            } else if let old = accounts[org.name], old.0 != org.account || old.1 != org.userAccounts {
                try await tx.query("UPDATE organizations SET account = \(org.account), user_accounts = \(users)::jsonb WHERE name = \(org.name)")
                changes.append(
                    PolicyChange(
                        kind: .changed, what: "organization \(org.name)",
                        detail: "account: \(old.0 ?? "-") → \(org.account ?? "-")\(old.1 == org.userAccounts ? "" : ", user accounts changed")"))
            }
        }
        for pool in policy.pools {
            if let old = pools[pool.name] {
                if old != pool {
                    try await tx.query(
                        """
                        UPDATE pools SET gpu_model = \(pool.gpuModel), restricted_to = \(pool.restrictedTo),
                               isolate_shared_gpus = \(pool.isolateSharedGPUs), updated_at = now() WHERE name = \(pool.name)
                        """)
                    changes.append(PolicyChange(kind: .changed, what: "pool \(pool.name)", detail: Self.describe(old, pool)))
                }
            } else {
                try await tx.query(
                    """
                    INSERT INTO pools (name, gpu_model, restricted_to, isolate_shared_gpus)
                    VALUES (\(pool.name), \(pool.gpuModel), \(pool.restrictedTo), \(pool.isolateSharedGPUs))
                    """)
                changes.append(PolicyChange(kind: .added, what: "pool \(pool.name)"))
            }
        }

        // Allocations: keyed by organisation × pool × window start. A grant is never edited: a change supersedes
        // the version in force and adds the next one, effective now; a removal supersedes it.
        var current: [String: (Int64, Allocation)] = [:]
        let rows = try await tx.query(
            """
            SELECT id, org, pool, guaranteed_gpus, limit_gpus, gpu_hours, to_char(valid_from, 'YYYY-MM-DD'), to_char(valid_until, 'YYYY-MM-DD'),
                   projects::text
            FROM allocations WHERE superseded_at IS NULL
            """)
        for try await (id, org, pool, g, l, h, from, until, projects) in rows.decode(
            (Int64, String, String, Int, Int, Int64, String?, String?, String).self)
        {
            current["\(org)/\(pool)/\(from ?? "monthly")"] = (
                id,
                Allocation(
                    pool: pool, guaranteedGPUs: g, limitGPUs: l, gpuHours: h, validFrom: from, validUntil: until,
                    projects: (try? JSONDecoder().decode([ProjectLimit].self, from: Data(projects.utf8))) ?? [])
            )
        }
        var wanted = Set<String>()
        for org in policy.organizations {
            for a in org.allocations {
                let key = "\(org.name)/\(a.pool)/\(a.validFrom ?? "monthly")"
                wanted.insert(key)
                if let (id, old) = current[key] {
                    if old != a {
                        try await tx.query("UPDATE allocations SET superseded_at = now() WHERE id = \(id)")
                        try await Self.grant(a, to: org.name, by: actor, in: tx)
                        changes.append(PolicyChange(kind: .changed, what: "allocation \(key)", detail: Self.describe(old, a) + " (a new version)"))
                    }
                } else {
                    try await Self.grant(a, to: org.name, by: actor, in: tx)
                    changes.append(
                        PolicyChange(
                            kind: .added, what: "allocation \(key)",
                            detail: "guaranteed \(a.guaranteedGPUs), limit \(a.limitGPUs), \(a.gpuHours) GPU-hours"))
                }
            }
        }
        for (key, (id, _)) in current.sorted(by: { $0.key < $1.key }) where !wanted.contains(key) {
            try await tx.query("UPDATE allocations SET superseded_at = now() WHERE id = \(id)")
            changes.append(PolicyChange(kind: .removed, what: "allocation \(key)", detail: "superseded: kept for the statements"))
        }

        // Priority classes.
        var classes: [String: PriorityClass] = [:]
        for try await (name, value, preemptible, preempts, maxTime, orgs, roles) in try await tx.query(
            "SELECT name, value, preemptible, preempts, max_time_s, organizations, roles FROM priority_classes"
        ).decode((String, Int, Bool, Bool, Int64?, [String], [String]).self) {
            classes[name] = PriorityClass(
                name: name, value: value, preemptible: preemptible, preempts: preempts, maxTimeSeconds: maxTime, organizations: orgs,
                roles: try roles.map { try decoded($0, "priority_classes.roles") })
        }
        for c in policy.priorityClasses {
            if let old = classes[c.name] {
                if old != c {
                    try await tx.query(
                        """
                        UPDATE priority_classes SET value = \(c.value), preemptible = \(c.preemptible), preempts = \(c.preempts),
                               max_time_s = \(c.maxTimeSeconds), organizations = \(c.organizations), roles = \(c.roles.map(\.rawValue))
                        WHERE name = \(c.name)
                        """)
                    changes.append(PolicyChange(kind: .changed, what: "priority class \(c.name)", detail: Self.describe(old, c)))
                }
            } else {
                try await tx.query(
                    """
                    INSERT INTO priority_classes (name, value, preemptible, preempts, max_time_s, organizations, roles)
                    VALUES (\(c.name), \(c.value), \(c.preemptible), \(c.preempts), \(c.maxTimeSeconds), \(c.organizations),
                            \(c.roles.map(\.rawValue)))
                    """)
                changes.append(PolicyChange(kind: .added, what: "priority class \(c.name)", detail: "value \(c.value)"))
            }
        }
        let declaredClasses = Set(policy.priorityClasses.map(\.name))
        for name in classes.keys.sorted() where !declaredClasses.contains(name) {
            try await tx.query("DELETE FROM priority_classes WHERE name = \(name)")
            changes.append(PolicyChange(kind: .removed, what: "priority class \(name)", detail: "queued jobs keep their priority value"))
        }

        // Defaults.
        let d = policy.defaults
        guard (0...1000).contains(d.defragmentMovesPerHour) else {
            throw StoreError.invalid(field: "defaults.defragmentMovesPerHour", message: "must be 0 to 1000, not \(d.defragmentMovesPerHour)")
        }
        guard (0...31_622_400).contains(d.defragmentMinimumRuntimeSeconds) else {
            throw StoreError.invalid(
                field: "defaults.defragmentMinimumRuntimeSeconds", message: "must be 0 to 31622400 seconds, not \(d.defragmentMinimumRuntimeSeconds)")
        }
        let old = try await tx.query(
            "SELECT priority_class, grace_period_s, reclaim_deadline_s, heartbeat_timeout_s, token_lifetime_s, token_max_lifetime_s, budget_time_s, fair_share_half_life_s, default_pool, defragment_moves_per_hour, defragment_min_runtime_s::bigint, replica_restart_limit, replica_restart_window_s FROM policy_defaults"
        ).decode((String?, Int, Int, Int, Int64, Int64, Int64, Int64, String?, Int, Int64, Int, Int).self).first { _ in true }
        var found = old.map { old in
            PolicyDefaults(
                priorityClass: old.0, gracePeriodSeconds: old.1, reclaimDeadlineSeconds: old.2, heartbeatTimeoutSeconds: old.3,
                tokenLifetimeSeconds: old.4, tokenMaxLifetimeSeconds: old.5, budgetTimeSeconds: old.6, fairShareHalfLifeSeconds: old.7, pool: old.8,
                defragmentMovesPerHour: old.9, defragmentMinimumRuntimeSeconds: old.10)
        }
        if let old {
            found?.replicaRestartLimit = old.11
            found?.replicaRestartWindowSeconds = old.12
        }
        if let found, found != d {
            try await tx.query(
                """
                UPDATE policy_defaults SET priority_class = \(d.priorityClass), grace_period_s = \(d.gracePeriodSeconds),
                       reclaim_deadline_s = \(d.reclaimDeadlineSeconds), heartbeat_timeout_s = \(d.heartbeatTimeoutSeconds),
                       token_lifetime_s = \(d.tokenLifetimeSeconds), token_max_lifetime_s = \(d.tokenMaxLifetimeSeconds),
                       budget_time_s = \(d.budgetTimeSeconds), fair_share_half_life_s = \(d.fairShareHalfLifeSeconds), default_pool = \(d.pool),
                       defragment_moves_per_hour = \(d.defragmentMovesPerHour), defragment_min_runtime_s = \(Int(d.defragmentMinimumRuntimeSeconds)),
                       replica_restart_limit = \(d.replicaRestartLimit), replica_restart_window_s = \(max(1, d.replicaRestartWindowSeconds)),
                       updated_by = \(actor.name), updated_at = now()
                """)
            changes.append(
                PolicyChange(
                    kind: .changed, what: "defaults",
                    detail:
                        "priorityClass \(d.priorityClass ?? "-"), pool \(d.pool ?? "-"), gracePeriod \(d.gracePeriodSeconds)s, reclaimDeadline \(d.reclaimDeadlineSeconds)s, heartbeatTimeout \(d.heartbeatTimeoutSeconds)s, budgetTime \(d.budgetTimeSeconds)s, fairShareHalfLife \(d.fairShareHalfLifeSeconds)s, defragmentMovesPerHour \(d.defragmentMovesPerHour), defragmentMinimumRuntime \(d.defragmentMinimumRuntimeSeconds)s, replicaRestartLimit \(d.replicaRestartLimit) per \(d.replicaRestartWindowSeconds)s"
                ))
        }

        // Pools and organisations no longer declared: removed when nothing uses them.
        let declaredPools = Set(policy.pools.map(\.name))
        for name in pools.keys.sorted() where !declaredPools.contains(name) {
            let used =
                try await tx.query(
                    """
                    SELECT (SELECT count(*) FROM nodes WHERE pool = \(name)) + (SELECT count(*) FROM jobs WHERE pool = \(name))
                         + (SELECT count(*) FROM usage_adjustments WHERE pool = \(name))
                    """
                ).decode(Int.self).first { _ in true } ?? 0
            if used > 0 {
                changes.append(PolicyChange(kind: .kept, what: "pool \(name)", detail: "not declared, but nodes, jobs or the ledger use it"))
            } else {
                try await tx.query("DELETE FROM pools WHERE name = \(name)")
                changes.append(PolicyChange(kind: .removed, what: "pool \(name)"))
            }
        }
        let declaredOrgs = Set(policy.organizations.map(\.name))
        for name in orgs.sorted() where !declaredOrgs.contains(name) {
            let used =
                try await tx.query(
                    """
                    SELECT (SELECT count(*) FROM jobs WHERE org = \(name)) + (SELECT count(*) FROM tokens WHERE org = \(name) AND revoked_at IS NULL)
                         + (SELECT count(*) FROM usage_adjustments WHERE org = \(name))
                    """
                ).decode(Int.self).first { _ in true } ?? 0
            if used > 0 {
                changes.append(PolicyChange(kind: .kept, what: "organization \(name)", detail: "not declared, but jobs, tokens or the ledger use it"))
            } else {
                try await tx.query("DELETE FROM organizations WHERE name = \(name)")
                changes.append(PolicyChange(kind: .removed, what: "organization \(name)"))
            }
        }
        try await tx.audit.append(
            AuditEntry(
                actor: actor, action: "policy.apply", target: "policy", outcome: changes.isEmpty ? "unchanged" : "\(changes.count) changes",
                detail: ["changes": changes.map(\.description).joined(separator: "; ")]))
        return changes
    }

    /// The fields that differ between two values, as `field: old → new`.
    /// Adds the next version of a grant, in force from now: a grant is never retroactive (only grants made
    /// before versioning, by the migration, count as in force since always).
    private static func grant(_ a: Allocation, to org: String, by actor: Principal, in tx: Transaction) async throws {
        try await tx.query(
            """
            INSERT INTO allocations (org, pool, guaranteed_gpus, limit_gpus, gpu_hours, valid_from, valid_until, granted_by, version, effective_from,
                                     projects)
            SELECT \(org), \(a.pool), \(a.guaranteedGPUs), \(a.limitGPUs), \(a.gpuHours), \(a.validFrom)::date, \(a.validUntil)::date, \(actor.name),
                   coalesce(max(version), 0) + 1, now(), \(String(decoding: try JSONEncoder().encode(a.projects), as: UTF8.self))::jsonb
            FROM allocations
            WHERE org = \(org) AND pool = \(a.pool) AND coalesce(valid_from, '-infinity'::date) = coalesce(\(a.validFrom)::date, '-infinity'::date)
            """)
    }

    static func describe<T: Encodable>(_ old: T, _ new: T) -> String {
        func fields(_ v: T) -> [String: String] {
            guard let data = try? JSONEncoder().encode(v), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                return [:]
            }
            return object.mapValues { "\($0)" }
        }
        let (a, b) = (fields(old), fields(new))
        return Set(a.keys).union(b.keys).sorted().compactMap { k in
            a[k] == b[k] ? nil : "\(k): \(a[k] ?? "-") → \(b[k] ?? "-")"
        }.joined(separator: ", ")
    }
}
