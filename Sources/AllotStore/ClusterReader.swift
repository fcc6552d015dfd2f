import AllotCore
import Foundation
import PostgresNIO

/// The cluster as the placement core sees it, read inside a caller's transaction: nodes with what live attempts
/// hold on them, the queue, the running attempts. Reads only; shared by the scheduler's snapshot and by
/// submission's "could it ever fit".
struct ClusterReader {
    let tx: Transaction

    /// Nodes whose agents have reported, with what live attempts hold on them and when their next maintenance
    /// window starts. Nodes that never reported are left out: nothing is known of their GPUs yet. The silent nodes
    /// of a held pool are seen as cordoned: whatever was placed there could not be dispatched.
    /// The pool's nodes that ever reported, grouped by shape (CPU, memory, GPU models and NVLink domains in index
    /// order), with how many of each: one query and a handful of rows whatever the pool's size, for the checks of
    /// submissions. Usage, health and state are left out: those ask what could ever fit.
    func nodeShapes(pool: String) async throws -> [NodeShape] {
        let rows = try await self.tx.query(
            """
            SELECT cpu_milli, memory_mib, models, domains, products, memories, profiles, count(*)::int FROM (
              SELECT n.cpu_milli, n.memory_mib,
                     coalesce(array_agg(g.model ORDER BY g.idx) FILTER (WHERE g.idx IS NOT NULL), '{}') AS models,
                     coalesce(array_agg(coalesce(g.nvlink_domain, -1) ORDER BY g.idx) FILTER (WHERE g.idx IS NOT NULL), '{}') AS domains,
                     coalesce(array_agg(coalesce(g.product_name, '') ORDER BY g.idx) FILTER (WHERE g.idx IS NOT NULL), '{}') AS products,
                     coalesce(array_agg(g.memory_mib ORDER BY g.idx) FILTER (WHERE g.idx IS NOT NULL), '{}') AS memories,
                     coalesce(array_agg(coalesce(g.mig_profile, '') ORDER BY g.idx) FILTER (WHERE g.idx IS NOT NULL), '{}') AS profiles
              FROM nodes n LEFT JOIN gpus g ON g.node = n.name AND g.present
                AND (g.mig_profile IS NOT NULL OR g.mig_mode IS DISTINCT FROM 'Enabled')
              WHERE n.last_heartbeat IS NOT NULL AND n.pool = \(pool)
              GROUP BY n.name, n.cpu_milli, n.memory_mib) s
            GROUP BY cpu_milli, memory_mib, models, domains, products, memories, profiles
            """)
        var shapes: [NodeShape] = []
        for try await (cpu, memory, models, domains, products, memories, profiles, count) in rows.decode(
            (Int, Int, [String], [Int], [String], [Int], [String], Int).self)
        {
            let gpus = models.indices.map { i in
                let product = products[i].isEmpty ? nil : products[i]
                let profile = profiles[i].isEmpty ? nil : profiles[i]
                return GPUSlot(
                    index: i, model: models[i], nvlinkDomain: domains[i] < 0 ? nil : domains[i], productName: product,
                    memoryMiB: GPUMemory.forMatching(reportedMiB: memories[i], productName: product, migProfile: profile), migProfile: profile)
            }
            shapes.append(
                NodeShape(
                    node: NodeSnapshot(
                        name: "shape-\(shapes.count)", pool: pool, block: nil, state: .ready, cpuMilli: cpu, memoryMiB: memory, gpus: gpus),
                    count: count))
        }
        return shapes
    }

