/// One job of a workload trace (SPEC §6 `trace.csv`).
public struct TraceJob: Hashable, Sendable {
    public var id: Int64
    public var submitSeconds: Int64
    /// How long it runs once started; nil never ends.
    public var durationSeconds: Int64?
    public var job: PendingJob

    public init(id: Int64, submitSeconds: Int64, durationSeconds: Int64?, job: PendingJob) {
        self.id = id
        self.submitSeconds = submitSeconds
        self.durationSeconds = durationSeconds
        self.job = job
    }
}

/// What a replay measured.
public struct SimulationReport: Codable, Hashable, Sendable {
    public struct Waits: Codable, Hashable, Sendable {
        public var jobs: Int
        public var p50Seconds: Double
        public var p90Seconds: Double
        public var p99Seconds: Double
        public var maxSeconds: Double
    }
    public var strategy: String
    public var gpus: Int
    public var jobs: Int
    public var placed: Int
    public var unplaced: Int
    /// GPU thousandths held when the trace was replayed to its end.
    public var allocatedGPUMilli: Int
    public var peakAllocatedGPUMilli: Int
    /// Time-weighted share of GPU capacity held, from the first arrival to the last event.
    public var utilisation: Double
    /// At the end: free GPU capacity on nodes that are partly in use, as a share of all free capacity.
    public var fragmentation: Double
    public var waitsByOrg: [String: Waits]
    public var waitsByPriority: [String: Waits]
    public var decisions: Int
    public var decisionsPerSecond: Double
    public var simulatedSeconds: Int64
}

/// Replays a trace through the placement core in virtual time: arrivals join the queue, every event runs one
/// cycle of the same `Placer` the scheduler runs, started jobs end after their duration and release what they
/// held; what started so far is the history the fragmentation-aware strategy learns from. The core reads no
/// clock: the caller passes `elapsed`, which times a closure, to measure decisions/s.
public struct Simulator: Sendable {
    public var placer: Placer

    public init(placer: Placer) { self.placer = placer }

    public func run(cluster: [NodeSnapshot], trace: [TraceJob], elapsed: (() -> Plan) -> (Plan, Double)) -> SimulationReport {
        // One cluster for the whole replay: each event's call holds what it places and releases what ends.
        var session = Placer.Session(placer: self.placer, nodes: cluster)
        let capacity = cluster.reduce(0) { $0 + $1.gpus.count } * 1000
        let arrivals = trace.sorted { ($0.submitSeconds, $0.id) < ($1.submitSeconds, $1.id) }
        var next = 0
        var queue: [Int64: TraceJob] = [:]
        var ends: [(time: Int64, ranks: [RankAssignment])] = []
        var waits: [(org: String, priority: Int, seconds: Double)] = []
        var allocated = 0
        var peak = 0
        var area = 0.0
        var now = arrivals.first?.submitSeconds ?? 0
        let start = now
        var decisions = 0
        var decideSeconds = 0.0
        var placedCount = 0
        // The shapes started so far: the history the fragmentation-aware strategy learns from.
        var started = self.placer.expected

        while next < arrivals.count || !ends.isEmpty {
            let nextArrival = next < arrivals.count ? arrivals[next].submitSeconds : Int64.max
            let nextEnd = ends.map(\.time).min() ?? Int64.max
            let t = min(nextArrival, nextEnd)
            if t == Int64.max { break }
            area += Double(allocated) * Double(t - now)
            now = t
            // Completions first: what ends now frees room for what arrives now.
            for e in ends where e.time == now {
                for r in e.ranks {
                    session.release(r)
                    allocated -= r.gpuIndices.count * r.milliPerGPU
                }
            }
            ends.removeAll { $0.time == now }
            while next < arrivals.count && arrivals[next].submitSeconds == now {
                queue[arrivals[next].id] = arrivals[next]
                next += 1
            }
            guard !queue.isEmpty else { continue }
            let pending = queue.values.map(\.job)
            let (plan, seconds) = elapsed { session.place(pending, expected: started) }
            decisions += pending.count
            decideSeconds += seconds
            for p in plan.placements {
                guard let t = queue.removeValue(forKey: p.jobID) else { continue }
                placedCount += 1
                started.add(t.job.perNode, weight: Double(t.job.nodes))
                for r in p.ranks { allocated += r.gpuIndices.count * r.milliPerGPU }
                peak = max(peak, allocated)
                waits.append((t.job.org, t.job.priority, Double(now - t.submitSeconds)))
                if let d = t.durationSeconds { ends.append((now + d, p.ranks)) }
            }
        }
        let nodes = session.nodes
        let freeTotal = nodes.reduce(0) { $0 + $1.gpus.reduce(0) { $0 + $1.leftoverMilli } }
        let freeOnPartial = nodes.filter { $0.gpus.contains { $0.usedMilli > 0 } }.reduce(0) { $0 + $1.gpus.reduce(0) { $0 + $1.leftoverMilli } }
        func summary(_ xs: [Double]) -> SimulationReport.Waits {
            let s = xs.sorted()
            func q(_ p: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int((p * Double(s.count - 1)).rounded()))] }
            return .init(jobs: s.count, p50Seconds: q(0.5), p90Seconds: q(0.9), p99Seconds: q(0.99), maxSeconds: s.last ?? 0)
        }
        let span = Double(now - start)
        return SimulationReport(
            strategy: self.placer.strategy.rawValue, gpus: capacity / 1000, jobs: trace.count, placed: placedCount,
            unplaced: trace.count - placedCount,
            allocatedGPUMilli: allocated, peakAllocatedGPUMilli: peak, utilisation: span > 0 && capacity > 0 ? area / span / Double(capacity) : 0,
            fragmentation: freeTotal > 0 ? Double(freeOnPartial) / Double(freeTotal) : 0,
            waitsByOrg: Dictionary(grouping: waits, by: \.org).mapValues { summary($0.map(\.seconds)) },
            waitsByPriority: Dictionary(grouping: waits, by: { String($0.priority) }).mapValues { summary($0.map(\.seconds)) },
            decisions: decisions, decisionsPerSecond: decideSeconds > 0 ? Double(decisions) / decideSeconds : 0, simulatedSeconds: now - start)
    }
}
