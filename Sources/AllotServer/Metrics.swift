import AllotCore
public import AllotStore
import Prometheus
import Synchronization

/// allotd's Prometheus metrics, through swift-prometheus' registry (every family registered with its help
/// text, so `promtool check metrics` is clean). What this process measures (placement latency, cycles,
/// dispatch failures, lost nodes) is kept here; the cluster's state is read from PostgreSQL at scrape time and
/// set as gauges, so every allotd reports the same cluster.
public final class Metrics: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let decision: ValueHistogram
    private let cycles: Counter
    private let placed: Counter
    private let dispatchFailures: Counter
    private let lostNodes: Counter
    /// The gauges set at the last scrape, by name and labels, so that one no longer set is removed.
    private let gauges = Mutex<[String: Gauge]>([:])

    public init() {
        self.decision = self.registry.makeValueHistogram(
            descriptor: Self.name("allot_placement_decision_seconds", "Time the placement core took to decide one scheduling cycle."),
            buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5])
        self.cycles = self.registry.makeCounter(
            descriptor: Self.name("allot_scheduling_cycles_total", "Scheduling cycles this allotd ran as leader."))
        self.placed = self.registry.makeCounter(descriptor: Self.name("allot_jobs_placed_total", "Jobs this allotd placed."))
        self.dispatchFailures = self.registry.makeCounter(
            descriptor: Self.name("allot_dispatch_failures_total", "Launches an agent did not accept (each try counts)."))
        self.lostNodes = self.registry.makeCounter(
            descriptor: Self.name("allot_nodes_lost_total", "Nodes this allotd marked lost for missing heartbeats."))
    }

    /// A metric's full name and help text (the names are Allot's contract, so they are given whole).
    private static func name(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    func observeCycle(decision: Duration, placed: Int) {
        let c = decision.components
        self.decision.record(Double(c.seconds) + Double(c.attoseconds) / 1e18)
        self.cycles.increment()
        self.placed.increment(by: Int64(placed))
    }

    func dispatchFailed() { self.dispatchFailures.increment() }
    func nodesLost(_ n: Int) { self.lostNodes.increment(by: Int64(n)) }

    /// The Prometheus text exposition, with the cluster's gauges as of `cluster`.
    public func render(_ cluster: ClusterGauges) -> String {
        var set: [(name: String, help: String, labels: [(String, String)], value: Double)] = []
        func gauge(_ name: String, _ help: String, _ labels: [(String, String)], _ value: Double) { set.append((name, help, labels, value)) }

        for q in cluster.queues {
            gauge(
                "allot_queue_jobs", "Queued jobs by organisation and priority class.", [("org", q.org), ("priority_class", q.priorityClass)],
                Double(q.jobs))
        }
        for (org, age) in cluster.oldestQueuedSeconds {
            gauge("allot_queue_oldest_seconds", "Age of the oldest queued job by organisation.", [("org", org)], age)
        }
        let gpusHelp = "GPUs by pool and state: allocated (held, fractions by share), free (whole and unused), quarantined."
        for p in cluster.gpus {
            gauge("allot_gpus", gpusHelp, [("pool", p.pool), ("state", "allocated")], p.allocated)
            gauge("allot_gpus", gpusHelp, [("pool", p.pool), ("state", "free")], p.free)
            gauge("allot_gpus", gpusHelp, [("pool", p.pool), ("state", "quarantined")], p.quarantined)
        }
        for (pool, states) in cluster.nodes {
            for state in NodeState.allCases {
                gauge("allot_nodes", "Nodes by pool and state.", [("pool", pool), ("state", state.rawValue)], Double(states[state] ?? 0))
            }
            gauge(
                "allot_pool_held", "1 while most of a pool went silent at once and requeueing waits for an operator.", [("pool", pool)],
                cluster.heldPools.contains(pool) ? 1 : 0)
        }
        for (node, age) in cluster.heartbeatAgeSeconds {
            gauge("allot_node_heartbeat_age_seconds", "Seconds since each node's agent last reported.", [("node", node)], age)
        }
        for q in cluster.quota {
            let labels = [("org", q.org), ("pool", q.pool)]
            gauge("allot_quota_in_use_gpus", "GPUs an organisation holds in a pool now.", labels, q.inUseGPUs)
            gauge("allot_quota_guaranteed_gpus", "GPUs guaranteed to an organisation in a pool.", labels, Double(q.guaranteedGPUs))
            gauge("allot_quota_limit_gpus", "The most GPUs an organisation may hold in a pool, borrowing.", labels, Double(q.limitGPUs))
            gauge("allot_quota_queued_gpus", "GPUs an organisation's queued jobs ask for in a pool.", labels, q.queuedGPUs)
            gauge(
                "allot_quota_used_gpu_seconds", "GPU time used in the current period (GPU-hours × 3600).", labels, (q.gpuHoursUsed * 3600).rounded())
            gauge("allot_quota_entitlement_gpu_seconds", "GPU time entitled in the current period (GPU-hours × 3600).", labels, q.gpuHours * 3600)
        }
        gauge(
            "allot_reclaim_deadline_seconds", "The policy's reclaim deadline: guaranteed GPUs are back within it.", [], cluster.reclaimDeadlineSeconds
        )
        for (key, age) in cluster.reclaimPendingSeconds.sorted(by: { ($0.key.org, $0.key.pool) < ($1.key.org, $1.key.pool) }) {
            gauge(
                "allot_reclaim_pending_seconds", "Age of the oldest reclaim an organisation still waits for, by pool.",
                [("org", key.org), ("pool", key.pool)], age)
        }
        for (key, outcomes) in cluster.reclaims.sorted(by: { ($0.key.org, $0.key.pool) < ($1.key.org, $1.key.pool) }) {
            for outcome in [Statement.Reclaim.Outcome.kept, .missed, .pending] {
                gauge(
                    "allot_reclaims", "Reclaims asked for in the last 30 days, by outcome.",
                    [("org", key.org), ("pool", key.pool), ("outcome", outcome.rawValue)], Double(outcomes[outcome] ?? 0))
            }
        }
        self.gauges.withLock { known in
            var current: [String: Gauge] = [:]
            for g in set {
                let key = g.name + "|" + g.labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
                let gauge = known[key] ?? self.registry.makeGauge(descriptor: Self.name(g.name, g.help), labels: g.labels)
                gauge.set(g.value)
                current[key] = gauge
            }
            for (key, stale) in known where current[key] == nil { self.registry.unregisterGauge(stale) }
            known = current
        }
        return self.registry.emitToString()
    }
}