    /// A GPU slot as placement sees it: its columns (spliced unescaped: constants), where they come from, which
    /// slots take work (a GPU with MIG on is its devices; one whose MIG mode changes at its next reset takes none),
    /// and the decoding. A MIG device is as healthy as its GPU, whose row is looked up for MIG devices only (a
    /// join of every GPU with its parent made the whole-cluster read cross PostgreSQL's JIT threshold).
    static let slotColumns = """
        g.node, g.idx, g.model, g.nvlink_domain,
        CASE WHEN g.mig_parent IS NULL THEN g.health::text ELSE coalesce(
          (SELECT CASE WHEN pg.health = 'quarantined' THEN 'quarantined' WHEN pg.health = 'suspect' AND g.health = 'healthy' THEN 'suspect'
                  ELSE g.health::text END
           FROM gpus pg WHERE pg.node = g.node AND pg.idx = g.mig_parent), g.health::text) END,
        g.claimed_milli, g.product_name, g.memory_mib, g.mig_profile, g.charge_milli
        """
    static let slotsFrom = "FROM gpus g JOIN nodes n ON n.name = g.node"
    /// (A device of a GPU still held whole — MIG turned on under running work — waits until that work ends.)
    static let schedulableSlot = """
        NOT g.mig_pending AND (g.mig_profile IS NOT NULL OR g.mig_mode IS DISTINCT FROM 'Enabled')
          AND (g.mig_parent IS NULL OR NOT EXISTS (SELECT 1 FROM gpus pg WHERE pg.node = g.node AND pg.idx = g.mig_parent AND pg.claimed_milli <> 0))
        """
    /// The Unix account a job's ranks run as (the dispatcher's rule): of `j` and its organisation `o`.
    static let accountOf = "coalesce(o.user_accounts ->> j.owner, o.account, 'allot-' || j.org)"

    static func slot(_ row: PostgresRow) throws -> (node: String, slot: GPUSlot) {
        let (node, idx, model, domain, health, claimed, product, memory, profile, charge) = try row.decode(
            (String, Int, String, Int?, String, Int, String?, Int, String?, Int).self)
        return (
            node,
            GPUSlot(
                index: idx, model: model, nvlinkDomain: domain, health: try decoded(health, "gpus.health"), usedMilli: claimed,
                productName: product, memoryMiB: GPUMemory.forMatching(reportedMiB: memory, productName: product, migProfile: profile),
                migProfile: profile, chargeMilli: charge)
        )
    }

    func nodeSnapshots(pool: String? = nil) async throws -> [NodeSnapshot] {
        try await self.withMaintenance(self.nodes(pool: pool, names: nil))
    }

    /// Every node as `nodeSnapshots()` reads it, through `cache`: only the nodes changed since the cache was read
    /// (cluster_changes) are read again — all of them when the cache is empty, read whole longer ago than its
    /// limit, kept under another leader's term (`epoch`), or a change concerned every node. A change is new when the transaction that logged it was not visible in the snapshot
    /// the cache was read in (PostgreSQL's own visibility test, `pg_visible_in_snapshot`): a transaction still
    /// open then is read once it has committed, and nothing seen then is read again.
    func nodeSnapshots(cache: ClusterCache, epoch: Int64?) async throws -> [NodeSnapshot] {
        let (kept, ticket) = cache.take(epoch: epoch)
        var changed: Set<String>?
        if let kept {
            var names: Set<String> = []
            var everywhere = false
            let rows = try await self.tx.query(
                """
                SELECT DISTINCT node FROM cluster_changes
                WHERE xid >= pg_snapshot_xmin(\(kept.horizon)::pg_snapshot) AND NOT pg_visible_in_snapshot(xid, \(kept.horizon)::pg_snapshot)
                """)
            for try await node in rows.decode(String?.self) {
                if let node { names.insert(node) } else { everywhere = true }
            }
            if !everywhere { changed = names }
        }
        let horizon = try await self.tx.query("SELECT pg_current_snapshot()::text").decode(String.self).first { _ in true }
        var nodes: [String: NodeSnapshot]
        if let kept, let changed {
            nodes = kept.nodes
            let fresh = changed.isEmpty ? [:] : try await self.nodes(pool: nil, names: Array(changed))
            for name in changed { nodes[name] = fresh[name] }
        } else {
            nodes = try await self.nodes(pool: nil, names: nil)
        }
        if let horizon {
            cache.keep(nodes, horizon: horizon, epoch: epoch, wholeAt: changed == nil ? nil : kept?.wholeAt, reread: changed?.count, ticket: ticket)
        }
        return try await self.withMaintenance(nodes)
    }

