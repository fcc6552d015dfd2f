/// What one node of a job asks for. GPUs are either whole (`gpus` ≥ 0) or one fraction of a GPU (`fractionMilli`).
public struct NodeRequest: Hashable, Codable, Sendable {
    /// Whole GPUs per node; 0 for CPU-only work or a fractional replica.
    public var gpus: Int
    /// A share of a single GPU in thousandths (1…999), or nil for whole GPUs.
    public var fractionMilli: Int?
    public var cpuMilli: Int
    public var memoryMiB: Int
    /// The whole node: every GPU, CPU and byte of memory, and no one else on it (Slurm's `--exclusive`).
    public var exclusive: Bool
    /// All of the node's memory, whatever its size (Slurm's `--mem=0`).
    public var allMemory: Bool

    public init(gpus: Int, fractionMilli: Int? = nil, cpuMilli: Int = 0, memoryMiB: Int = 0, exclusive: Bool = false, allMemory: Bool = false) {
        self.gpus = gpus
        self.fractionMilli = fractionMilli
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
        self.exclusive = exclusive
        self.allMemory = allMemory
    }

    /// GPU capacity this node request takes, in thousandths of a GPU.
    public var gpuMilli: Int { self.fractionMilli ?? self.gpus * 1000 }
}
