/// The GPU part of a job's per-node request, as fragmentation sees it: whole GPUs, or a share of one.
public struct GPUShape: Hashable, Sendable, Codable {
    /// Whole GPUs per node (0 for a share).
    public var gpus: Int
    /// A share of one GPU in thousandths, or nil for whole GPUs.
    public var milli: Int?

    public init(gpus: Int, milli: Int? = nil) {
        self.gpus = gpus
        self.milli = milli
    }

    public init(_ request: NodeRequest) {
        self.init(gpus: request.fractionMilli == nil ? request.gpus : 0, milli: request.fractionMilli)
    }

    /// The part of a node's free GPU capacity (in thousandths) that a task of this shape could not use, given
    /// the free thousandths left on each of its usable GPUs (fragmentation gradient descent, Weng et al.,
    /// USENIX ATC'23): a share cannot use GPUs with less left than it asks; a whole-GPU task cannot use GPUs
    /// that are partly taken, nor any GPU when too few are wholly free.
    public func unusable(leftovers: some Collection<Int>) -> Int {
        if let m = self.milli { return leftovers.reduce(0) { $0 + ($1 < m ? $1 : 0) } }
        let whole = leftovers.reduce(0) { $0 + ($1 == 1000 ? 1 : 0) }
        let total = leftovers.reduce(0, +)
        return whole >= self.gpus ? total - whole * 1000 : total
    }
}

/// The job shapes the scheduler expects, with their popularity: learnt from the queue and the jobs that
/// started recently. The fragmentation-aware strategy places each job where the expected unusable capacity
/// grows least.
public struct WorkloadMix: Hashable, Sendable {
    /// Popularity of each GPU shape (counts or any non-negative weights). CPU-only shapes are left out:
    /// they use no GPU, so no placement changes what they can use.
    public private(set) var weights: [GPUShape: Double] = [:]

    public init() {}

    public init(_ requests: some Sequence<NodeRequest>) {
        for r in requests { self.add(r) }
    }

    public mutating func add(_ request: NodeRequest, weight: Double = 1) {
        self.add(GPUShape(request), weight: weight)
    }

    public mutating func add(_ shape: GPUShape, weight: Double = 1) {
        guard shape.gpus > 0 || shape.milli != nil, weight > 0 else { return }
        self.weights[shape, default: 0] += weight
    }

    /// Both mixes, each normalised to weight 1 so a long queue does not drown the history (or the other way).
    public func blended(with other: WorkloadMix) -> WorkloadMix {
        var out = WorkloadMix()
        for mix in [self, other] {
            let total = mix.weights.values.reduce(0, +)
            guard total > 0 else { continue }
            for (shape, w) in mix.weights { out.add(shape, weight: w / total) }
        }
        return out
    }

    public var isEmpty: Bool { self.weights.isEmpty }

    /// Expected unusable GPU capacity (thousandths) of a node with these free thousandths per usable GPU.
    /// Summed in a fixed order of shapes, so equal inputs give equal scores in every process.
    public func fragmentation(leftovers: some Collection<Int>) -> Double {
        let total = self.weights.values.reduce(0, +)
        guard total > 0 else { return 0 }
        let shapes = self.weights.keys.sorted { ($0.gpus, $0.milli ?? 0) < ($1.gpus, $1.milli ?? 0) }
        return shapes.reduce(0) { $0 + self.weights[$1]! * Double($1.unusable(leftovers: leftovers)) } / total
    }
}
