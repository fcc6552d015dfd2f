public import Foundation

/// A drain as `allot drain --wait` follows it.
public struct DrainView: Codable, Hashable, Sendable {
    public struct NodeProgress: Codable, Hashable, Sendable {
        public var node: String
        public var state: NodeState
        /// Jobs still running on the node.
        public var jobs: [Int64]
        public init(node: String, state: NodeState, jobs: [Int64]) {
            self.node = node
            self.state = state
            self.jobs = jobs
        }
    }
    public var id: Int64
    public var reason: String
    public var deadline: Date?
    public var createdAt: Date
    public var finishedAt: Date?
    public var nodes: [NodeProgress]
    public init(id: Int64, reason: String, deadline: Date?, createdAt: Date, finishedAt: Date?, nodes: [NodeProgress]) {
        self.id = id
        self.reason = reason
        self.deadline = deadline
        self.createdAt = createdAt
        self.finishedAt = finishedAt
        self.nodes = nodes
    }
}

public struct DrainRequest: Codable, Sendable {
    public var nodes: [String]
    public var reason: String
    /// Seconds from now after which running work is stopped; nil lets it finish however long it takes.
    public var deadlineSeconds: Int64?
    public init(nodes: [String], reason: String, deadlineSeconds: Int64?) {
        self.nodes = nodes
        self.reason = reason
        self.deadlineSeconds = deadlineSeconds
    }
}

public struct MaintenanceWindow: Codable, Hashable, Sendable {
    public var id: Int64
    public var nodes: [String]
    public var startsAt: Date
    public var endsAt: Date
    public var reason: String
    public var createdBy: String
    public var startedAt: Date?
    public var endedAt: Date?
    public init(
        id: Int64, nodes: [String], startsAt: Date, endsAt: Date, reason: String, createdBy: String, startedAt: Date?, endedAt: Date?
    ) {
        self.id = id
        self.nodes = nodes
        self.startsAt = startsAt
        self.endsAt = endsAt
        self.reason = reason
        self.createdBy = createdBy
        self.startedAt = startedAt
        self.endedAt = endedAt
    }
}

public struct MaintenanceRequest: Codable, Sendable {
    public var nodes: [String]
    public var startsAt: Date
    public var endsAt: Date
    public var reason: String
    public init(nodes: [String], startsAt: Date, endsAt: Date, reason: String) {
        self.nodes = nodes
        self.startsAt = startsAt
        self.endsAt = endsAt
        self.reason = reason
    }
}

/// One step of a GPU's health history.
public struct GPUHealthEvent: Codable, Hashable, Sendable {
    public var gpuIndex: Int
    public var at: Date
    public var from: GPUHealth
    public var to: GPUHealth
    public var cause: String
    public var xid: Int?
    public var jobID: Int64?
    public var actor: String
    public init(gpuIndex: Int, at: Date, from: GPUHealth, to: GPUHealth, cause: String, xid: Int?, jobID: Int64?, actor: String) {
        self.gpuIndex = gpuIndex
        self.at = at
        self.from = from
        self.to = to
        self.cause = cause
        self.xid = xid
        self.jobID = jobID
        self.actor = actor
    }
}

/// `allot nodes show NODE`: the node, its GPUs, their health history and its downtime.
public struct NodeDetail: Codable, Hashable, Sendable {
    public var node: NodeView
    public var stateReason: String?
    public var healthEvents: [GPUHealthEvent]
    public var runningJobs: [Int64]
    public init(node: NodeView, stateReason: String?, healthEvents: [GPUHealthEvent], runningJobs: [Int64]) {
        self.node = node
        self.stateReason = stateReason
        self.healthEvents = healthEvents
        self.runningJobs = runningJobs
    }
}

/// An XID event the agent read from the kernel log for one of its GPUs.
public struct XidEvent: Codable, Hashable, Sendable {
    public var xid: Int
    /// The kernel log's own stamp of the line, so an event read twice counts once.
    public var at: String
    public var message: String
    public init(xid: Int, at: String, message: String) {
        self.xid = xid
        self.at = at
        self.message = message
    }

    /// NVIDIA's XID catalogue, reduced to what a scheduler must decide: the application's fault (the GPU
    /// stays in service, marked suspect) or the hardware's (the GPU is quarantined).
    public enum Grade: Sendable { case application, hardware, informational }

    public static func grade(_ xid: Int) -> Grade {
        switch xid {
        // Graphics engine exceptions, illegal memory access, GPU stopped processing, preemptive cleanup, ROBUST_CHANNEL errors.
        case 13, 31, 43, 45, 68, 69: .application
        // Double-bit ECC, row-remap failures, NVLink errors, fallen off the bus, excessive SBE, contained/uncontained
        // ECC, GSP errors, internal micro-controller halts, reset required.
        case 48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 121, 136, 140, 143, 144, 145, 146, 147, 148, 149, 150, 151, 154, 155:
            .hardware
        default: .informational
        }
    }
}
