/// A job's per-node request as fragmentation sees it: whole GPUs or a share of one, and the CPU and memory
/// that must come with them.
public struct TaskShape: Hashable, Sendable, Codable {
    /// Whole GPUs per node (0 for a share).
    public var gpus: Int
    /// A share of one GPU in thousandths, or nil for whole GPUs.
    public var milli: Int?
    public var cpuMilli: Int
    public var memoryMiB: Int
    /// The GPU models it accepts, lowercased and sorted; empty: any. GPUs of other models are of no use to it.
    public var models: [String]

    public init(gpus: Int, milli: Int? = nil, cpuMilli: Int = 0, memoryMiB: Int = 0, models: [String] = []) {
        self.gpus = gpus
        self.milli = milli
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
        self.models = models.isEmpty ? [] : Array(Set(models.map { $0.lowercased() })).sorted()
    }

    public init(_ request: NodeRequest, models: [String] = []) {
        self.init(
            gpus: request.fractionMilli == nil ? request.gpus : 0, milli: request.fractionMilli, cpuMilli: request.cpuMilli,
            memoryMiB: request.memoryMiB, models: request.gpuMilli > 0 ? models : [])
    }

    public init(_ job: PendingJob) { self.init(job.perNode, models: job.gpuModels) }

    /// Whether it takes any GPU at all.
    public var usesGPU: Bool { self.gpus > 0 || self.milli != nil }

    /// The part of a node's free GPU capacity (thousandths) that a task of this shape could not use
    /// (fragmentation gradient descent, Weng et al., USENIX ATC'23): all of it when the task does not fit on
    /// the node at all — too little CPU or memory left, too few GPUs free — and otherwise the GPUs it cannot
    /// take: those with less left than its share, or, for whole GPUs, those partly taken.
    /// GPUs of a model it does not accept (`accepts` is asked by position) are unusable whatever they hold.
    public func unusable(leftovers: [Int], cpuMilli: Int, memoryMiB: Int, accepts: (Int) -> Bool = { _ in true }) -> Int {
        let total = leftovers.reduce(0, +)
        if self.cpuMilli > cpuMilli || self.memoryMiB > memoryMiB { return total }
        let all = self.models.isEmpty
        if let m = self.milli {
            var unusable = 0
            for (i, l) in leftovers.enumerated() where l < m || !(all || accepts(i)) { unusable += l }
            return unusable
        }
        var whole = 0
        for (i, l) in leftovers.enumerated() where l == 1000 && (all || accepts(i)) { whole += 1 }
        return whole >= self.gpus ? total - whole * 1000 : total
    }
}

/// The job shapes the scheduler expects, with their popularity: learnt from the queue and from the jobs that
/// started recently. The fragmentation-aware strategy places each job where the expected unusable GPU
/// capacity grows least.
public struct WorkloadMix: Hashable, Sendable {
    /// Popularity of each shape (counts, or any non-negative weights).
    public private(set) var weights: [TaskShape: Double] = [:]

    /// At most this many shapes, the most popular, are weighed: enough for real mixes, and the cost of
    /// scoring stays bounded.
    public static let shapeLimit = 64

    public init() {}

    public init(_ requests: some Sequence<NodeRequest>) {
        for r in requests { self.add(r) }
    }

    public mutating func add(_ request: NodeRequest, models: [String] = [], weight: Double = 1) {
        self.add(TaskShape(request, models: models), weight: weight)
    }

    public mutating func add(_ shape: TaskShape, weight: Double = 1) {
        guard weight > 0 else { return }
        self.weights[shape, default: 0] += weight
    }

    /// This mix with more jobs' shapes added, each as one more of its kind per node, with the models it accepts.
    public func adding(_ jobs: some Sequence<PendingJob>) -> WorkloadMix {
        var out = self
        // MIG work takes devices cut already, never a GPU's free capacity: it is no target for fragmentation.
        for j in jobs where j.migProfile == nil { out.add(TaskShape(j), weight: Double(j.nodes)) }
        return out
    }

    public var isEmpty: Bool { self.weights.isEmpty }

