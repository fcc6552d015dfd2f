/// A node's administrative and liveness state as a state machine (SPEC §3, §4 Drain and Node loss):
/// ready ⇄ cordoned; ready | cordoned → draining (a drain plan) → drained once empty → ready by undrain;
/// any → lost when its agent falls silent (its attempts end lost), and lost → ready once the returning agent
/// shows that nothing the scheduler no longer knows runs there.
public struct NodeLifecycle: Hashable, Sendable {
    public enum Event: Hashable, Sendable {
        case cordon(by: Principal)
        case uncordon(by: Principal)
        /// Joins drain `id`: no new work; what runs leaves by the drain's deadline.
        case drain(id: Int64, reason: String)
        /// An operator returns the node to service.
        case undrain(by: Principal)
        /// A maintenance window ended or was removed: the node returns to service unless it is lost.
        case windowEnded(by: Principal)
        /// A draining node has no live work left.
        case emptied
        /// No heartbeat for the timeout, or an operator declared it lost.
        case lost(reason: String, by: Principal)
        /// The agent of a lost node reports again, still running `orphans` processes the scheduler no longer knows.
        case agentReturned(orphans: Int, by: Principal)
    }

    public enum Action: Hashable, Sendable {
        case startDowntime(DowntimeKind, reason: String?)
        case endDowntime(DowntimeKind)
        /// Stop every live attempt with a rank on this node; they end as `endAs`.
        case stopAttempts(endAs: AttemptState, reason: String)
        case audit(AuditEntry)
    }

    public let name: String
    public private(set) var state: NodeState
    public private(set) var reason: String?
    /// The drain the node belongs to while draining or drained.
    public private(set) var drainID: Int64?

    public init(name: String, state: NodeState = .ready, reason: String? = nil, drainID: Int64? = nil) {
        self.name = name
        self.state = state
        self.reason = reason
        self.drainID = drainID
    }

    var target: String { "node/\(self.name)" }

    public mutating func apply(_ event: Event) throws(Refusal) -> [Action] {
        switch event {
        case .cordon(let actor):
            guard self.state == .ready || self.state == .cordoned else {
                throw Refusal("node \(self.name) is \(self.state.rawValue): only a ready node can be cordoned")
            }
            self.state = .cordoned
            self.reason = "cordoned by \(actor.name)"
            return [.audit(AuditEntry(actor: actor, action: "node.cordon", target: self.target, outcome: "cordoned"))]
        case .uncordon(let actor):
            guard self.state == .cordoned || self.state == .ready else {
                throw Refusal("node \(self.name) is \(self.state.rawValue), not cordoned (use undrain for a drained node)")
            }
            self.state = .ready
            self.reason = nil
            return [.audit(AuditEntry(actor: actor, action: "node.uncordon", target: self.target, outcome: "ready"))]
        case .drain(let id, let reason):
            guard self.state != .lost else {
                throw Refusal("node \(self.name) is lost: declare it lost or wait for its agent, then drain")
            }
            if self.state != .drained { self.state = .draining }
            self.drainID = id
            self.reason = reason
            return []
        case .undrain(let actor):
            guard self.state != .lost else { throw Refusal("node \(self.name) is lost: it cannot be undrained") }
            return self.returnToService(actor)
        case .windowEnded(let actor):
            return self.returnToService(actor)
        case .emptied:
            guard self.state == .draining else { return [] }
            self.state = .drained
            return [
                .startDowntime(.planned, reason: self.reason),
                .audit(AuditEntry(actor: .scheduler, action: "node.drained", target: self.target, outcome: "drained")),
            ]
        case .lost(let reason, let actor):
            var actions: [Action] = []
            if self.state != .lost {
                self.state = .lost
                self.reason = reason
                actions.append(.startDowntime(.lost, reason: reason))
            }
            return actions + [
                .stopAttempts(endAs: .lost, reason: "node \(self.name) lost (\(reason))"),
                .audit(AuditEntry(actor: actor, action: "node.lost", target: self.target, outcome: "lost", detail: ["reason": reason])),
            ]
        case .agentReturned(let orphans, let actor):
            guard self.state == .lost else { return [] }
            // Its GPUs go back to work only once the agent shows that nothing the scheduler no longer knows still
            // runs there (the heartbeat's answer asks it to stop such processes).
            guard orphans == 0 else {
                self.reason = "returning: waiting for \(orphans) orphaned processes to stop"
                return []
            }
            self.state = .ready
            self.reason = nil
            return [.endDowntime(.lost), .audit(AuditEntry(actor: actor, action: "node.return", target: self.target, outcome: "ready"))]
        }
    }

    /// Back to ready (a lost node stays lost: its agent's return decides), planned downtime over.
    private mutating func returnToService(_ actor: Principal) -> [Action] {
        if self.state != .lost {
            self.state = .ready
            self.reason = nil
            self.drainID = nil
        }
        return [
            .endDowntime(.planned), .audit(AuditEntry(actor: actor, action: "node.undrain", target: self.target, outcome: self.state.rawValue)),
        ]
    }
}
