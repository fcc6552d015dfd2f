public import AllotCore
import Foundation
import PostgresNIO

/// Nodes and their GPUs: registration by operators, listings, and node loss (a node silent past the heartbeat
/// timeout, or declared lost by an operator).
public struct NodeStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    /// Registers a node in a pool and makes its agent token (returned once). Its agent's address is `agentURL`,
    /// or the one its first registration gives; either way it is fixed from then on. The node's signing key
    /// derives from allotd's secret and enrolment 1.
    public func add(name: String, pool: String, block: String?, agentURL: String? = nil, by actor: Principal) async throws -> String {
        try await self.database.transaction { tx in
            guard try await tx.query("SELECT 1 FROM pools WHERE name = \(pool)").decode(Int.self).first() != nil else {
                throw StoreError.invalid(field: "pool", message: "unknown pool '\(pool)' (apply Policies/ first)")
            }
            try await tx.nodes.insert(name: name, pool: pool, block: block, agentURL: agentURL)
            let (_, secret) = try await tx.tokens.insert(name: "agent:\(name)", role: .agent, org: nil, node: name, createdBy: actor.auditName)
            try await tx.audit.append(
                AuditEntry(actor: actor, action: "node.add", target: "node/\(name)", outcome: "ok", detail: ["pool": pool, "block": block ?? ""]))
            return secret
        }
    }

    public func list() async throws -> [NodeView] {
        try await self.database.read { tx in try await Self.list(in: tx) }
    }

    static func list(in tx: Transaction, only name: String? = nil) async throws -> [NodeView] {
        var nodes: [NodeView] = []
        let rows = try await tx.query(
            """
            SELECT name, pool, block, state::text, agent_url, cpu_milli, memory_mib, last_heartbeat, gpu_sharing FROM nodes
            WHERE \(name)::text IS NULL OR name = \(name) ORDER BY name
            """)
        for try await (name, pool, block, state, url, cpu, memory, heartbeat, sharing) in rows.decode(
            (String, String, String?, String, String?, Int, Int, Date?, String?).self)
        {
            nodes.append(
                NodeView(
                    name: name, pool: pool, block: block, state: try decoded(state, "nodes.state"), agentURL: url, cpuMilli: cpu,
                    memoryMiB: memory, lastHeartbeat: heartbeat, gpus: [], usedGPUMilli: [:]))
            nodes[nodes.count - 1].gpuSharing = sharing.flatMap(GPUSharing.init(rawValue:))
        }
        var index: [String: Int] = [:]
        for (i, n) in nodes.enumerated() { index[n.name] = i }
        let gpus = try await tx.query(
            """
            SELECT node, idx, uuid, model, memory_mib, nvlink_domain, mig_mode, health::text, health_detail, claimed_milli, missing_since,
                   product_name, mig_profile, mig_parent, charge_milli, mig_pending
            FROM gpus WHERE (present OR missing_since IS NOT NULL) AND (\(name)::text IS NULL OR node = \(name)) ORDER BY node, idx
            """)
        for try await row in gpus {
            let (node, idx, uuid, model, memory, domain, mig, health, detail, claimed, missing) = try row.decode(
                (String, Int, String, String, Int, Int?, String?, String, String?, Int, Date?).self)
            guard let i = index[node] else { continue }
            var gpu = GPUInfo(
                index: idx, uuid: uuid, model: model, memoryMiB: memory, nvlinkDomain: domain, migMode: mig,
                health: try decoded(health, "gpus.health"), healthDetail: detail)
            gpu.missingSince = missing
            let c = row.makeRandomAccess()
            gpu.productName = try c[11].decode(String?.self)
            gpu.migProfile = try c[12].decode(String?.self)
            gpu.migParent = try c[13].decode(Int?.self)
            if gpu.migProfile != nil { gpu.chargeMilli = try c[14].decode(Int.self) }
            if try c[15].decode(Bool.self) { gpu.migPending = true }
            nodes[i].gpus.append(gpu)
            if claimed > 0 { nodes[i].usedGPUMilli["\(idx)"] = claimed }
        }
        return nodes
    }

    /// `allot nodes show NODE`: the node, its GPUs, their health history and the jobs running there.
    public func detail(_ node: String) async throws -> NodeDetail {
        try await self.database.read { tx in
            guard let view = try await Self.list(in: tx, only: node).first else { throw StoreError.notFound("node \(node)") }
            let reason = try await tx.query("SELECT state_reason FROM nodes WHERE name = \(node)").decode(String?.self).first() ?? nil
            var events: [GPUHealthEvent] = []
            let rows = try await tx.query(
                """
                SELECT gpu_index, at, from_health::text, to_health::text, cause, xid, job_id, actor
                FROM gpu_health_events WHERE node = \(node) ORDER BY at, id
                """)
            for try await (idx, at, from, to, cause, xid, job, actor) in rows.decode((Int, Date, String, String, String, Int?, Int64?, String).self) {
                events.append(
                    GPUHealthEvent(
                        gpuIndex: idx, at: at, from: try decoded(from, "gpu_health_events.from_health"),
                        to: try decoded(to, "gpu_health_events.to_health"), cause: cause, xid: xid, jobID: job, actor: actor))
            }
            let jobs = try await tx.attempts.liveRanks(on: node, activeOnly: false).map(\.jobID)
            return NodeDetail(node: view, stateReason: reason, healthEvents: events, runningJobs: Array(Set(jobs)).sorted())
        }
    }

    /// Enrols a node again: a new agent token (the old ones are revoked), a new enrolment (so a new signing key),
    /// and the agent's address as given (or as its next registration gives). Returns the token and the enrolment.
    public func enrol(_ node: String, agentURL: String?, by actor: Principal) async throws -> (token: String, enrolment: Int) {
        try await self.database.transaction { tx in
            let enrolment = try await tx.nodes.enrol(node, agentURL: agentURL)
            try await tx.tokens.revokeAgentTokens(node: node)
            let (_, secret) = try await tx.tokens.insert(name: "agent:\(node)", role: .agent, org: nil, node: node, createdBy: actor.auditName)
            try await tx.audit.append(
                AuditEntry(
                    actor: actor, action: "node.enrol", target: "node/\(node)", outcome: "enrolment \(enrolment)",
                    detail: ["agentURL": agentURL ?? "at its first registration"]))
            return (secret, enrolment)
        }
    }

    /// Where allotd reaches a node's agent, and the enrolment its key derives from; nil when no agent has registered.
    public func agentEndpoint(_ node: String) async throws -> (url: String, enrolment: Int)? {
        try await self.database.read { tx in
            guard
                let (url, enrolment) = try await tx.query("SELECT agent_url, enrolment FROM nodes WHERE name = \(node)")
                    .decode((String?, Int).self).first(), let url
            else { return nil }
            return (url, enrolment)
        }
    }

    /// The heartbeat timeout in force (from Policies/ defaults).
    public func heartbeatTimeoutSeconds() async throws -> Int {
        try await self.database.read { tx in
            try await tx.query("SELECT heartbeat_timeout_s FROM policy_defaults").decode(Int.self).first() ?? 30
        }
    }

    // MARK: - Loss

    /// Marks nodes `lost` that have been silent for longer than `timeoutSeconds`, and stops their attempts (ending
    /// `lost`, so the jobs requeue). Silence is measured from the pool's newest heartbeat, not from now, so a stall
    /// on the scheduler's side (allotd or PostgreSQL away) loses nothing. When half of a pool's nodes or more (two at least)
    /// go silent together, that is more likely the network than the nodes: the pool is held instead (nothing is
    /// requeued, its silent nodes take no placements, an audit record and a metric say so) until the nodes return
    /// or an operator declares them lost. "Together" is a window, not an instant — nodes silent for more than half
    /// the timeout count — because heartbeats are spread over their interval: at the moment the first node of a
    /// partition passes the timeout, the rest have been silent almost as long. A pool silent as a whole is held too.
    /// Returns the nodes newly lost and the pools newly held.
    public func markLostNodes(timeoutSeconds: Int) async throws -> (lost: [String], held: [String]) {
        try await self.database.transaction { tx in
            // Judged first without locks: every round, on every node, locking each row waited for every report in
            // flight and held every report back meanwhile (seen under load: the whole control plane queued behind
            // it). Only when there is something to act on is it judged again with the rows locked.
            // Unlocked, only each pool's count, newest heartbeat and the nodes that lag (PostgreSQL sums them up):
            // reading every node every second was a tenth of allotd's time at 10,000 nodes.
            func judged(locked: Bool) async throws -> [Silence.Verdict] {
                guard locked else {
                    let (now, pools) = try await tx.nodes.livenessByPool(timeoutSeconds: timeoutSeconds)
                    return Silence.judge(pools: pools, now: now, timeoutSeconds: Double(timeoutSeconds))
                }
                let (now, nodes) = try await tx.nodes.liveness(locked: true)
                return Silence.judge(nodes.map { ($0.pool, $0.node, $0.lastHeartbeat) }, now: now, timeoutSeconds: Double(timeoutSeconds))
            }
            var verdicts = try await judged(locked: false)
            if verdicts.contains(where: { $0.action != .none }) { verdicts = try await judged(locked: true) }
            var lost: [String] = []
            var held: [String] = []
            for verdict in verdicts {
                switch verdict.action {
                case .none:
                    try await tx.nodes.releaseHold(verdict.pool)
                case .hold(let silent, let why):
                    if try await tx.nodes.hold(verdict.pool, silent: silent) {
                        held.append(verdict.pool)
                        try await tx.audit.append(
                            AuditEntry(
                                actor: .scheduler, action: "pool.hold", target: "pool/\(verdict.pool)",
                                outcome: "\(why): nothing requeued; an operator decides", detail: ["nodes": silent.joined(separator: ",")]))
                    }
                case .lose(let silent):
                    try await tx.nodes.releaseHold(verdict.pool)
                    for node in silent {
                        try await tx.transitions.node(node, .lost(reason: "no heartbeat for \(timeoutSeconds)s", by: .scheduler))
                    }
                    lost += silent
                }
            }
            return (lost, held)
        }
    }

    /// An operator declares a node lost (dead, or silent in a held pool): its attempts end `lost` and requeue,
    /// and its GPUs are released.
    public func declareLost(_ node: String, by actor: Principal) async throws {
        try await self.database.transaction { tx in
            try await tx.transitions.node(node, .lost(reason: "declared lost by \(actor.name)", by: actor))
            try await tx.nodes.releaseHolds(containing: node)
        }
    }
}

