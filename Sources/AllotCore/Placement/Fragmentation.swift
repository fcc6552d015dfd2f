/// A job's per-node request as fragmentation sees it: whole GPUs or a share of one, and the CPU and memory
/// that must come with them.
public struct TaskShape: Hashable, Sendable, Codable {
    /// Whole GPUs per node (0 for a share).
    public var gpus: Int
    /// A share of one GPU in thousandths, or nil for whole GPUs.
    public var milli: Int?
    public var cpuMilli: Int
    public var memoryMiB: Int

    public init(gpus: Int, milli: Int? = nil, cpuMilli: Int = 0, memoryMiB: Int = 0) {
        self.gpus = gpus
        self.milli = milli
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
    }

    public init(_ request: NodeRequest) {
        self.init(
            gpus: request.fractionMilli == nil ? request.gpus : 0, milli: request.fractionMilli, cpuMilli: request.cpuMilli,
            memoryMiB: request.memoryMiB)
    }

    /// Whether it takes any GPU at all.
    public var usesGPU: Bool { self.gpus > 0 || self.milli != nil }

    /// The part of a node's free GPU capacity (thousandths) that a task of this shape could not use
    /// (fragmentation gradient descent, Weng et al., USENIX ATC'23): all of it when the task does not fit on
    /// the node at all — too little CPU or memory left, too few GPUs free — and otherwise the GPUs it cannot
    /// take: those with less left than its share, or, for whole GPUs, those partly taken.
    public func unusable(leftovers: some Collection<Int>, cpuMilli: Int, memoryMiB: Int) -> Int {
        let total = leftovers.reduce(0, +)
        if self.cpuMilli > cpuMilli || self.memoryMiB > memoryMiB { return total }
        if let m = self.milli {
            return leftovers.reduce(0) { $0 + ($1 < m ? $1 : 0) }
        }
        let whole = leftovers.reduce(0) { $0 + ($1 == 1000 ? 1 : 0) }
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

    public mutating func add(_ request: NodeRequest, weight: Double = 1) {
        self.add(TaskShape(request), weight: weight)
    }

    public mutating func add(_ shape: TaskShape, weight: Double = 1) {
        guard weight > 0 else { return }
        self.weights[shape, default: 0] += weight
    }

    /// This mix with more jobs' shapes added, each as one more of its kind.
    public func adding(_ requests: some Sequence<NodeRequest>) -> WorkloadMix {
        var out = self
        for r in requests { out.add(r) }
        return out
    }

    public var isEmpty: Bool { self.weights.isEmpty }

    /// The model the fragmentation-aware strategy scores with.
    var model: FragmentationModel {
        // CPU-only shapes are no targets — every node's GPUs are equally useless to them — but their CPU and
        // memory count in the balance.
        let top = self.weights.filter { $0.key.usesGPU }.sorted { a, b in
            if a.value != b.value { return a.value > b.value }
            return (a.key.gpus, a.key.milli ?? 0, a.key.cpuMilli, a.key.memoryMiB) < (b.key.gpus, b.key.milli ?? 0, b.key.cpuMilli, b.key.memoryMiB)
        }
        .prefix(Self.shapeLimit)
        let total = top.reduce(0) { $0 + $1.value }
        var (gpu, cpu, memory) = (0.0, 0.0, 0.0)
        for (shape, w) in self.weights {
            gpu += w * Double(shape.milli ?? shape.gpus * 1000)
            cpu += w * Double(shape.cpuMilli)
            memory += w * Double(shape.memoryMiB)
        }
        return FragmentationModel(
            terms: top.map { ($0.key, $0.value / total) }, gpuPerCPUMilli: cpu > 0 ? gpu / cpu : nil, gpuPerMiB: memory > 0 ? gpu / memory : nil)
    }
}

/// Expected unusable GPU capacity of a node, for the job shapes expected.
struct FragmentationModel {
    /// The shapes that take GPUs, most popular first, with weights that sum to 1 (a fixed order, so equal
    /// inputs give equal scores in every process).
    var terms: [(shape: TaskShape, weight: Double)]
    /// GPU thousandths the expected work takes per thousandth of a CPU and per MiB of memory.
    var gpuPerCPUMilli: Double?
    var gpuPerMiB: Double?

    /// Thousandths of GPU capacity on a node with these free thousandths per usable GPU and this much free CPU
    /// and memory that the next task, drawn from the expected mix, could not use — plus what no run of such
    /// tasks could use because the CPU or memory they bring along would run out first.
    func fragmentation(leftovers: some Collection<Int>, cpuMilli: Int, memoryMiB: Int) -> Double {
        let next = self.terms.reduce(0) { $0 + $1.weight * Double($1.shape.unusable(leftovers: leftovers, cpuMilli: cpuMilli, memoryMiB: memoryMiB)) }
        let free = Double(leftovers.reduce(0, +))
        var reachable = free
        if let r = self.gpuPerCPUMilli { reachable = min(reachable, Double(max(0, cpuMilli)) * r) }
        if let r = self.gpuPerMiB { reachable = min(reachable, Double(max(0, memoryMiB)) * r) }
        return next + (free - reachable)
    }
}
