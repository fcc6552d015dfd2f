import AllotCore
import Foundation
import PostgresNIO

/// The one writer of `nodes`, `gpus`, `gpu_health_events`, `gpu_xid_seen`, `node_downtime` and `pool_holds`: the
/// inventory, each node's state, its GPUs' health history, its downtime and the pools held silent.
struct NodesTable {
    let tx: Transaction

    func insert(name: String, pool: String, block: String?, agentURL: String?) async throws {
        do {
            try await self.tx.query("INSERT INTO nodes (name, pool, block, agent_url) VALUES (\(name), \(pool), \(block), \(agentURL))")
        } catch let error as PSQLError where error.sqlState == "23505" {
            throw StoreError.conflict("node \(name) exists already")
        } catch let error as PSQLError where error.sqlState == "23514" {
            throw StoreError.invalid(field: "name", message: "must be 1–63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        }
    }

    /// The node's lifecycle, locked for this transaction, or notFound.
    func lifecycle(_ name: String) async throws -> NodeLifecycle {
        guard
            let (state, reason, drain) = try await self.tx.query(
                "SELECT state::text, state_reason, drain_id FROM nodes WHERE name = \(name) FOR UPDATE"
            ).decode((String, String?, Int64?).self).first()
        else { throw StoreError.notFound("node \(name)") }
        return NodeLifecycle(name: name, state: try decoded(state, "nodes.state"), reason: reason, drainID: drain)
    }

    /// The node's lifecycle and enrolled agent address, locked for an agent's report: FOR NO KEY UPDATE queues the
    /// node's reports and state changes behind each other but lets placements (FOR KEY SHARE) through. A state change
    /// in the same transaction locks it again FOR UPDATE (`lifecycle`); notFound when there is no such node.
    func reportLock(_ name: String) async throws -> (NodeLifecycle, agentURL: String?) {
        guard
            let (state, reason, drain, url) = try await self.tx.query(
                "SELECT state::text, state_reason, drain_id, agent_url FROM nodes WHERE name = \(name) FOR NO KEY UPDATE"
            ).decode((String, String?, Int64?, String?).self).first()
        else { throw StoreError.notFound("node \(name)") }
        return (NodeLifecycle(name: name, state: try decoded(state, "nodes.state"), reason: reason, drainID: drain), url)
    }

    /// Writes a lifecycle read with `lifecycle` (locked FOR UPDATE: every change of state is).
    func save(_ node: NodeLifecycle) async throws {
        try await self.tx.query(
            """
            UPDATE nodes SET state = \(node.state.rawValue)::node_state, state_reason = \(node.reason), drain_id = \(node.drainID)
            WHERE name = \(node.name)
            """)
    }

    /// When the node's agent last reported (nil if it never did).
    func lastHeartbeat(_ node: String) async throws -> Date? {
        try await self.tx.query("SELECT last_heartbeat FROM nodes WHERE name = \(node)").decode(Date?.self).first() ?? nil
    }

    /// Records an agent's report of liveness and resources. Its address is taken only when none is enrolled yet.
    func heartbeat(_ report: AgentReport) async throws {
        try await self.tx.query(
            """
            UPDATE nodes SET last_heartbeat = now(), agent_url = coalesce(agent_url, \(report.agentURL)),
                   cpu_milli = \(report.cpuMilli), memory_mib = \(report.memoryMiB),
                   gpu_sharing = coalesce(\(report.gpuSharing?.rawValue), gpu_sharing)
            WHERE name = \(report.node)
            """)
    }

    /// Heartbeats that changed nothing, of several nodes at once: only their time moves. A node that is lost, has
    /// never reported, or has live work is left for the full report; the nodes touched are returned.
    func touch(_ names: [String]) async throws -> Set<String> {
        // A node the database holds live work on takes the full path, whatever its last reply said: its report
        // must be checked against that work (`attempt_ranks_by_node` holds exactly the active ranks).
        try await self.tx.query(
            """
            UPDATE nodes n SET last_heartbeat = now() WHERE n.name = ANY(\(names)) AND n.state <> 'lost' AND n.last_heartbeat IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM attempt_ranks r JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
                              WHERE r.node = n.name AND r.state IN ('pending', 'running') AND attempt_is_live(a.state))
            RETURNING n.name
            """
        ).decode(String.self).reduce(into: Set<String>()) { $0.insert($1) }
    }

    /// A new enrolment: its number (the node's key changes with it) and where its agent will be reached.
    func enrol(_ node: String, agentURL: String?) async throws -> Int {
        guard
            let n = try await self.tx.query(
                "UPDATE nodes SET enrolment = enrolment + 1, agent_url = \(agentURL) WHERE name = \(node) RETURNING enrolment"
            ).decode(Int.self).first()
        else { throw StoreError.notFound("node \(node)") }
        return n
    }

    func startDowntime(_ node: String, _ kind: DowntimeKind, reason: String?) async throws {
        try await self.tx.query(
            """
            INSERT INTO node_downtime (node, kind, reason, started_at) VALUES (\(node), \(kind.rawValue)::downtime_kind, \(reason), \(try await self.tx.now()))
            ON CONFLICT DO NOTHING
            """)
    }

    func endDowntime(_ node: String, _ kind: DowntimeKind) async throws {
        try await self.tx.query(
            """
            UPDATE node_downtime SET ended_at = \(try await self.tx.now())
            WHERE node = \(node) AND kind = \(kind.rawValue)::downtime_kind AND ended_at IS NULL
            """)
    }

    /// Of `names`, the nodes that exist, in name order.
    func existing(_ names: [String], excludingLost: Bool = false) async throws -> [String] {
        try await self.tx.query(
            "SELECT name FROM nodes WHERE name = ANY(\(names)) AND (NOT \(excludingLost) OR state <> 'lost') ORDER BY name"
        ).decode(String.self).array()
    }

    /// How many of `names` are ready, locked against a state change until the transaction ends (in name order, as
    /// every lock on several nodes is taken). FOR KEY SHARE: a state change locks the node FOR UPDATE (`lifecycle`)
    /// and waits for this; an agent's report (`reportLock`) does not, nor does it hold a placement up.
    func readyCount(_ names: [String]) async throws -> Int {
        try await self.tx.query("SELECT name FROM nodes WHERE name = ANY(\(names)) AND state = 'ready' ORDER BY name FOR KEY SHARE")
            .decode(String.self).array().count
    }

    /// Draining nodes no live attempt holds a rank on.
    func emptyDraining() async throws -> [String] {
        try await self.tx.query(
            """
            SELECT n.name FROM nodes n
            WHERE n.state = 'draining'
              AND NOT EXISTS (SELECT 1 FROM attempt_ranks r JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
                              WHERE r.node = n.name AND attempt_is_live(a.state))
            ORDER BY n.name
            """
        ).decode(String.self).array()
    }

    /// Nodes that have reported and are not lost, by pool, with their last heartbeats; `locked`: each row locked
    /// until the transaction ends, so no report lands between a verdict on them and its action.
    func liveness(locked: Bool) async throws -> (now: Date, nodes: [(pool: String, node: String, lastHeartbeat: Date)]) {
        let now = try await self.tx.now()
        let nodes = try await self.tx.query(
            """
            SELECT n.pool, n.name, n.last_heartbeat
            FROM nodes n WHERE n.last_heartbeat IS NOT NULL AND n.state <> 'lost' ORDER BY n.name \(unescaped: locked ? "FOR UPDATE" : "")
            """
        ).decode((String, String, Date).self).array().map { (pool: $0.0, node: $0.1, lastHeartbeat: $0.2) }
        return (now, nodes)
    }

    /// The heartbeats of reporting nodes summed up per pool (`Silence.Pool`): the count, the newest, and only the
    /// nodes the judgement needs (`Silence.Pool.matters`, the same test in SQL with a millisecond's slack, so that
    /// rounding never leaves one out; the judgement looks at each again), read without locks.
    func livenessByPool(timeoutSeconds: Int) async throws -> (now: Date, pools: [Silence.Pool]) {
        let now = try await self.tx.now()
        let rows = try await self.tx.query(
            """
            WITH live AS (SELECT pool, name, last_heartbeat FROM nodes WHERE last_heartbeat IS NOT NULL AND state <> 'lost'),
                 p AS (SELECT pool, count(*)::int AS members, max(last_heartbeat) AS newest FROM live GROUP BY pool)
            SELECT p.pool, p.members, p.newest, l.name, l.last_heartbeat
            FROM p LEFT JOIN live l ON l.pool = p.pool
                 AND (p.members = 1 OR extract(epoch FROM now() - p.newest) > \(timeoutSeconds) - 0.001
                      OR extract(epoch FROM p.newest - l.last_heartbeat) > \(timeoutSeconds) / 2.0 - 0.001)
            ORDER BY p.pool, l.name
            """)
        var pools: [Silence.Pool] = []
        for try await (pool, members, newest, node, last) in rows.decode((String, Int, Date, String?, Date?).self) {
            if pools.last?.pool != pool { pools.append(Silence.Pool(pool: pool, members: members, newest: newest, lagging: [])) }
            if let node, let last { pools[pools.count - 1].lagging.append((node, last)) }
        }
        return (now, pools)
    }

    /// How many GPUs (and MIG devices) of the node are present, read without a lock.
    func presentGPUs(_ node: String) async throws -> Int {
        try await self.tx.query("SELECT count(*)::int FROM gpus WHERE node = \(node) AND present").decode(Int.self).first() ?? 0
    }

    /// Holds a pool whose nodes went silent together; true when the hold is new.
    func hold(_ pool: String, silent: [String]) async throws -> Bool {
        try await self.tx.query(
            """
            INSERT INTO pool_holds (pool, silent_nodes) VALUES (\(pool), \(silent))
            ON CONFLICT (pool) DO UPDATE SET silent_nodes = EXCLUDED.silent_nodes RETURNING (xmax = 0)
            """
        ).decode(Bool.self).first() ?? false
    }

    func releaseHold(_ pool: String) async throws {
        try await self.tx.query("DELETE FROM pool_holds WHERE pool = \(pool)")
    }

    func releaseHolds(containing node: String) async throws {
        try await self.tx.query("DELETE FROM pool_holds WHERE \(node) = ANY(silent_nodes)")
    }

    // MARK: - GPUs

    /// Refreshes a node's GPUs from its agent's report. Each physical GPU keeps one slot (`gpus.idx`) for good,
    /// found by its UUID, so claims, health and XIDs stay with it when nvidia-smi's numbering shifts; the agent's
    /// own index is only how the report lists it. XIDs grade a GPU (the application's faults make it suspect, the
    /// hardware's quarantine it), health only worsens here, and every change is recorded with the job that was on
    /// the GPU. A GPU with a UUID that drops out of a report listing others has left the bus: it is marked missing
    /// and quarantined (its work is the infrastructure's loss). Returns the audit records the health changes call
    /// for, and the slots quarantined now, with why.
    func upsertGPUs(_ reported: [GPUInfo], node: String) async throws -> (audit: [AuditEntry], quarantined: [(index: Int, cause: String)]) {
        var before: [Int: GPUHealth] = [:]
        var owner: [Int: String] = [:]  // slot → UUID ("" for a GPU that never had one)
        var wasPresent: Set<Int> = []
        var wasMIGDevice: Set<Int> = []
        var parentOf: [Int: Int] = [:]
        for try await (i, uuid, h, present, profile, parent) in try await self.tx.query(
            "SELECT idx, uuid, health::text, present, mig_profile, mig_parent FROM gpus WHERE node = \(node) ORDER BY idx FOR UPDATE"
        ).decode((Int, String, String, Bool, String?, Int?).self) {
            before[i] = try decoded(h, "gpus.health")
            owner[i] = uuid
            if present { wasPresent.insert(i) }
            if profile != nil { wasMIGDevice.insert(i) }
            if let parent { parentOf[i] = parent }
        }
        // A GPU with MIG on whose devices the report could not name (`nvidia-smi -L` failed) says nothing of its
        // layout: the devices it had stay as they were, and their work runs on.
        let unnamed = Set(
            reported.filter { $0.migMode == "Enabled" && ($0.migDevices ?? []).contains { $0.uuid.isEmpty || $0.profile == nil } }.map(\.uuid))
        let unknownLayout = Set(wasMIGDevice.filter { d in parentOf[d].flatMap { owner[$0] }.map { unnamed.contains($0) } ?? false })
        let devices = Self.withMIGDevices(reported)
        let slots = Self.slots(for: devices.map(\.gpu), owners: owner)
        var gpus = devices.map(\.gpu)
        for k in gpus.indices { gpus[k].index = slots[k] }
        var slotOfUUID: [String: Int] = [:]
        for g in gpus where !g.uuid.isEmpty { slotOfUUID[g.uuid] = g.index }
        let parents = devices.map { $0.parent.flatMap { slotOfUUID[$0] } ?? -1 }
        var events: [(index: Int, from: GPUHealth, to: GPUHealth, cause: String, xid: Int?)] = []
        for (k, gpu) in gpus.enumerated() {
            var current = before[gpu.index] ?? .healthy
            for event in gpu.xids {
                let fresh =
                    try await self.tx.query(
                        "INSERT INTO gpu_xid_seen (node, gpu_index, xid, at) VALUES (\(node), \(gpu.index), \(event.xid), \(event.at)) ON CONFLICT DO NOTHING RETURNING 1"
                    ).decode(Int.self).first() != nil
                guard fresh else { continue }
                let target: GPUHealth? =
                    switch XidEvent.grade(event.xid) {
                    case .hardware: .quarantined
                    case .application: current == .healthy ? .suspect : nil
                    case .informational: nil
                    }
                if let target, target != current {
                    events.append((gpu.index, current, target, "XID \(event.xid): \(event.message)", event.xid))
                    current = target
                }
            }
            if gpu.health == .quarantined && current != .quarantined {
                events.append((gpu.index, current, .quarantined, gpu.healthDetail ?? "reported unhealthy by the agent", nil))
                current = .quarantined
            }
            if current != .healthy && gpu.health != .quarantined { gpus[k].health = current }
            if current == .quarantined && gpus[k].healthDetail == nil { gpus[k].healthDetail = events.last { $0.index == gpu.index }?.cause }
        }
        // Gone from a report that lists others: a GPU with a UUID has fallen off the bus (an empty report is the
        // agent failing to read any, handled below as before).
        let reportedSlots = Set(slots)
        // A MIG device that left the layout was repartitioned away by the operator, not lost: only the work on one
        // is checked (it ended with the device, so it is requeued and credited).
        let heldDevices = Set(
            try await self.tx.query(
                "SELECT DISTINCT gpu_index FROM gpu_claims WHERE node = \(node) AND released_at IS NULL AND gpu_index = ANY(\(Array(wasMIGDevice)))"
            ).decode(Int.self).array())
        let gone =
            reported.isEmpty
            ? []
            : wasPresent.subtracting(reportedSlots).subtracting(unknownLayout).filter {
                !(owner[$0] ?? "").isEmpty && (!wasMIGDevice.contains($0) || heldDevices.contains($0))
            }
            .sorted()
        for slot in gone where before[slot] != .quarantined {
            let why =
                wasMIGDevice.contains(slot)
                ? "MIG device \(owner[slot] ?? "") is gone from the GPU's layout (repartitioned?)"
                : "missing from nvidia-smi's list (\(owner[slot] ?? "")): fallen off the bus?"
            events.append((slot, before[slot] ?? .healthy, .quarantined, why, nil))
        }
        try await self.tx.query(
            """
            INSERT INTO gpus (node, idx, uuid, model, memory_mib, nvlink_domain, mig_mode, health, health_detail, present, product_name,
                              mig_profile, mig_parent, mig_gpu_instance, mig_compute_instance, mig_pending, charge_milli)
            SELECT \(node), g.idx, g.uuid, g.model, g.memory, nullif(g.domain, -1), nullif(g.mig, ''), g.health::gpu_health, nullif(g.detail, ''), true,
                   nullif(g.product, ''), nullif(g.profile, ''), nullif(g.parent, -1), nullif(g.gi, -1), nullif(g.ci, -1), g.pending, g.charge
            FROM unnest(\(slots)::integer[], \(gpus.map(\.uuid))::text[], \(gpus.map(\.model))::text[], \(gpus.map(\.memoryMiB))::integer[],
                        \(gpus.map { $0.nvlinkDomain ?? -1 })::integer[], \(gpus.map { $0.migMode ?? "" })::text[],
                        \(gpus.map(\.health.rawValue))::text[], \(gpus.map { $0.healthDetail ?? "" })::text[],
                        \(gpus.map { $0.productName ?? "" })::text[], \(gpus.map { $0.migProfile ?? "" })::text[], \(parents)::integer[],
                        \(devices.map { $0.instances?.gpu ?? -1 })::integer[], \(devices.map { $0.instances?.compute ?? -1 })::integer[],
                        \(gpus.map { $0.migPending == true })::boolean[], \(gpus.map { $0.chargeMilli ?? 1000 })::integer[])
                 AS g(idx, uuid, model, memory, domain, mig, health, detail, product, profile, parent, gi, ci, pending, charge)
            ON CONFLICT (node, idx) DO UPDATE SET
                uuid = CASE WHEN gpus.uuid = '' THEN EXCLUDED.uuid ELSE gpus.uuid END, model = EXCLUDED.model,
                memory_mib = EXCLUDED.memory_mib, nvlink_domain = EXCLUDED.nvlink_domain,
                mig_mode = EXCLUDED.mig_mode, present = true, missing_since = NULL, product_name = EXCLUDED.product_name,
                mig_profile = EXCLUDED.mig_profile, mig_parent = EXCLUDED.mig_parent, mig_gpu_instance = EXCLUDED.mig_gpu_instance,
                mig_compute_instance = EXCLUDED.mig_compute_instance, mig_pending = EXCLUDED.mig_pending,
                -- A held device's charge stays what its claim was made at (the layout check above requeues its work first).
                charge_milli = CASE WHEN gpus.claimed_milli > 0 THEN gpus.charge_milli ELSE EXCLUDED.charge_milli END,
                -- Health only worsens here: back to healthy is an operator's call (allot nodes restore-gpu).
                health = CASE WHEN gpus.health = 'quarantined' OR (gpus.health = 'suspect' AND EXCLUDED.health = 'healthy')
                              THEN gpus.health ELSE EXCLUDED.health END,
                health_detail = CASE WHEN gpus.health = 'quarantined' OR (gpus.health = 'suspect' AND EXCLUDED.health = 'healthy')
                              THEN gpus.health_detail ELSE EXCLUDED.health_detail END
            """)
        if !gone.isEmpty {
            try await self.tx.query(
                """
                UPDATE gpus SET present = false, missing_since = now(), health = 'quarantined',
                       health_detail = coalesce(CASE WHEN health = 'quarantined' THEN health_detail END,
                                                'missing from nvidia-smi''s list: fallen off the bus?')
                WHERE node = \(node) AND idx = ANY(\(gone)::integer[])
                """)
        }
        let agent = Principal(name: "agent:\(node)", role: .agent, node: node)
        var audit: [AuditEntry] = []
        for e in events {
            try await self.tx.query(
                """
                INSERT INTO gpu_health_events (node, gpu_index, from_health, to_health, cause, xid, job_id, actor)
                VALUES (\(node), \(e.index), \(e.from.rawValue)::gpu_health, \(e.to.rawValue)::gpu_health, \(e.cause), \(e.xid),
                        (SELECT job_id FROM gpu_claims WHERE node = \(node) AND gpu_index = \(e.index) AND released_at IS NULL LIMIT 1),
                        \(agent.name))
                """)
            audit.append(
                AuditEntry(
                    actor: agent, action: "gpu.health", target: "node/\(node)/gpu/\(e.index)", outcome: "\(e.from.rawValue) → \(e.to.rawValue)",
                    detail: ["cause": e.cause]))
        }
        // Any other GPU the report leaves out goes absent, unless live work holds it: then the report cannot take
        // it away (a GPU without a UUID, or a report listing none, is no proof the GPU is gone).
        let held = try await self.tx.query(
            """
            SELECT DISTINCT gpu_index FROM gpu_claims
            WHERE node = \(node) AND released_at IS NULL AND NOT (gpu_index = ANY(\(slots + gone + Array(unknownLayout))::integer[])) ORDER BY 1
            """
        ).decode(Int.self).array()
        for gpu in held {
            audit.append(
                AuditEntry(
                    actor: agent, action: "gpu.missing", target: "node/\(node)/gpu/\(gpu)",
                    outcome: "refused: live work holds it; the report left it out without a health reason"))
        }
        try await self.tx.query(
            """
            UPDATE gpus SET present = false
            WHERE node = \(node) AND present AND NOT (idx = ANY(\(slots + gone + Array(unknownLayout))::integer[]))
              AND NOT (idx = ANY(\(held)::integer[]))
            """)
        // The MIG devices of a GPU quarantined now go with it.
        var quarantined = events.filter { $0.to == .quarantined }.map { (index: $0.index, cause: $0.cause) }
        for q in quarantined {
            for (k, parent) in parents.enumerated() where parent == q.index { quarantined.append((gpus[k].index, "its GPU: \(q.cause)")) }
        }
        return (audit, quarantined)
    }

    /// The report's GPUs followed by their MIG devices as GPUs of their own — what a job takes — each with its
    /// GPU's UUID and its instance ids. A device `-L` named no UUID or profile for cannot be given to CUDA: left
    /// out. A device's slot hint is 100 + 10 × its GPU's index + its own, so devices keep clear of GPUs' slots.
    static func withMIGDevices(_ reported: [GPUInfo]) -> [(gpu: GPUInfo, parent: String?, instances: (gpu: Int, compute: Int)?)] {
        var out: [(gpu: GPUInfo, parent: String?, instances: (gpu: Int, compute: Int)?)] = reported.map { ($0, nil, nil) }
        for gpu in reported where gpu.migMode == "Enabled" {
            for d in gpu.migDevices ?? [] where !d.uuid.isEmpty && d.uuid.utf8.count <= 200 {
                // A profile this version cannot read (a later driver's naming) is listed nowhere and given to no job.
                guard let profile = d.profile, profile.utf8.count <= 40, MIGProfile.isProfile(profile) else { continue }
                var device = GPUInfo(
                    index: 100 + gpu.index * 10 + d.index, uuid: d.uuid, model: gpu.model, memoryMiB: d.memoryMiB, nvlinkDomain: gpu.nvlinkDomain,
                    health: gpu.health, healthDetail: gpu.healthDetail, pciBusID: gpu.pciBusID, minorNumber: gpu.minorNumber)
                device.productName = gpu.productName
                device.migProfile = profile
                device.chargeMilli = MIGProfile.shareMilli(profile: profile, gpuMemoryMiB: gpu.memoryMiB)
                device.migPending = gpu.migPending
                out.append((device, gpu.uuid, (d.gpuInstance, d.computeInstance)))
            }
        }
        return out
    }

    /// The slot of each reported GPU: its own when its UUID has one; else the position the agent lists it at when
    /// no other GPU owns that slot; else the lowest slot no GPU owns. Pure, so the rule is tested on its own.
    static func slots(for reported: [GPUInfo], owners: [Int: String]) -> [Int] {
        var slotOf: [String: Int] = [:]
        for (slot, uuid) in owners where !uuid.isEmpty { slotOf[uuid] = slot }
        var slots = [Int?](repeating: nil, count: reported.count)
        var taken: Set<Int> = []
        for (k, gpu) in reported.enumerated() where !gpu.uuid.isEmpty {
            if let slot = slotOf[gpu.uuid], !taken.contains(slot) {
                slots[k] = slot
                taken.insert(slot)
            }
        }
        // A slot is free for a GPU when nothing in this report took it and no other UUID owns it.
        func free(_ slot: Int, for uuid: String) -> Bool {
            guard !taken.contains(slot) else { return false }
            let owned = owners[slot] ?? ""
            return owned.isEmpty || owned == uuid
        }
        for (k, gpu) in reported.enumerated() where slots[k] == nil {
            var slot = gpu.index >= 0 && free(gpu.index, for: gpu.uuid) ? gpu.index : 0
            while !free(slot, for: gpu.uuid) { slot += 1 }
            slots[k] = slot
            taken.insert(slot)
        }
        return slots.map { $0! }
    }

    /// Returns a GPU to service; false when it was healthy already.
    func restoreGPU(node: String, index: Int, reason: String, actor: Principal) async throws -> Bool {
        guard
            let raw = try await self.tx.query("SELECT health::text FROM gpus WHERE node = \(node) AND idx = \(index) FOR UPDATE").decode(String.self)
                .first()
        else { throw StoreError.notFound("GPU \(index) of node \(node)") }
        let from: GPUHealth = try decoded(raw, "gpus.health")
        guard from != .healthy else { return false }
        // Its MIG devices share its health: they return with it.
        try await self.tx.query(
            "UPDATE gpus SET health = 'healthy', health_detail = NULL WHERE node = \(node) AND (idx = \(index) OR mig_parent = \(index))")
        try await self.tx.query(
            """
            INSERT INTO gpu_health_events (node, gpu_index, from_health, to_health, cause, actor)
            VALUES (\(node), \(index), \(from.rawValue)::gpu_health, 'healthy', \(reason), \(actor.name))
            """)
        return true
    }
}

extension Transaction {
    var nodes: NodesTable { NodesTable(tx: self) }
}
