import AllotCore
import AllotStore
import Foundation
import PostgresNIO
import Synchronization

/// What allotd measures in process (placement latency, dispatch failures); the rest of `/metrics` is read
/// from PostgreSQL at scrape time, so every allotd reports the same cluster.
public final class Metrics: Sendable {
    /// Upper bounds of the placement latency histogram, in seconds.
    static let buckets: [Double] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]

    struct State {
        var latencyCounts = [Int](repeating: 0, count: Metrics.buckets.count)
        var latencySum = 0.0
        var latencyCount = 0
        var cycles = 0
        var placed = 0
        var dispatchFailures = 0
        var nodesLost = 0
    }

    private let state = Mutex(State())
    public init() {}

    func observeCycle(decisionSeconds: Double, placed: Int) {
        self.state.withLock { s in
            for (i, bound) in Self.buckets.enumerated() where decisionSeconds <= bound { s.latencyCounts[i] += 1 }
            s.latencySum += decisionSeconds
            s.latencyCount += 1
            s.cycles += 1
            s.placed += placed
        }
    }

    func dispatchFailed() { self.state.withLock { $0.dispatchFailures += 1 } }
    func nodesLost(_ n: Int) { self.state.withLock { $0.nodesLost += n } }

    /// The Prometheus text exposition (format 0.0.4), every family with HELP and TYPE.
    public func render(database: Database) async throws -> String {
        var out = Exposition()
        let s = self.state.withLock { $0 }

        out.family("allot_placement_decision_seconds", "histogram", "Time the placement core took to decide one scheduling cycle.")
        for (i, bound) in Self.buckets.enumerated() {
            out.sample("allot_placement_decision_seconds_bucket", ["le": Exposition.number(bound)], Double(s.latencyCounts[i]))
        }
        out.sample("allot_placement_decision_seconds_bucket", ["le": "+Inf"], Double(s.latencyCount))
        out.sample("allot_placement_decision_seconds_sum", [:], s.latencySum)
        out.sample("allot_placement_decision_seconds_count", [:], Double(s.latencyCount))
        out.family("allot_scheduling_cycles_total", "counter", "Scheduling cycles this allotd ran as leader.")
        out.sample("allot_scheduling_cycles_total", [:], Double(s.cycles))
        out.family("allot_jobs_placed_total", "counter", "Jobs this allotd placed.")
        out.sample("allot_jobs_placed_total", [:], Double(s.placed))
        out.family("allot_dispatch_failures_total", "counter", "Launches an agent did not accept (each try counts).")
        out.sample("allot_dispatch_failures_total", [:], Double(s.dispatchFailures))
        out.family("allot_nodes_lost_total", "counter", "Nodes this allotd marked lost for missing heartbeats.")
        out.sample("allot_nodes_lost_total", [:], Double(s.nodesLost))

        out.family("allot_queue_jobs", "gauge", "Queued jobs by organisation and priority class.")
        for try await (org, klass, n) in try await database.query(
            "SELECT org, priority_class, count(*)::bigint FROM jobs WHERE state = 'queued' GROUP BY 1, 2 ORDER BY 1, 2"
        ).decode((String, String, Int64).self) {
            out.sample("allot_queue_jobs", ["org": org, "priority_class": klass], Double(n))
        }
        out.family("allot_queue_oldest_seconds", "gauge", "Age of the oldest queued job by organisation.")
        for try await (org, age) in try await database.query(
            "SELECT org, extract(epoch FROM now() - min(submitted_at))::float8 FROM jobs WHERE state = 'queued' GROUP BY 1 ORDER BY 1"
        ).decode((String, Double).self) {
            out.sample("allot_queue_oldest_seconds", ["org": org], age)
        }

        out.family("allot_gpus", "gauge", "GPUs by pool and state: allocated (held, fractions by share), free (whole and unused), quarantined.")
        for try await (pool, allocated, free, quarantined) in try await database.query(
            """
            SELECT n.pool, coalesce(sum(g.claimed_milli), 0)::float8 / 1000,
                   count(*) FILTER (WHERE g.claimed_milli = 0 AND g.health <> 'quarantined' AND n.state = 'ready')::float8,
                   count(*) FILTER (WHERE g.health = 'quarantined')::float8
            FROM gpus g JOIN nodes n ON n.name = g.node WHERE g.present GROUP BY n.pool ORDER BY n.pool
            """
        ).decode((String, Double, Double, Double).self) {
            out.sample("allot_gpus", ["pool": pool, "state": "allocated"], allocated)
            out.sample("allot_gpus", ["pool": pool, "state": "free"], free)
            out.sample("allot_gpus", ["pool": pool, "state": "quarantined"], quarantined)
        }

        out.family("allot_nodes", "gauge", "Nodes by pool and state.")
        var counts: [String: [String: Double]] = [:]
        for try await (pool, state, n) in try await database.query(
            "SELECT pool, state::text, count(*)::float8 FROM nodes GROUP BY 1, 2"
        ).decode((String, String, Double).self) { counts[pool, default: [:]][state] = n }
        for pool in counts.keys.sorted() {
            for state in NodeState.allCases {
                out.sample("allot_nodes", ["pool": pool, "state": state.rawValue], counts[pool]?[state.rawValue] ?? 0)
            }
        }
        out.family("allot_pool_held", "gauge", "1 while most of a pool went silent at once and requeueing waits for an operator.")
        var held = Set<String>()
        for try await pool in try await database.query("SELECT pool FROM pool_holds").decode(String.self) { held.insert(pool) }
        for pool in counts.keys.sorted() { out.sample("allot_pool_held", ["pool": pool], held.contains(pool) ? 1 : 0) }
        out.family("allot_node_heartbeat_age_seconds", "gauge", "Seconds since each node's agent last reported.")
        for try await (node, age) in try await database.query(
            "SELECT name, extract(epoch FROM now() - last_heartbeat)::float8 FROM nodes WHERE last_heartbeat IS NOT NULL ORDER BY name"
        ).decode((String, Double).self) {
            out.sample("allot_node_heartbeat_age_seconds", ["node": node], age)
        }

        let quota = try await QuotaStore(database: database).rows()
        out.family("allot_quota_in_use_gpus", "gauge", "GPUs an organisation holds in a pool now.")
        for q in quota { out.sample("allot_quota_in_use_gpus", ["org": q.org, "pool": q.pool], q.inUseGPUs) }
        out.family("allot_quota_guaranteed_gpus", "gauge", "GPUs guaranteed to an organisation in a pool.")
        for q in quota { out.sample("allot_quota_guaranteed_gpus", ["org": q.org, "pool": q.pool], Double(q.guaranteedGPUs)) }
        out.family("allot_quota_limit_gpus", "gauge", "The most GPUs an organisation may hold in a pool, borrowing.")
        for q in quota { out.sample("allot_quota_limit_gpus", ["org": q.org, "pool": q.pool], Double(q.limitGPUs)) }
        out.family("allot_quota_queued_gpus", "gauge", "GPUs an organisation's queued jobs ask for in a pool.")
        for q in quota { out.sample("allot_quota_queued_gpus", ["org": q.org, "pool": q.pool], q.queuedGPUs) }
        out.family("allot_quota_used_gpu_seconds", "gauge", "GPU time used in the current period (GPU-hours × 3600).")
        for q in quota { out.sample("allot_quota_used_gpu_seconds", ["org": q.org, "pool": q.pool], (q.gpuHoursUsed * 3600).rounded()) }
        out.family("allot_quota_entitlement_gpu_seconds", "gauge", "GPU time entitled in the current period (GPU-hours × 3600).")
        for q in quota { out.sample("allot_quota_entitlement_gpu_seconds", ["org": q.org, "pool": q.pool], q.gpuHours * 3600) }
        return out.text
    }
}

/// Builds Prometheus text: families with HELP and TYPE, samples with escaped labels.
struct Exposition {
    var text = ""

    mutating func family(_ name: String, _ type: String, _ help: String) {
        self.text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
        let rendered = labels.keys.sorted().map { "\($0)=\"\(Self.escape(labels[$0]!))\"" }.joined(separator: ",")
        self.text += "\(name)\(rendered.isEmpty ? "" : "{\(rendered)}") \(Self.number(value))\n"
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func number(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }
}