    /// Nodes whose agents have reported (of `pool`, of `names`), with their schedulable GPUs and what live ranks
    /// hold of their CPU and memory; maintenance windows are not read here (the time to one changes by itself).
    private func nodes(pool: String?, names: [String]?) async throws -> [String: NodeSnapshot] {
        var nodes: [String: NodeSnapshot] = [:]
        let rows = try await self.tx.query(
            """
            SELECT name, pool, block,
              CASE WHEN state = 'ready' AND EXISTS (SELECT 1 FROM pool_holds h WHERE nodes.name = ANY (h.silent_nodes))
                THEN 'cordoned' ELSE state::text END,
              cpu_milli, memory_mib, gpu_sharing = 'mps' FROM nodes
            WHERE last_heartbeat IS NOT NULL AND (\(pool)::text IS NULL OR pool = \(pool)) AND (\(names)::text[] IS NULL OR name = ANY(\(names)))
            """)
        for try await (name, pool, block, state, cpu, memory, mps) in rows.decode((String, String, String?, String, Int, Int, Bool?).self) {
            nodes[name] = NodeSnapshot(
                name: name, pool: pool, block: block, state: try decoded(state, "nodes.state"), cpuMilli: cpu, memoryMiB: memory, gpus: [])
            nodes[name]?.enforcesShares = mps == true
        }
        let gpus = try await self.tx.query(
            """
            SELECT \(unescaped: Self.slotColumns),
                   -- The organisation and account of a shared GPU's shares (pools that keep organisations apart; MPS),
                   -- looked up for shared GPUs only: the snapshot reads every GPU of the cluster.
                   CASE WHEN g.claimed_milli BETWEEN 1 AND 999 AND g.mig_profile IS NULL THEN
                     (SELECT ARRAY[coalesce(min(j.org), ''), coalesce(min(\(unescaped: Self.accountOf)), '')]
                      FROM gpu_claims c JOIN jobs j ON j.id = c.job_id JOIN organizations o ON o.name = j.org
                      WHERE c.node = g.node AND c.gpu_index = g.idx AND c.released_at IS NULL) END
            \(unescaped: Self.slotsFrom)
            WHERE g.present AND n.last_heartbeat IS NOT NULL AND (\(pool)::text IS NULL OR n.pool = \(pool))
              AND (\(names)::text[] IS NULL OR g.node = ANY(\(names))) AND \(unescaped: Self.schedulableSlot)
            """)
        for try await row in gpus {
            let (node, slot) = try Self.slot(row)
            var gpu = slot
            if let sharers = try row.makeRandomAccess()[10].decode([String]?.self), sharers.count == 2 {
                gpu.shareOrg = sharers[0].isEmpty ? nil : sharers[0]
                gpu.shareAccount = sharers[1].isEmpty ? nil : sharers[1]
            }
            nodes[node]?.gpus.append(gpu)
        }
        let used = try await self.tx.query(
            """
            SELECT r.node, sum(r.cpu_milli)::bigint, sum(r.memory_mib)::bigint
            FROM attempt_ranks r
            JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
            WHERE attempt_is_live(a.state) AND rank_is_active(r.state) AND (\(names)::text[] IS NULL OR r.node = ANY(\(names)))
            GROUP BY r.node
            """)
        for try await (node, cpu, memory) in used.decode((String, Int64, Int64).self) {
            nodes[node]?.usedCPUMilli = Int(cpu)
            nodes[node]?.usedMemoryMiB = Int(memory)
        }
        // GPUs in index order, sorted here: an ORDER BY made PostgreSQL sort every GPU of the cluster by node name.
        for (name, node) in nodes where zip(node.gpus, node.gpus.dropFirst()).contains(where: { $0.index > $1.index }) {
            nodes[name]?.gpus.sort { $0.index < $1.index }
        }
        return nodes
    }