    /// The model the fragmentation-aware strategy scores with.
    var model: FragmentationModel {
        // CPU-only shapes are no targets — every node's GPUs are equally useless to them — but their CPU and
        // memory count in the balance.
        let top = self.weights.filter { $0.key.usesGPU }.sorted { a, b in
            if a.value != b.value { return a.value > b.value }
            if (a.key.gpus, a.key.milli ?? 0, a.key.cpuMilli, a.key.memoryMiB) != (b.key.gpus, b.key.milli ?? 0, b.key.cpuMilli, b.key.memoryMiB) {
                return (a.key.gpus, a.key.milli ?? 0, a.key.cpuMilli, a.key.memoryMiB) < (
                    b.key.gpus, b.key.milli ?? 0, b.key.cpuMilli, b.key.memoryMiB
                )
            }
            return a.key.models.lexicographicallyPrecedes(b.key.models)
        }
        .prefix(Self.shapeLimit)
        let total = top.reduce(0) { $0 + $1.value }
        var (gpu, cpu, memory) = (0.0, 0.0, 0.0)
        var (cpuOfGPUWork, memoryOfGPUWork) = (0.0, 0.0)
        for (shape, w) in self.weights {
            gpu += w * Double(shape.milli ?? shape.gpus * 1000)
            cpu += w * Double(shape.cpuMilli)
            memory += w * Double(shape.memoryMiB)
            if shape.usesGPU {
                cpuOfGPUWork += w * Double(shape.cpuMilli)
                memoryOfGPUWork += w * Double(shape.memoryMiB)
            }
        }
        // The GPU work ranked by the CPU and memory it brings per GPU thousandth; CPU-only work's CPU and memory
        // spread over it in proportion, as if GPU work brought that too.
        func ladder(_ bringing: (TaskShape) -> Int, scale: Double) -> RatioLadder? {
            guard scale.isFinite, scale > 0 else { return nil }
            return RatioLadder(
                self.weights.filter { $0.key.usesGPU }.map { shape, w in
                    let milli = Double(shape.milli ?? shape.gpus * 1000)
                    return (ratio: Double(bringing(shape)) / milli * scale, weight: w * milli)
                })
        }
        return FragmentationModel(
            terms: top.map { ($0.key, $0.value / total) }, gpuPerCPUMilli: cpu > 0 ? gpu / cpu : nil, gpuPerMiB: memory > 0 ? gpu / memory : nil,
            cpuLadder: ladder({ $0.cpuMilli }, scale: cpu / cpuOfGPUWork), memoryLadder: ladder({ $0.memoryMiB }, scale: memory / memoryOfGPUWork))
    }
}

/// Values ranked with weights: ascending ratios, each with the share of the total weight at or below it.
/// Ranks expected work by the CPU or memory it brings per GPU, and nodes by the CPU or memory they have per free
/// GPU, so that each node can be matched with the work of its own rank.
struct RatioLadder {
    private(set) var steps: [(ratio: Double, upTo: Double)] = []

    init(_ items: [(ratio: Double, weight: Double)]) {
        // A ratio that is not a number (a share of 0) would misorder the sort: such items, like weightless ones, are left out.
        let items = items.filter { $0.weight > 0 && $0.weight.isFinite && !$0.ratio.isNaN }
        let total = items.reduce(0) { $0 + $1.weight }
        guard total > 0 else { return }
        var sum = 0.0
        for item in items.sorted(by: { $0.ratio < $1.ratio }) {
            sum += item.weight
            if let last = self.steps.last, last.ratio == item.ratio {
                self.steps[self.steps.count - 1].upTo = sum / total
            } else {
                self.steps.append((item.ratio, sum / total))
            }
        }
    }

    /// The ratio at quantile `q`: the first whose share at or below reaches it.
    func ratio(at q: Double) -> Double? {
        var (low, high) = (0, self.steps.count)
        while low < high {
            let mid = (low + high) / 2
            if self.steps[mid].upTo < q - 1e-12 { low = mid + 1 } else { high = mid }
        }
        return self.steps.isEmpty ? nil : self.steps[min(low, self.steps.count - 1)].ratio
    }

    /// Where `ratio` ranks: the middle of the share strictly below it and the share at or below it.
    func quantile(of ratio: Double) -> Double {
        var (low, high) = (0, self.steps.count)
        while low < high {
            let mid = (low + high) / 2
            if self.steps[mid].ratio < ratio { low = mid + 1 } else { high = mid }
        }
        let below = low > 0 ? self.steps[low - 1].upTo : 0
        let atOrBelow = low < self.steps.count && self.steps[low].ratio == ratio ? self.steps[low].upTo : below
        return (below + atOrBelow) / 2
    }
}

/// GPU thousandths the expected work takes per thousandth of a CPU and per MiB of memory: on average, or for
/// the work a node of a given rank is matched with.
struct Rates {
    var gpuPerCPUMilli: Double?
    var gpuPerMiB: Double?
}

