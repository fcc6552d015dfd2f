import AllotCore
import Foundation
import Testing

/// The lifecycles as tables: each row a state, an event, the state after and the actions asked for.
@Suite("Lifecycles: jobs, attempts with their ranks, nodes")
struct LifecycleTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static let op = Principal(name: "op", role: .operator)

    static func key(_ rank: Int, attempt: Int = 1) -> RankKey { RankKey(jobID: 7, attempt: attempt, rank: rank) }
    static func running(_ rank: Int) -> RankStatus { RankStatus(key: key(rank), state: .running) }
    static func exited(_ rank: Int, _ code: Int, signal: Int? = nil) -> RankStatus {
        RankStatus(key: key(rank), state: .exited, exitCode: code, signal: signal)
    }

    /// A two-rank gang on n1 and n2.
    static func gang(
        _ state: AttemptState = .placed, dispatched: Bool = false, ranks: RankState = .pending, replaces: Int? = nil
    )
        -> AttemptLifecycle
    {
        AttemptLifecycle(
            jobID: 7, number: 1, state: state, replaces: replaces,
            ranks: [
                .init(rank: 0, node: "n1", state: ranks, isDispatched: dispatched),
                .init(rank: 1, node: "n2", state: ranks, isDispatched: dispatched),
            ])
    }

    // MARK: - Attempts

    @Test("a batch step: the script's (rank 0's) exit 0 ends the attempt succeeded and stops the ranks hosting its steps")
    func batchStep() throws {
        func batch() -> AttemptLifecycle {
            AttemptLifecycle(
                jobID: 7, number: 1, state: .running, batchStep: true,
                ranks: [
                    .init(rank: 0, node: "n1", state: .running, isDispatched: true), .init(rank: 1, node: "n2", state: .running, isDispatched: true),
                ])
        }
        var a = batch()
        #expect(try a.apply(.reported([Self.exited(0, 0)], node: "n1"), now: Self.t0) == [])
        #expect(a.stop?.endAs == .succeeded && a.state == .running, "rank 1 is asked to stop")
        // The holder's end by SIGTERM (143) does not fail the job.
        let end = try a.apply(.reported([Self.exited(1, 143, signal: 15)], node: "n2"), now: Self.t0)
        #expect(a.state == .succeeded && a.exitCode == 0)
        #expect(end.contains(.ended(.succeeded, reason: "the batch script on n1 exited 0", exitCode: 0)))

        var failed = batch()
        _ = try failed.apply(.reported([Self.exited(0, 3)], node: "n1"), now: Self.t0)
        _ = try failed.apply(.reported([Self.exited(1, 143, signal: 15)], node: "n2"), now: Self.t0)
        #expect(failed.state == .failed && failed.exitCode == 3)

        // Without a batch step, one rank's exit 0 waits for the others.
        var gang = Self.gang(.running, dispatched: true, ranks: .running)
        _ = try gang.apply(.reported([Self.exited(0, 0)], node: "n1"), now: Self.t0)
        #expect(gang.stop == nil)
    }

    @Test("dispatch: placed → starting once every rank is accepted; a stopped or running attempt does not move")
    func dispatch() throws {
        var a = Self.gang()
        #expect(try a.apply(.dispatched(rank: 0), now: Self.t0) == [])
        #expect(a.state == .placed)
        #expect(try a.apply(.dispatched(rank: 1), now: Self.t0) == [.starting])
        #expect(a.state == .starting)
        #expect(try a.apply(.dispatched(rank: 1), now: Self.t0) == [])  // a retried dispatch changes nothing

        var r = Self.gang(.running, dispatched: false, ranks: .running)
        #expect(try r.apply(.dispatched(rank: 0), now: Self.t0) == [] && r.state == .running)

        var unknown = Self.gang()
        #expect(throws: Refusal.self) { try unknown.apply(.dispatched(rank: 5), now: Self.t0) }
    }

    @Test("every rank running: the attempt runs (usage starts); a replacement that runs stops the attempt it replaces")
    func running() throws {
        var a = Self.gang(.starting, dispatched: true)
        #expect(try a.apply(.reported([Self.running(0)], node: "n1"), now: Self.t0) == [])
        #expect(try a.apply(.reported([Self.running(1)], node: "n2"), now: Self.t0) == [.running])
        #expect(a.state == .running && a.startedAt == Self.t0)

        var replacement = AttemptLifecycle(
            jobID: 7, number: 2, state: .starting, replaces: 1, ranks: [.init(rank: 0, node: "n3", isDispatched: true)])
        let actions = try replacement.apply(.reported([RankStatus(key: Self.key(0, attempt: 2), state: .running)], node: "n3"), now: Self.t0)
        #expect(
            actions == [
                // Not credited: the service went on in the replacement.
                .stopAttempt(1, endAs: .drained, reason: "replaced by attempt 2, started elsewhere before its node was drained", credited: false),
                .running,
            ])
    }

    @Test("reports from another node, or for another attempt, are ignored")
    func foreignReports() throws {
        var a = Self.gang(.running, dispatched: true, ranks: .running)
        #expect(try a.apply(.reported([Self.exited(0, 0)], node: "n2"), now: Self.t0) == [.foreignReport(rank: 0, from: "n2")])  // on n1
        #expect(try a.apply(.reported([RankStatus(key: Self.key(0, attempt: 9), state: .exited, exitCode: 1)], node: "n1"), now: Self.t0) == [])
        #expect(a.ranks.allSatisfy { $0.state == .running })
    }

    @Test("all ranks exit 0: succeeded, GPUs released, usage closed uncredited, the job moves on")
    func succeeds() throws {
        var a = Self.gang(.running, dispatched: true, ranks: .running)
        #expect(try a.apply(.reported([Self.exited(0, 0)], node: "n1"), now: Self.t0) == [])
        let actions = try a.apply(.reported([Self.exited(1, 0)], node: "n2"), now: Self.t0)
        #expect(actions == [.releaseClaims, .closeUsage(credit: nil), .ended(.succeeded, reason: "exited 0", exitCode: 0)])
        #expect(a.state == .succeeded && a.endedAt == Self.t0 && a.exitCode == 0)
    }

    @Test("a rank exits 3: the gang is stopped; once the other has stopped the attempt fails with code 3")
    func failingRank() throws {
        var a = Self.gang(.running, dispatched: true, ranks: .running)
        #expect(try a.apply(.reported([Self.exited(1, 3)], node: "n2"), now: Self.t0) == [])
        #expect(a.stop?.endAs == .failed && a.reason == "rank 1 on n2 exited with code 3" && a.exitCode == 3)
        let actions = try a.apply(.reported([Self.exited(0, 143, signal: 15)], node: "n1"), now: Self.t0)
        #expect(actions == [.releaseClaims, .closeUsage(credit: nil), .ended(.failed, reason: "rank 1 on n2 exited with code 3", exitCode: 3)])
    }

    @Test("a rank killed by a signal: its exit code is 128 + the signal, and the reason says so")
    func killedRank() throws {
        var a = AttemptLifecycle(jobID: 7, number: 1, state: .running, ranks: [.init(rank: 0, node: "n1", state: .running, isDispatched: true)])
        let actions = try a.apply(.reported([Self.exited(0, 137, signal: 9)], node: "n1"), now: Self.t0)
        #expect(actions.last == .ended(.failed, reason: "rank 0 on n1 was killed by signal 9", exitCode: 137))
    }

    @Test("a vanished rank ends the attempt lost (credited): its agent restarted and the process is gone")
    func vanished() throws {
        var a = AttemptLifecycle(jobID: 7, number: 1, state: .running, ranks: [.init(rank: 0, node: "n1", state: .running, isDispatched: true)])
        let actions = try a.apply(.reported([RankStatus(key: Self.key(0), state: .vanished)], node: "n1"), now: Self.t0)
        #expect(actions.prefix(2) == [.releaseClaims, .closeUsage(credit: AttemptLifecycle.Credit(from: Self.t0, cause: a.reason ?? ""))])
        #expect(a.state == .lost && a.reason?.contains("vanished") == true)
    }

    @Test(
        "stop: ranks never dispatched or on a lost node end at once; the others are asked; the first reason wins",
        arguments: [
            (AttemptState.cancelled, false), (.preempted, false), (.failed, false), (.lost, true), (.drained, true), (.dispatchFailed, true),
        ])
    func stop(endAs: AttemptState, credited: Bool) throws {
        var undispatched = Self.gang()
        #expect(
            try undispatched.apply(.stop(endAs: endAs, reason: "why"), now: Self.t0) == [
                .releaseClaims, .closeUsage(credit: credited ? AttemptLifecycle.Credit(from: Self.t0, cause: "why") : nil),
                .ended(endAs, reason: "why", exitCode: nil),
            ])

        var live = AttemptLifecycle(
            jobID: 7, number: 1, state: .running,
            ranks: [
                .init(rank: 0, node: "n1", state: .running, isDispatched: true),
                .init(rank: 1, node: "n2", state: .running, isDispatched: true, nodeIsLost: true),
            ])
        #expect(try live.apply(.stop(endAs: endAs, reason: "first"), now: Self.t0) == [])
        #expect(live.ranks[1].state == .vanished && live.ranks[0].state == .running)
        #expect(try live.apply(.stop(endAs: .cancelled, reason: "second"), now: Self.t0) == [])
        #expect(live.stop?.endAs == endAs && live.reason == "first")
        let end = try live.apply(.reported([Self.exited(0, 143, signal: 15)], node: "n1"), now: Self.t0)
        #expect(end.last == .ended(endAs, reason: "first", exitCode: nil))
    }

    @Test("a credit runs from the fault's moment (a lost node's last heartbeat), never from before the stop's own time or later")
    func creditFromFault() throws {
        var a = AttemptLifecycle(jobID: 7, number: 1, state: .running, ranks: [.init(rank: 0, node: "n1", state: .running, isDispatched: true)])
        let fault = Self.t0.addingTimeInterval(-40)
        #expect(try a.apply(.stop(endAs: .lost, reason: "node n1 lost", faultAt: fault), now: Self.t0) == [])
        #expect(a.stop?.creditFrom == fault)
        let end = try a.apply(.reported([Self.exited(0, 143, signal: 15)], node: "n1"), now: Self.t0.addingTimeInterval(5))
        #expect(end.contains(.closeUsage(credit: AttemptLifecycle.Credit(from: fault, cause: "node n1 lost"))))

        // A fault "after" the stop (clock skew) is clipped to the stop's moment.
        var b = AttemptLifecycle(jobID: 7, number: 2, state: .running, ranks: [.init(rank: 0, node: "n1", state: .running, isDispatched: true)])
        _ = try b.apply(.stop(endAs: .drained, reason: "deadline", faultAt: Self.t0.addingTimeInterval(60)), now: Self.t0)
        #expect(b.stop?.creditFrom == Self.t0)

        // A replaced inference attempt, a preempted borrower, a failed job: no credit.
        for (endAs, credited) in [(AttemptState.drained, false), (.preempted, true), (.failed, true)] {
            var c = AttemptLifecycle(jobID: 7, number: 1, state: .running, ranks: [.init(rank: 0, node: "n1", state: .running, isDispatched: true)])
            _ = try c.apply(.stop(endAs: endAs, reason: "x", faultAt: fault, credited: credited), now: Self.t0)
            let closed = try c.apply(.reported([Self.exited(0, 143, signal: 15)], node: "n1"), now: Self.t0)
            #expect(closed.contains(.closeUsage(credit: nil)), "\(endAs)")
        }
    }

    @Test("an attempt that has ended ignores stops and reports")
    func endedIgnores() throws {
        var a = Self.gang(.succeeded, dispatched: true, ranks: .exited)
        #expect(try a.apply(.stop(endAs: .cancelled, reason: "late"), now: Self.t0) == [])
        #expect(try a.apply(.reported([Self.exited(0, 1)], node: "n1"), now: Self.t0) == [])
        #expect(a.state == .succeeded)
    }

    // MARK: - Jobs

    @Test("placement: queued → placed with the next attempt; a job not queued or being cancelled refuses")
    func placed() throws {
        var j = JobLifecycle(id: 7, maxAttempts: 3)
        #expect(try j.apply(.placed, now: Self.t0) == [])
        #expect(j.state == .placed && j.attempts == 1 && j.liveAttempts == [1] && j.reason == nil)
        #expect(throws: Refusal.self) { try j.apply(.placed, now: Self.t0) }
        var cancelling = JobLifecycle(id: 7, maxAttempts: 3, cancelRequested: true)
        #expect(throws: Refusal.self) { try cancelling.apply(.placed, now: Self.t0) }
        var queued = JobLifecycle(id: 7, maxAttempts: 3)
        #expect(throws: Refusal.self) { try queued.apply(.replacementPlaced, now: Self.t0) }
        var running = JobLifecycle(id: 7, state: .running, attempts: 1, maxAttempts: 3, liveAttempts: [1])
        #expect(try running.apply(.replacementPlaced, now: Self.t0) == [])
        #expect(running.attempts == 2 && running.liveAttempts == [1, 2] && running.state == .running)
    }

    @Test("starting and running follow the attempt; an attempt not live refuses")
    func progress() throws {
        var j = JobLifecycle(id: 7, state: .placed, attempts: 1, maxAttempts: 3, liveAttempts: [1])
        _ = try j.apply(.attemptStarting(1), now: Self.t0)
        #expect(j.state == .starting)
        _ = try j.apply(.attemptRunning(1), now: Self.t0)
        #expect(j.state == .running)
        _ = try j.apply(.attemptStarting(1), now: Self.t0)
        #expect(j.state == .running)  // never back
        #expect(throws: Refusal.self) { try j.apply(.attemptRunning(2), now: Self.t0) }
    }

    @Test(
        "how an attempt's ending moves its job",
        arguments: [
            // ending, attempts made, max, cancel requested → state, reason, exit code
            (AttemptState.succeeded, 1, 3, false, JobState.succeeded, "exited 0", 0 as Int?),
            (.failed, 1, 3, false, .failed, "why", 3),
            (.cancelled, 1, 3, false, .cancelled, "why", nil),
            (.lost, 1, 3, false, .queued, "requeued after attempt 1: why", nil),
            (.preempted, 2, 3, false, .queued, "requeued after attempt 2: why", nil),
            (.drained, 1, 3, false, .queued, "requeued after attempt 1: why", nil),
            // Infrastructure endings spend no attempt: the third of three is requeued; the 21st is one too many.
            (.dispatchFailed, 3, 3, false, .queued, "requeued after attempt 3: why", nil),
            (.lost, 21, 3, false, .failed, "attempt 21 lost: why; ended by the infrastructure 21 times, over the limit of 20", 3),
            (.lost, 1, 1, false, .failed, "attempt 1 lost: why; not requeued (maxAttempts 1, --no-requeue)", 3),
            (.lost, 1, 3, true, .cancelled, "cancelled", nil),
        ] as [(AttemptState, Int, Int, Bool, JobState, String, Int?)])
    func attemptEnded(ending: AttemptState, made: Int, max: Int, cancel: Bool, state: JobState, reason: String, exit: Int?) throws {
        // Every earlier attempt was ended by the infrastructure (the job is still live).
        var j = JobLifecycle(
            id: 7, state: .running, attempts: made, maxAttempts: max, interrupted: Array(1..<made), cancelRequested: cancel, liveAttempts: [made])
        let actions = try j.apply(.attemptEnded(made, ending, reason: "why", exitCode: 3), now: Self.t0)
        #expect(j.state == state && j.reason == reason && j.exitCode == exit)
        #expect(j.endedAt == (state.isTerminal ? Self.t0 : nil))
        #expect(j.liveAttempts.isEmpty)
        guard case .audit(let entry) = actions.first else { Issue.record("no audit record"); return }
        #expect(entry.outcome == "attempt \(made) \(ending.rawValue); job \(state.rawValue)")
    }

    @Test("while another attempt of the job is live, an ending promotes it and the job does not move")
    func carriesOn() throws {
        var j = JobLifecycle(id: 7, state: .running, attempts: 2, maxAttempts: 3, liveAttempts: [1, 2])
        let actions = try j.apply(.attemptEnded(1, .drained, reason: "replaced", exitCode: nil), now: Self.t0)
        #expect(actions.first == .promote(2, replacing: 1))
        #expect(j.state == .running && j.liveAttempts == [2])
    }

    @Test("cancel: a queued job ends at once; a live one is marked and its attempts stopped; an ended one is audited as such")
    func cancel() throws {
        var queued = JobLifecycle(id: 7, maxAttempts: 3)
        let q = try queued.apply(.cancel(by: Self.op), now: Self.t0)
        #expect(queued.state == .cancelled && queued.reason == "cancelled by op" && queued.endedAt == Self.t0 && !queued.cancelRequested)
        #expect(q == [.audit(AuditEntry(actor: Self.op, action: "job.cancel", target: "job/7", outcome: "ok"))])

        var live = JobLifecycle(id: 7, state: .running, attempts: 2, maxAttempts: 3, liveAttempts: [1, 2])
        let l = try live.apply(.cancel(by: Self.op), now: Self.t0)
        #expect(live.cancelRequested && live.state == .running)
        #expect(
            l.prefix(2) == [
                .stopAttempt(1, endAs: .cancelled, reason: "cancelled by op"), .stopAttempt(2, endAs: .cancelled, reason: "cancelled by op"),
            ])

        var done = JobLifecycle(id: 7, state: .succeeded, attempts: 1, maxAttempts: 3)
        let d = try done.apply(.cancel(by: Self.op), now: Self.t0)
        #expect(done.state == .succeeded && !done.cancelRequested)
        #expect(d == [.audit(AuditEntry(actor: Self.op, action: "job.cancel", target: "job/7", outcome: "already succeeded"))])
    }

    // MARK: - Nodes

    @Test(
        "node transitions that apply",
        arguments: [
            (NodeState.ready, "cordon", NodeState.cordoned), (.cordoned, "cordon", .cordoned), (.cordoned, "uncordon", .ready),
            (.ready, "uncordon", .ready), (.ready, "drain", .draining), (.cordoned, "drain", .draining), (.drained, "drain", .drained),
            (.draining, "undrain", .ready), (.drained, "undrain", .ready), (.maintenance, "undrain", .ready), (.draining, "emptied", .drained),
            (.ready, "emptied", .ready), (.ready, "lost", .lost), (.draining, "lost", .lost), (.lost, "returned", .ready),
            (.ready, "returned", .ready), (.drained, "windowEnded", .ready), (.lost, "windowEnded", .lost),
        ] as [(NodeState, String, NodeState)])
    func nodeTransitions(from: NodeState, event: String, to: NodeState) throws {
        var n = NodeLifecycle(name: "n1", state: from)
        _ = try n.apply(Self.nodeEvent(event))
        #expect(n.state == to)
    }

    @Test(
        "node transitions refused",
        arguments: [
            (NodeState.draining, "cordon"), (.drained, "cordon"), (.lost, "cordon"), (.maintenance, "cordon"), (.draining, "uncordon"),
            (.drained, "uncordon"), (.lost, "uncordon"), (.lost, "drain"), (.lost, "undrain"),
        ] as [(NodeState, String)])
    func nodeRefusals(from: NodeState, event: String) {
        var n = NodeLifecycle(name: "n1", state: from)
        #expect(throws: Refusal.self) { try n.apply(Self.nodeEvent(event)) }
        #expect(n.state == from)
    }

    @Test("node actions: downtime opened and closed, attempts stopped on loss, audit records")
    func nodeActions() throws {
        var n = NodeLifecycle(name: "n1", state: .draining, reason: "firmware", drainID: 4)
        #expect(
            try n.apply(.emptied) == [
                .startDowntime(.planned, reason: "firmware"),
                .audit(AuditEntry(actor: .scheduler, action: "node.drained", target: "node/n1", outcome: "drained")),
            ])
        let lost = try n.apply(.lost(reason: "no heartbeat for 30s", by: .scheduler))
        #expect(
            lost.prefix(2) == [
                .startDowntime(.lost, reason: "no heartbeat for 30s"), .stopAttempts(endAs: .lost, reason: "node n1 lost (no heartbeat for 30s)"),
            ])
        // Declared lost again: no second downtime, the attempts still stopped.
        #expect(try n.apply(.lost(reason: "declared", by: Self.op)).first == .stopAttempts(endAs: .lost, reason: "node n1 lost (declared)"))
        // Back with orphans: it waits, saying why; once they are gone it is ready and lost downtime ends.
        #expect(try n.apply(.agentReturned(orphans: 2, by: Self.op)) == [])
        #expect(n.state == .lost && n.reason == "returning: waiting for 2 orphaned processes to stop")
        #expect(try n.apply(.agentReturned(orphans: 0, by: Self.op)).first == .endDowntime(.lost))
        #expect(n.state == .ready && n.reason == nil)
        // Joining a drain keeps its id until the node returns to service.
        _ = try n.apply(.drain(id: 9, reason: "cables"))
        #expect(n.drainID == 9 && n.reason == "cables")
        #expect(try n.apply(.undrain(by: Self.op)).first == .endDowntime(.planned))
        #expect(n.drainID == nil)
    }

    static func nodeEvent(_ name: String) -> NodeLifecycle.Event {
        switch name {
        case "cordon": .cordon(by: Self.op)
        case "uncordon": .uncordon(by: Self.op)
        case "drain": .drain(id: 1, reason: "r")
        case "undrain": .undrain(by: Self.op)
        case "emptied": .emptied
        case "lost": .lost(reason: "r", by: Self.op)
        case "returned": .agentReturned(orphans: 0, by: Self.op)
        default: .windowEnded(by: Self.op)
        }
    }
}