    /// The nodes in name order, each with the time to its next maintenance window.
    private func withMaintenance(_ nodes: [String: NodeSnapshot]) async throws -> [NodeSnapshot] {
        var nodes = nodes
        let windows = try await self.tx.query(
            """
            SELECT n, min(greatest(0, extract(epoch FROM starts_at - now())))::bigint
            FROM maintenance_windows, unnest(nodes) AS n WHERE ended_at IS NULL GROUP BY n
            """)
        for try await (node, seconds) in windows.decode((String, Int64).self) { nodes[node]?.maintenanceInSeconds = seconds }
        return nodes.values.sorted { $0.name < $1.name }
    }

    /// Queued jobs, not being cancelled, in queue order, reduced to what placement needs.
    func queue() async throws -> [PendingJob] {
        try await self.pendingJobs(
            try await self.tx.query(
                """
                SELECT \(unescaped: Self.pendingColumns) FROM jobs j WHERE j.state = 'queued' AND NOT j.cancel_requested
                  AND j.dependency IS NULL AND j.held_by IS NULL AND (j.begin_at IS NULL OR j.begin_at <= now())
                  AND (j.array_limit IS NULL OR j.id IN (\(unescaped: Self.arrayTasksWithRoom)))
                ORDER BY j.priority DESC, j.submitted_at, j.id
                """))
    }

    /// The queued tasks of arrays with a `%` limit that may start now: the lowest indices, as many as the limit
    /// leaves room for beside the array's live tasks (Slurm's JobArrayTaskLimit keeps the others waiting).
    static let arrayTasksWithRoom = """
        SELECT x.id FROM (
            SELECT q.id, row_number() OVER (PARTITION BY q.array_job_id ORDER BY q.array_task_id) AS n,
                   q.array_limit - (SELECT count(*) FROM jobs l WHERE l.array_job_id = q.array_job_id
                                    AND l.state IN ('placed', 'starting', 'running')) AS room
            FROM jobs q WHERE q.state = 'queued' AND q.array_limit IS NOT NULL AND NOT q.cancel_requested
              AND q.dependency IS NULL AND q.held_by IS NULL AND (q.begin_at IS NULL OR q.begin_at <= now())) x
        WHERE x.n <= x.room
        """

    /// Inference jobs whose current attempt runs on a draining node and has no replacement yet: they are placed
    /// elsewhere first, and their old attempt is stopped once the replacement runs.
    func replacementsNeeded() async throws -> [PendingJob] {
        try await self.pendingJobs(
            try await self.tx.query(
                """
                SELECT DISTINCT \(unescaped: Self.pendingColumns)
                FROM jobs j
                JOIN attempts a ON a.job_id = j.id AND a.state = 'running' AND a.replaces IS NULL AND a.stop_requested_at IS NULL
                JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
                JOIN nodes n ON n.name = r.node AND n.state = 'draining'
                WHERE j.kind = 'inference' AND j.state = 'running' AND NOT j.cancel_requested AND j.max_attempts > 1
                  AND NOT EXISTS (SELECT 1 FROM attempts x WHERE x.job_id = j.id AND x.replaces IS NOT NULL AND attempt_is_live(x.state))
                """))
    }