/// Expected unusable GPU capacity of a node, for the job shapes expected.
struct FragmentationModel {
    /// The shapes that take GPUs, most popular first, with weights that sum to 1 (a fixed order, so equal
    /// inputs give equal scores in every process).
    var terms: [(shape: TaskShape, weight: Double)]
    /// GPU thousandths the expected work takes per thousandth of a CPU and per MiB of memory.
    var gpuPerCPUMilli: Double?
    var gpuPerMiB: Double?
    /// The expected GPU work ranked by CPU and by memory per GPU thousandth (nil when it brings none).
    var cpuLadder: RatioLadder?
    var memoryLadder: RatioLadder?

    var average: Rates { Rates(gpuPerCPUMilli: self.gpuPerCPUMilli, gpuPerMiB: self.gpuPerMiB) }

    /// The rates of the work matched with a node whose CPU and memory per free GPU rank at these quantiles among
    /// its pool's nodes — the nodes richest in CPU with the work that brings most, and so on down, which is how
    /// two resources both fill — where that work brings more than the average, else the average. So a node rich
    /// in CPU counts as wasted what the average work would leave it (and keeps room for the CPU-hungry work, which
    /// would otherwise arrive later to strand GPUs on nodes poor in CPU), while a node poor in CPU is not told to
    /// wait for work lighter than the average.
    func rates(cpuQuantile: Double, memoryQuantile: Double) -> Rates {
        func rate(_ ladder: RatioLadder?, _ q: Double, _ average: Double?) -> Double? {
            guard let average, let r = ladder?.ratio(at: q), r > 0 else { return average }
            return min(average, 1 / r)
        }
        return Rates(
            gpuPerCPUMilli: rate(self.cpuLadder, cpuQuantile, self.gpuPerCPUMilli),
            gpuPerMiB: rate(self.memoryLadder, memoryQuantile, self.gpuPerMiB))
    }

    /// Thousandths of GPU capacity on a node with these free thousandths per usable GPU and this much free CPU
    /// and memory that the next task, drawn from the expected mix, could not use — plus what no run of such
    /// tasks could use because the CPU or memory they bring along would run out first. `accepts(term, gpu)`
    /// says whether the term's shape takes the GPU at that position (asked only of shapes that name models).
    func fragmentation(
        leftovers: [Int], cpuMilli: Int, memoryMiB: Int, rates: Rates? = nil, accepts: (Int, Int) -> Bool = { _, _ in true }
    ) -> Double {
        let rates = rates ?? self.average
        var next = 0.0
        for (t, term) in self.terms.enumerated() {
            let unusable =
                term.shape.models.isEmpty
                ? term.shape.unusable(leftovers: leftovers, cpuMilli: cpuMilli, memoryMiB: memoryMiB)
                : term.shape.unusable(leftovers: leftovers, cpuMilli: cpuMilli, memoryMiB: memoryMiB) { accepts(t, $0) }
            next += term.weight * Double(unusable)
        }
        return next + self.stranded(freeMilli: leftovers.reduce(0, +), cpuMilli: cpuMilli, memoryMiB: memoryMiB, rates: rates)
    }

    /// GPU thousandths of a node with this much free that no run of the expected tasks could use, because the CPU
    /// or memory they bring along would run out first.
    func stranded(freeMilli: Int, cpuMilli: Int, memoryMiB: Int, rates: Rates) -> Double {
        let free = Double(freeMilli)
        var reachable = free
        if let r = rates.gpuPerCPUMilli { reachable = min(reachable, Double(max(0, cpuMilli)) * r) }
        if let r = rates.gpuPerMiB { reachable = min(reachable, Double(max(0, memoryMiB)) * r) }
        return free - reachable
    }

    /// The other side of the balance: CPU and memory a node keeps beyond what the expected work would bring
    /// along for its free GPUs, in GPU thousandths (what that CPU or memory could have served elsewhere).
    /// Where the pool is short of CPU or memory, it strands GPUs on other nodes; the placer weighs it by how
    /// short the pool is.
    func surplus(freeMilli: Int, cpuMilli: Int, memoryMiB: Int, rates: Rates? = nil) -> (cpu: Double, memory: Double) {
        let free = Double(freeMilli)
        let rates = rates ?? self.average
        return (
            rates.gpuPerCPUMilli.map { max(0, Double(max(0, cpuMilli)) * $0 - free) } ?? 0,
            rates.gpuPerMiB.map { max(0, Double(max(0, memoryMiB)) * $0 - free) } ?? 0
        )
    }
}
