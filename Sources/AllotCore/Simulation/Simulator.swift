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
    /// FNV-1a of every placement in the order made (job, node, GPUs, thousandths, CPU, memory): two replays with
    /// equal digests placed every job on the same GPUs, so a faster core can be shown to decide the same.
    public var placementDigest: String
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
        // What ends when, and those times in order (a replay holds thousands: not scanned per event).
        var ends: [Int64: [[RankAssignment]]] = [:]
        var endTimes: [Int64] = []
        var waits: [(org: String, priority: Int, seconds: Double)] = []
        var allocated = 0
        var peak = 0
        var area = 0.0
        var now = arrivals.first?.submitSeconds ?? 0
        let start = now
        var decisions = 0
        var decideSeconds = 0.0
        var placedCount = 0
        var digest = PlacementDigest()
        // The shapes started so far: the history the fragmentation-aware strategy learns from.
        var started = self.placer.expected

        while next < arrivals.count || !endTimes.isEmpty {
            let nextArrival = next < arrivals.count ? arrivals[next].submitSeconds : Int64.max
            let nextEnd = endTimes.first ?? Int64.max
            let t = min(nextArrival, nextEnd)
            if t == Int64.max { break }
            area += Double(allocated) * Double(t - now)
            now = t
            // Completions first: what ends now frees room for what arrives now.
            if nextEnd == now {
                endTimes.removeFirst()
                for ranks in ends.removeValue(forKey: now) ?? [] {
                    for r in ranks {
                        session.release(r)
                        allocated -= r.gpuIndices.count * r.milliPerGPU
                    }
                }
            }
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
                digest.add(p)
                started.add(t.job.perNode, weight: Double(t.job.nodes))
                for r in p.ranks { allocated += r.gpuIndices.count * r.milliPerGPU }
                peak = max(peak, allocated)
                waits.append((t.job.org, t.job.priority, Double(now - t.submitSeconds)))
                if let d = t.durationSeconds {
                    let end = now + d
                    if ends[end] == nil {
                        var (low, high) = (0, endTimes.count)
                        while low < high {
                            let mid = (low + high) / 2
                            if endTimes[mid] < end { low = mid + 1 } else { high = mid }
                        }
                        endTimes.insert(end, at: low)
                    }
                    ends[end, default: []].append(p.ranks)
                }
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
            decisions: decisions, decisionsPerSecond: decideSeconds > 0 ? Double(decisions) / decideSeconds : 0,
            placementDigest: digest.hex, simulatedSeconds: now - start)
    }
}

/// FNV-1a, 64 bits, over placements: written out here because the standard library's hashes are seeded per process.
struct PlacementDigest {
    private var value: UInt64 = 0xcbf2_9ce4_8422_2325

    private mutating func add(_ x: Int) {
        var v = UInt64(bitPattern: Int64(x))
        for _ in 0..<8 {
            self.value = (self.value ^ (v & 0xFF)) &* 0x100_0000_01b3
            v >>= 8
        }
    }

    mutating func add(_ p: Placement) {
        self.add(Int(p.jobID))
        for r in p.ranks {
            for b in r.node.utf8 { self.value = (self.value ^ UInt64(b)) &* 0x100_0000_01b3 }
            self.add(r.rank)
            for g in r.gpuIndices { self.add(g) }
            self.add(r.milliPerGPU)
            self.add(r.cpuMilli)
            self.add(r.memoryMiB)
        }
    }

    var hex: String { String(self.value, radix: 16) }
}