    /// Replicas of running, unstopped services whose node was lost, each with the nodes its service's other
    /// active replicas hold.
    func relocationsNeeded() async throws -> [Relocation] {
        let rows = try await self.tx.query(
            """
            SELECT r.job_id, r.attempt, r.rank,
                   coalesce((SELECT array_agg(o.node) FROM attempt_ranks o WHERE o.job_id = r.job_id AND o.attempt = r.attempt
                             AND o.rank <> r.rank AND rank_is_active(o.state) AND NOT o.needs_node), '{}')
            FROM attempt_ranks r JOIN attempts a ON a.job_id = r.job_id AND a.number = r.attempt
            WHERE r.needs_node AND a.state = 'running' AND a.stop_requested_at IS NULL
            ORDER BY r.job_id, r.attempt, r.rank
            """)
        var found: [(Int64, Int, Int, [String])] = []
        for try await row in rows.decode((Int64, Int, Int, [String]).self) { found.append(row) }
        guard !found.isEmpty else { return [] }
        let jobs = try await self.pendingJobs(
            try await self.tx.query(
                "SELECT \(unescaped: Self.pendingColumns) FROM jobs j WHERE j.id = ANY(\(Array(Set(found.map(\.0)))))"))
        let byID = Dictionary(jobs.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        return found.compactMap { job, attempt, rank, avoid in
            guard var shape = byID[job] else { return nil }
            shape.nodes = 1
            return Relocation(job: shape, attempt: attempt, rank: rank, avoid: Set(avoid))
        }
    }

    /// Live attempts not being stopped, with where they run, for backfill, reclaim and estimates.
    func running() async throws -> [RunningAttempt] {
        var out: [RunningAttempt] = []
        let rows = try await self.tx.query(
            """
            SELECT a.job_id, a.number, j.org, j.pool, a.borrowed, floor(extract(epoch FROM coalesce(a.started_at, a.placed_at)))::bigint,
                   r.rank, r.node, r.gpu_indices, r.milli_per_gpu, r.cpu_milli, r.memory_mib,
                   floor(extract(epoch FROM coalesce(a.started_at, a.placed_at)))::bigint + j.time_limit_s,
                   coalesce((SELECT pc.preemptible FROM priority_classes pc WHERE pc.name = j.priority_class), false), j.priority,
                   coalesce((SELECT pc.preempts FROM priority_classes pc WHERE pc.name = j.priority_class), false), j.movable, j.gpu_models,
                   j.gpus_per_node, j.gpu_milli, j.cpu_milli_per_node, j.memory_mib_per_node, j.exclusive, j.whole_node_memory,
                   CASE WHEN j.max_attempts = 1 THEN 1 END, j.mig_profile, j.gpu_memory_mib,
                   coalesce((SELECT p.isolate_shared_gpus FROM pools p WHERE p.name = j.pool), false),
                   (SELECT \(unescaped: Self.accountOf) FROM organizations o WHERE o.name = j.org)
            FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
            WHERE attempt_is_live(a.state) AND a.stop_requested_at IS NULL
            ORDER BY a.job_id, a.number, r.rank
            """)
        for try await row in rows {
            let (job, attempt, org, pool, borrowed, started, rank, node, gpus, milli, cpu, memory, endsAt, preemptible, priority) = try row.decode(
                (Int64, Int, String, String, Bool, Int64, Int, String, [Int], Int, Int, Int, Int64?, Bool, Int).self)
            let columns = row.makeRandomAccess()
            let r = RankAssignment(rank: rank, node: node, gpuIndices: gpus, milliPerGPU: milli, cpuMilli: cpu, memoryMiB: memory)
            if let last = out.last, last.jobID == job, last.attempt == attempt {
                out[out.count - 1].ranks.append(r)
            } else {
                var running = RunningAttempt(
                    jobID: job, attempt: attempt, org: org, pool: pool, borrowing: borrowed, startedAt: started, ranks: [r], endsAt: endsAt)
                running.preemptible = preemptible
                running.priority = priority
                // What defragmentation needs to move it: whether it may be, and what to place again.
                running.preempts = try columns[15].decode(Bool.self)
                running.movable = try columns[16].decode(Bool.self)
                running.gpuModels = try columns[17].decode([String].self)
                running.perNode = NodeRequest(
                    gpus: try columns[18].decode(Int.self), fractionMilli: try columns[19].decode(Int?.self),
                    cpuMilli: try columns[20].decode(Int.self),
                    memoryMiB: try columns[21].decode(Int.self), exclusive: try columns[22].decode(Bool.self),
                    allMemory: try columns[23].decode(Bool.self))
                // Only a --no-requeue job's attempt is its last: a move spends no attempt of any other (JobLifecycle).
                running.maxAttempts = try columns[24].decode(Int?.self)
                running.migProfile = try columns[25].decode(String?.self)
                running.gpuMemoryMiB = try columns[26].decode(Int?.self)
                running.isolatedShares = try columns[27].decode(Bool.self)
                running.account = try columns[28].decode(String?.self)
                out.append(running)
            }
        }
        return out
    }

    /// Pools where preempted attempts are still stopping: no further reclaim there until they have.
    func poolsReclaiming() async throws -> Set<String> {
        try await self.tx.query(
            """
            SELECT DISTINCT j.pool FROM attempts a JOIN jobs j ON j.id = a.job_id
            WHERE attempt_is_live(a.state) AND a.stop_state = 'preempted'
            """
        ).decode(String.self).reduce(into: Set<String>()) { $0.insert($1) }
    }

    /// The per-node shapes of the attempts placed in the last `hours` (at most `limit`, newest first): the
    /// workload the fragmentation-aware strategy expects besides the queue. A gang counts once per node.
    func recentShapes(hours: Int = 24, limit: Int = 5000) async throws -> WorkloadMix {
        let rows = try await self.tx.query(
            """
            SELECT j.gpus_per_node, j.gpu_milli, j.cpu_milli_per_node, j.memory_mib_per_node, j.nodes, j.gpu_models
            FROM attempts a JOIN jobs j ON j.id = a.job_id
            WHERE a.placed_at > now() - \(hours)::int * interval '1 hour'
            ORDER BY a.placed_at DESC LIMIT \(limit)
            """)
        var mix = WorkloadMix()
        for try await (gpus, milli, cpu, memory, nodes, models) in rows.decode((Int, Int?, Int, Int, Int, [String]).self) {
            mix.add(NodeRequest(gpus: gpus, fractionMilli: milli, cpuMilli: cpu, memoryMiB: memory), models: models, weight: Double(nodes))
        }
        return mix
    }

    /// The columns `pendingJobs` reads, in its order (a constant, so splicing it in unescaped is safe).
    static let pendingColumns = """
        j.id, j.org, j.pool, j.gpu_models, j.nodes, j.gpus_per_node, j.gpu_milli, j.cpu_milli_per_node, j.memory_mib_per_node, j.priority,
        extract(epoch FROM j.submitted_at)::bigint, j.time_limit_s, j.exclusive, j.whole_node_memory,
        coalesce((SELECT pc.preempts FROM priority_classes pc WHERE pc.name = j.priority_class), false),
        (SELECT budget_time_s FROM policy_defaults), j.project, j.owner, j.time_min_s, j.mig_profile, j.gpu_memory_mib,
        coalesce((SELECT p.isolate_shared_gpus FROM pools p WHERE p.name = j.pool), false),
        (SELECT \(accountOf) FROM organizations o WHERE o.name = j.org)
        """

    private func pendingJobs(_ rows: Rows) async throws -> [PendingJob] {
        var jobs: [PendingJob] = []
        for try await row in rows {
            let (id, org, pool, models, nodes, gpus, milli, cpu, memory, priority, submitted, limit, exclusive, allMemory, preempts, budget) =
                try row.decode((Int64, String, String, [String], Int, Int, Int?, Int, Int, Int, Int64, Int64?, Bool, Bool, Bool, Int64).self)
            var job =
                PendingJob(
                    id: id, org: org, pool: pool, gpuModels: models, nodes: nodes,
                    perNode: NodeRequest(
                        gpus: gpus, fractionMilli: milli, cpuMilli: cpu, memoryMiB: memory, exclusive: exclusive, allMemory: allMemory),
                    priority: priority, submittedAt: submitted, timeLimitSeconds: limit)
            job.preempts = preempts
            job.defaultBudgetSeconds = budget
            let c = row.makeRandomAccess()
            job.project = try c[16].decode(String?.self)
            job.owner = try c[17].decode(String.self)
            job.timeMinSeconds = try c[18].decode(Int64?.self)
            job.migProfile = try c[19].decode(String?.self)
            job.gpuMemoryMiB = try c[20].decode(Int?.self)
            job.isolatedShares = try c[21].decode(Bool.self)
            job.account = try c[22].decode(String?.self)
            jobs.append(job)
        }
        return jobs
    }
}
