import AllotCore
import Foundation
import Testing

/// An inference service's replicas heal one at a time; a training gang stays all or nothing.
@Suite("Replica healing")
struct ReplicaHealingTests {
    static let t0 = LifecycleTests.t0

    /// A running service of three replicas on n1, n2, n3.
    static func service(limit: Int = 3) -> AttemptLifecycle {
        AttemptLifecycle(
            jobID: 7, number: 1, state: .running, healing: .init(limit: limit, windowSeconds: 600),
            ranks: (0..<3).map { .init(rank: $0, node: "n\($0 + 1)", state: .running, isDispatched: true) })
    }

    static func report(_ a: inout AttemptLifecycle, _ status: RankStatus, node: String, at seconds: Double) throws -> [AttemptLifecycle.Action] {
        try a.apply(.reported([status], node: node), now: Self.t0.addingTimeInterval(seconds))
    }

    static func relaunched(_ rank: Int, launch: Int, state: RankStatus.State = .running, code: Int? = nil) -> RankStatus {
        var s = RankStatus(key: LifecycleTests.key(rank), state: state, exitCode: code)
        s.launch = launch
        return s
    }

    @Test("a replica that exits starts again on its node after a back-off that doubles; the others are untouched; the service keeps running")
    func restartInPlace() throws {
        var a = Self.service(limit: 5)
        var waits: [Double] = []
        for n in 0..<3 {
            let actions = try Self.report(&a, Self.relaunched(1, launch: n, state: .exited, code: 7), node: "n2", at: Double(n * 10))
            guard case .restartRank(1, let after, false, let reason, nil)? = actions.first else {
                Issue.record("restart \(n): \(actions)")
                return
            }
            waits.append(after)
            #expect(reason == "replica 1 on n2: exited with code 7; restarted")
            #expect(a.state == .running && a.ranks[1].state == .pending && !a.ranks[1].isDispatched && a.ranks[1].launch == n + 1)
            #expect(a.ranks[0].state == .running && a.ranks[2].state == .running)
            // Dispatched and running again.
            _ = try a.apply(.dispatched(rank: 1), now: Self.t0)
            let back = try Self.report(&a, Self.relaunched(1, launch: n + 1), node: "n2", at: Double(n * 10 + 5))
            #expect(a.ranks[1].state == .running)
            #expect(back.contains(.rankRunning(1)))
        }
        #expect(waits == [1, 2, 4])
        // An exit 0 restarts too: a service is meant to run.
        let clean = try Self.report(&a, Self.relaunched(0, launch: 0, state: .exited, code: 0), node: "n1", at: 100)
        if case .restartRank(0, _, false, _, _)? = clean.first {} else { Issue.record("\(clean)") }
    }

    @Test("a report of an earlier launch, or before the new one is dispatched, is history")
    func staleReports() throws {
        var a = Self.service()
        _ = try Self.report(&a, Self.relaunched(2, launch: 0, state: .exited, code: 1), node: "n3", at: 0)
        #expect(a.ranks[2].launch == 1 && a.ranks[2].state == .pending)
        // The agent still lists launch 0 as exited, and a report races the relaunch: neither restarts it again.
        #expect(try Self.report(&a, Self.relaunched(2, launch: 0, state: .exited, code: 1), node: "n3", at: 1).isEmpty)
        #expect(try Self.report(&a, Self.relaunched(2, launch: 1, state: .exited, code: 1), node: "n3", at: 1).isEmpty)
        #expect(a.ranks[2].launch == 1 && a.ranks[2].restartedAt.count == 1)
    }

    @Test("past its limit in the window a replica is left down and the service runs degraded; once every replica is down it fails")
    func limit() throws {
        var a = Self.service(limit: 2)
        for n in 0..<2 {
            _ = try Self.report(&a, Self.relaunched(0, launch: n, state: .exited, code: 1), node: "n1", at: Double(n))
            _ = try a.apply(.dispatched(rank: 0), now: Self.t0)
        }
        let third = try Self.report(&a, Self.relaunched(0, launch: 2, state: .exited, code: 1), node: "n1", at: 3)
        guard case .rankGivenUp(0, let why, nil)? = third.first else {
            Issue.record("\(third)")
            return
        }
        #expect(why.contains("restarted 2 times in 600s"))
        #expect(a.state == .running && a.ranks[0].state == .exited)
        // Outside the window the count starts over: replica 1 restarts long after.
        var b = Self.service(limit: 1)
        _ = try Self.report(&b, Self.relaunched(1, launch: 0, state: .exited, code: 1), node: "n2", at: 0)
        _ = try b.apply(.dispatched(rank: 1), now: Self.t0)
        let later = try Self.report(&b, Self.relaunched(1, launch: 1, state: .exited, code: 1), node: "n2", at: 700)
        if case .restartRank(1, _, _, _, _)? = later.first {} else { Issue.record("\(later)") }
        // Every replica down for good: the attempt fails.
        var c = Self.service(limit: 0)
        for r in 0..<3 { _ = try Self.report(&c, Self.relaunched(r, launch: 0, state: .exited, code: 1), node: "n\(r + 1)", at: Double(r)) }
        #expect(c.state == .failed && c.reason?.contains("every replica ended") == true, "\(c.state) \(c.reason ?? "")")
    }

    @Test("a lost node's replica moves: it waits for a node, its time credited from the fault; the others run on")
    func nodeLost() throws {
        var a = Self.service()
        let fault = Self.t0.addingTimeInterval(-4)
        let actions = try a.apply(.nodeLost("n2", reason: "node n2 lost (silent)", faultAt: fault), now: Self.t0)
        guard case .restartRank(1, _, true, let reason, fault)? = actions.first else {
            Issue.record("\(actions)")
            return
        }
        #expect(reason == "replica 1 on n2: node n2 lost (silent); moved to another node")
        #expect(a.state == .running && a.ranks[1].needsNode && a.ranks[1].state == .pending)
        a.moveRank(1, to: "n4")
        #expect(a.ranks[1].node == "n4" && !a.ranks[1].needsNode)
        // A service whose every replica was on the lost node, and a training gang, stop as lost.
        var alone = AttemptLifecycle(
            jobID: 7, number: 1, state: .running, healing: .init(),
            ranks: [.init(rank: 0, node: "n1", state: .running, isDispatched: true, nodeIsLost: true)])
        _ = try alone.apply(.nodeLost("n1", reason: "lost", faultAt: fault), now: Self.t0)
        #expect(alone.state == .lost && alone.stop?.creditFrom == fault)
        var gang = LifecycleTests.gang(.running, dispatched: true, ranks: .running)
        _ = try gang.apply(.nodeLost("n1", reason: "lost", faultAt: fault), now: Self.t0)
        #expect(gang.stop?.endAs == .lost)
    }

    @Test("a training gang is all or nothing: one rank's failure stops the others")
    func gangUnchanged() throws {
        var gang = LifecycleTests.gang(.running, dispatched: true, ranks: .running)
        _ = try gang.apply(.reported([LifecycleTests.exited(1, 3)], node: "n2"), now: Self.t0)
        #expect(gang.stop?.endAs == .failed && gang.ranks[0].state == .running)
    }
}
