public import Foundation

/// One `srun` step of a batch job: what the agent of its first node reports and `allot jobs show` lists.
public struct StepStatus: Hashable, Codable, Sendable {
    public enum State: String, Codable, Sendable {
        case running, exited
    }
    public var jobID: Int64
    public var attempt: Int
    /// Slurm's step id: 0, 1, … in the order the script started them.
    public var step: Int
    /// The command, as srun was given it (at most 200 characters).
    public var command: String
    public var nodes: Int
    public var tasks: Int
    public var state: State
    /// The highest exit status of its tasks (128 + N for a signal), as srun returns it.
    public var exitCode: Int?
    public var startedAt: Date
    public var endedAt: Date?
    public init(
        jobID: Int64, attempt: Int, step: Int, command: String, nodes: Int, tasks: Int, state: State, exitCode: Int? = nil, startedAt: Date,
        endedAt: Date? = nil
    ) {
        self.jobID = jobID
        self.attempt = attempt
        self.step = step
        self.command = command
        self.nodes = nodes
        self.tasks = tasks
        self.state = state
        self.exitCode = exitCode
        self.startedAt = startedAt
        self.endedAt = endedAt
    }
}

/// The tasks of one step that one node runs (`POST /v1/steps/JOB/ATTEMPT/RANK`, from the agent of the job's
/// first node to the agent of rank RANK's, signed with the attempt's step key).
public struct StepTasks: Hashable, Codable, Sendable {
    public var step: Int
    public var argv: [String]
    /// The tasks' global ids (`SLURM_PROCID`); their local ids are their positions here.
    public var tasks: [Int]
    public var ntasks: Int
    public var nnodes: Int
    /// This node's place among the step's nodes (`SLURM_NODEID`).
    public var nodeID: Int
    public var nodelist: String
    public var tasksPerNode: String
    /// `--label`: each line of output starts with its task's id.
    public var label: Bool
    public var chdir: String?
    /// srun's environment as its shell exported it (`export -p`): the tasks start with it, as Slurm's.
    public var exports: String?
    public init(
        step: Int, argv: [String], tasks: [Int], ntasks: Int, nnodes: Int, nodeID: Int, nodelist: String, tasksPerNode: String, label: Bool,
        chdir: String? = nil, exports: String? = nil
    ) {
        self.exports = exports
        self.step = step
        self.argv = argv
        self.tasks = tasks
        self.ntasks = ntasks
        self.nnodes = nnodes
        self.nodeID = nodeID
        self.nodelist = nodelist
        self.tasksPerNode = tasksPerNode
        self.label = label
        self.chdir = chdir
    }
}

/// How one node's tasks of a step are doing, and their output from an offset on.
public struct StepProgress: Hashable, Codable, Sendable {
    public var ended: Bool
    /// The highest exit status of this node's tasks, once they all ended.
    public var exitCode: Int?
    public var output: Data
    public var nextOffset: Int
    public init(ended: Bool, exitCode: Int?, output: Data, nextOffset: Int) {
        self.ended = ended
        self.exitCode = exitCode
        self.output = output
        self.nextOffset = nextOffset
    }
}
