/// A transition a lifecycle refuses: the event does not apply to the state it found. The store answers it as a
/// conflict (or, inside a plan, skips the change) and writes nothing.
public struct Refusal: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ message: String) { self.description = message }
}

/// One audit record a transition asks for; the store appends it in the transaction that applies the change.
public struct AuditEntry: Hashable, Sendable {
    public var actor: Principal
    public var action: String
    public var target: String
    public var outcome: String
    public var detail: [String: String]
    public init(actor: Principal, action: String, target: String, outcome: String, detail: [String: String] = [:]) {
        self.actor = actor
        self.action = action
        self.target = target
        self.outcome = outcome
        self.detail = detail
    }
}
