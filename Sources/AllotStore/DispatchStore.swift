public import AllotCore
import Foundation
import PostgresNIO

/// One attempt's ranks that the dispatcher must start, with everything the agents need.
public struct LaunchWork: Sendable, Hashable {
    public struct Rank: Sendable, Hashable {
        public var rank: Int
        public var node: String
        /// Where its agent was enrolled; nil until it registers.
        public var agentURL: String?
        /// The node's enrolment, from which its signing key is derived.
        public var enrolment: Int
        public var gpuIndices: [Int]
        /// The UUIDs of those GPUs, in the same order ("" for a GPU that reported none).
        public var gpuUUIDs: [String] = []
        public var cpuMilli: Int
        public var memoryMiB: Int
        public var dispatched: Bool
        /// The thousandths of its one GPU a shared rank holds (nil for whole GPUs and MIG devices).
        public var shareMilli: Int? = nil
        /// Which launch of a restarted replica this is (0: the first).
        public var launch = 0
    }
    public var jobID: Int64
    public var attempt: Int
    public var ranks: [Rank]
    public var command: String
    public var env: [String: String]
    public var workingDir: String?
    public var gpusPerNode: Int
    public var gracePeriodSeconds: Int
    public var org: String
    public var owner: String
    /// The Unix account the ranks run as (Policies/: the owner's, else the organisation's, else `allot-ORG`).
    public var account: String
    public var image: String?
    /// The attempt's own random id, which its agents keep with each rank.
    public var launchID: String
    public var name: String = ""
    public var pool: String = ""
    public var project: String?
    public var timeLimitSeconds: Int64?
    public var signal: JobSignal?
    public var slurm: SlurmOptions?
    public var array: SlurmLaunch.ArrayTask?
    /// The port reserved for the gang's rendezvous on the rank-0 node (MASTER_PORT); nil for an attempt placed
    /// before ports were reserved.
    public var rendezvousPort: Int? = nil
}

/// A rank the dispatcher must ask its agent to stop.
public struct StopWork: Sendable, Hashable {
    public var key: RankKey
    public var node: String
    public var agentURL: String
    public var enrolment: Int
    public var gracePeriodSeconds: Int
    /// A drain's or a reclaim's stop: the job's warning signal (`--signal`) goes first.
    public var warnFirst: Bool = false
}

/// The dispatcher's side of attempts: launches and stops are claimed (so no two dispatchers, or two rounds of
/// one, send the same work at once), and what the agents answered moves the attempt on.
public struct DispatchStore: Sendable {
    public let database: Database
    /// How long a claimed launch stays with the dispatcher that took it before another may retry it.
    public var leaseSeconds = 15
    public init(database: Database) { self.database = database }

    /// Attempts placed but not yet started on every agent, whose next try is due; each is leased to the caller.
    public func claimLaunches() async throws -> [LaunchWork] {
        try await self.database.transaction { tx in try await tx.attempts.claimLaunches(leaseSeconds: self.leaseSeconds) }
    }

    /// Records that an agent accepted a rank; once every rank is accepted the attempt (and job) is `starting`.
    public func markDispatched(_ key: RankKey) async throws {
        try await self.database.transaction { tx in try await tx.transitions.attempt(key.jobID, key.attempt, .dispatched(rank: key.rank)) }
    }

    /// Records ranks their agents accepted, several at once, in one transaction and in job order (as every change
    /// to attempts is, so that concurrent writers queue rather than deadlock). A transition the state found refuses
    /// is that rank's answer and leaves the others; a database error fails them all. (The agent's answer to a launch
    /// is not taken as its report here: doing so locked the job before the node, against a heartbeat's order, and
    /// deadlocked with the node's next report; `running` comes from that report.)
    public func markDispatched(_ keys: [RankKey]) async throws -> [Result<Void, any Error>] {
        try await self.database.transaction { tx in
            var results = [Result<Void, any Error>](repeating: .success(()), count: keys.count)
            for i in keys.indices.sorted(by: { (keys[$0].jobID, keys[$0].attempt) < (keys[$1].jobID, keys[$1].attempt) }) {
                do {
                    try await tx.transitions.attempt(keys[i].jobID, keys[i].attempt, .dispatched(rank: keys[i].rank))
                } catch let refused as StoreError {
                    results[i] = .failure(refused)
                }
            }
            return results
        }
    }

    /// Counts a failed dispatch and backs off (0.5 s doubling, capped at 8 s); after `maxTries` the attempt ends
    /// `dispatch_failed` and the job is requeued. Returns true when the attempt was given up.
    @discardableResult
    public func dispatchFailed(jobID: Int64, attempt: Int, node: String, error: String, maxTries: Int) async throws -> Bool {
        try await self.database.transaction { tx in
            guard let tries = try await tx.attempts.countDispatchFailure(jobID, attempt), tries >= maxTries else { return false }
            try await tx.transitions.attempt(
                jobID, attempt,
                .stop(endAs: .dispatchFailed, reason: "the agent on \(node) did not accept the launch after \(tries) tries: \(error)"))
            return true
        }
    }

    /// The agent refused the launch for a reason that retrying cannot mend (its node lacks the job's account, say):
    /// the attempt ends failed with that reason, and the job with it.
    /// A restarted replica's launch that is refused counts as that replica ending (it heals again after its back-off,
    /// or is left down): the rest of the service runs on.
    public func launchRefused(jobID: Int64, attempt: Int, node: String, reason: String, rank: Int = 0, launch: Int = 0) async throws {
        try await self.database.transaction { tx in
            guard launch > 0 else {
                try await tx.transitions.attempt(jobID, attempt, .stop(endAs: .failed, reason: "the agent on \(node) refused the launch: \(reason)"))
                return
            }
            var ended = RankStatus(
                key: RankKey(jobID: jobID, attempt: attempt, rank: rank), state: .exited, exitCode: 126,
                detail: "the agent refused its launch: \(reason.prefix(300))")
            ended.launch = launch
            try await tx.transitions.attempt(jobID, attempt, .dispatched(rank: rank))
            try await tx.transitions.attempt(jobID, attempt, .reported([ended], node: node))
        }
    }

    /// Ranks of attempts being stopped that their agents have not yet confirmed; each attempt at most every 5 s.
    public func claimStops() async throws -> [StopWork] {
        try await self.database.transaction { tx in try await tx.attempts.claimStops() }
    }
}