/// Which silent nodes are lost and which pools are held (pure, so it is tested on its own).
enum Silence {
    enum Action: Equatable {
        /// Nothing lost, nothing held: any hold of the pool ends.
        case none
        case hold(silent: [String], why: String)
        case lose([String])
    }

    struct Verdict: Equatable {
        var pool: String
        var action: Action
    }

    /// What the judgement needs of a pool: how many nodes report, the newest heartbeat, and the nodes that matter —
    /// those silent over half the timeout measured from the newest, or every node when the pool has one or is
    /// silent as a whole (`matters` says which; the database selects the same ones, `NodesTable.livenessByPool`).
    struct Pool: Equatable {
        var pool: String
        var members: Int
        var newest: Date
        var lagging: [(node: String, lastHeartbeat: Date)]

        static func == (a: Pool, b: Pool) -> Bool {
            a.pool == b.pool && a.members == b.members && a.newest == b.newest
                && a.lagging.map(\.node) == b.lagging.map(\.node) && a.lagging.map(\.lastHeartbeat) == b.lagging.map(\.lastHeartbeat)
        }

        static func matters(lastHeartbeat: Date, members: Int, newest: Date, now: Date, timeoutSeconds: Double) -> Bool {
            members == 1 || now.timeIntervalSince(newest) > timeoutSeconds || newest.timeIntervalSince(lastHeartbeat) > timeoutSeconds / 2
        }
    }

    /// Per pool: its nodes' silence measured from the pool's newest heartbeat; nodes past `timeoutSeconds` are
    /// lost unless half the pool or more (two nodes at least) has been silent for over half the timeout (a partition), or the pool's
    /// newest heartbeat is itself past the timeout (all of it silent): then the pool is held. A pool of one node
    /// has no others to compare with: its node is lost when silent past the timeout.
    static func judge(_ nodes: [(pool: String, node: String, lastHeartbeat: Date)], now: Date, timeoutSeconds: Double) -> [Verdict] {
        self.judge(pools: self.pools(nodes, now: now, timeoutSeconds: timeoutSeconds), now: now, timeoutSeconds: timeoutSeconds)
    }

    /// Every node's heartbeat summed up per pool, as the database does it.
    static func pools(_ nodes: [(pool: String, node: String, lastHeartbeat: Date)], now: Date, timeoutSeconds: Double) -> [Pool] {
        Dictionary(grouping: nodes, by: \.pool).map { pool, members in
            let newest = members.map(\.lastHeartbeat).max()!
            return Pool(
                pool: pool, members: members.count, newest: newest,
                lagging: members.filter {
                    Pool.matters(lastHeartbeat: $0.lastHeartbeat, members: members.count, newest: newest, now: now, timeoutSeconds: timeoutSeconds)
                }.map { ($0.node, $0.lastHeartbeat) }.sorted { $0.node < $1.node })
        }.sorted { $0.pool < $1.pool }
    }

    static func judge(pools: [Pool], now: Date, timeoutSeconds: Double) -> [Verdict] {
        pools.sorted { $0.pool < $1.pool }.map { p in
            let lag = { (n: (node: String, lastHeartbeat: Date)) in p.newest.timeIntervalSince(n.lastHeartbeat) }
            if p.members == 1, let n = p.lagging.first {
                return Verdict(pool: p.pool, action: now.timeIntervalSince(n.lastHeartbeat) > timeoutSeconds ? .lose([n.node]) : .none)
            }
            if now.timeIntervalSince(p.newest) > timeoutSeconds {
                return Verdict(pool: p.pool, action: .hold(silent: p.lagging.map(\.node).sorted(), why: "all \(p.members) nodes silent"))
            }
            let past = p.lagging.filter { lag($0) > timeoutSeconds }.map(\.node).sorted()
            let going = p.lagging.filter { lag($0) > timeoutSeconds / 2 }.map(\.node).sorted()
            // Half the pool or more, and more than one node: a partition (one of two nodes silent is just a dead node).
            if going.count >= 2 && going.count * 2 >= p.members {
                return Verdict(pool: p.pool, action: .hold(silent: going, why: "\(going.count) of \(p.members) nodes silent"))
            }
            // Some nodes fell silent, not most of the pool: the ones past the timeout are lost.
            return Verdict(pool: p.pool, action: past.isEmpty ? .none : .lose(past))
        }
    }
}
