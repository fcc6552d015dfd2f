import AllotCore
import AllotHTTPClient
public import AllotStore
import Foundation
public import Logging
public import ServiceLifecycle

/// Starts placed attempts on their agents (retried with backoff, idempotent by rank key) and delivers stops.
/// Launches and stops are claimed in the database, so a launch is never sent twice at once.
public struct Dispatcher: Service {
    public let database: Database
    public let leadership: Leadership
    public let wake: Wakeup
    public let interval: Duration
    /// Tries per attempt before it ends `dispatch_failed` and the job is requeued.
    public let maxTries: Int
    public let metrics: Metrics
    public let nodeKeys: NodeKeys
    public let logger: Logger
    /// Accepted launches, recorded together: the ranks that agents accepted while one batch commits go in the next.
    let accepted: GroupCommit<(DispatchStore, RankKey), Void>

    public init(
        database: Database, leadership: Leadership, wake: Wakeup, interval: Duration, maxTries: Int, metrics: Metrics, nodeKeys: NodeKeys,
        logger: Logger
    ) {
        self.nodeKeys = nodeKeys
        self.database = database
        self.leadership = leadership
        self.wake = wake
        self.interval = interval
        self.maxTries = maxTries
        self.metrics = metrics
        self.logger = logger
        self.accepted = GroupCommit(inFlightLimit: 2) { batch in
            // By fence: should leadership have changed between rounds, each term's ranks go through its own store.
            var out = [Result<Void, any Error>](repeating: .success(()), count: batch.count)
            for indices in Dictionary(grouping: batch.indices, by: { batch[$0].0.database.fence }).values {
                for (i, result) in zip(indices, await Self.record(indices.map { batch[$0].1 }, in: batch[indices[0]].0)) { out[i] = result }
            }
            return out
        }
    }

    /// Accepted ranks recorded in one transaction; should it fail (a deadlock with a heartbeat's or the scheduler's
    /// transaction, say), each on its own, as before batching.
    static func record(_ keys: [RankKey], in store: DispatchStore) async -> [Result<Void, any Error>] {
        if let together = try? await store.markDispatched(keys) { return together }
        var results: [Result<Void, any Error>] = []
        for key in keys {
            do {
                try await store.markDispatched(key)
                results.append(.success(()))
            } catch {
                results.append(.failure(error))
            }
        }
        return results
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                if let fence = self.leadership.fence {
                    // Claims and what follows them are fenced: a deposed leader's writes are refused, and agents
                    // refuse its launches once they have seen a newer epoch.
                    let store = DispatchStore(database: self.database.fenced(by: fence))
                    // Bounded, as the scheduler's cycles are: a claim whose connection died must not stop dispatch.
                    switch await SchedulerLoop.within(.seconds(30), { (try await store.claimLaunches(), try await store.claimStops()) }) {
                    case .done(let (launches, stops)):
                        for work in launches { group.addTask { await self.launch(work, store: store, fence: fence) } }
                        for stop in stops { group.addTask { await self.stop(stop) } }
                    case .failed(let error):
                        if !self.leadership.refused(error) { self.logger.warning("dispatch round failed", metadata: ["error": "\(error)"]) }
                    case .timedOut:
                        self.logger.error("a dispatch round took over 30 s (a database call that never returned?): abandoned")
                    }
                }
                await self.wake.wait(upTo: self.interval)
            }
        }
    }

    /// The rendezvous port of an attempt placed before ports were reserved (`LaunchWork.rendezvousPort`).
    static func masterPort(job: Int64, attempt: Int) -> Int { 29500 + Int(job % 2000) * 10 + attempt % 10 }

    func launch(_ work: LaunchWork, store: DispatchStore, fence: Fence) async {
        let master = work.ranks.first { $0.rank == 0 }?.agentURL.flatMap { URLComponents(string: $0)?.host } ?? "127.0.0.1"
        let slurm = work.slurm.map { options in
            SlurmLaunch(
                options: options, jobName: work.name, account: work.project.map { "\(work.org)/\($0)" } ?? work.org, partition: work.pool,
                nodes: work.ranks.sorted { $0.rank < $1.rank }.map {
                    SlurmLaunch.Node(
                        name: $0.node, address: $0.agentURL.flatMap { URLComponents(string: $0)?.host } ?? $0.node, agentURL: $0.agentURL)
                }, stepKey: options.batchStep ? NodeKey.hex(self.nodeKeys.stepKey(launchID: work.launchID)) : nil, array: work.array)
        }
        var failure: (node: String, error: String)?
        var refusal: (node: String, reason: String, rank: Int, launch: Int)?
        await withTaskGroup(of: (LaunchWork.Rank, (any Error)?).self) { group in
            for rank in work.ranks where !rank.dispatched {
                group.addTask {
                    guard let url = rank.agentURL else {
                        return (rank, APIClient.Failure.unreachable(url: "-", underlying: "no agent has registered"))
                    }
                    var request = LaunchRequest(
                        key: RankKey(jobID: work.jobID, attempt: work.attempt, rank: rank.rank), command: work.command, env: work.env,
                        workingDir: work.workingDir, gpuIndices: rank.gpuIndices,
                        gang: GangInfo(
                            masterAddr: master, masterPort: work.rendezvousPort ?? Self.masterPort(job: work.jobID, attempt: work.attempt),
                            nnodes: work.ranks.count,
                            nodeRank: rank.rank, nprocPerNode: max(1, work.gpusPerNode)),
                        gracePeriodSeconds: work.gracePeriodSeconds,
                        tenant: RankTenant(
                            org: work.org, owner: work.owner, account: work.account, cpuMilli: rank.cpuMilli, memoryMiB: rank.memoryMiB,
                            image: work.image), launchID: work.launchID, timeLimitSeconds: work.timeLimitSeconds, signal: work.signal,
                        slurm: slurm, epoch: fence.epoch, gpuUUIDs: rank.gpuUUIDs.contains("") ? nil : rank.gpuUUIDs)
                    request.shareMilli = rank.shareMilli
                    // A restarted replica's launch is a new one to its agent (which sets the earlier one aside).
                    if rank.launch > 0 {
                        request.launch = rank.launch
                        request.launchID = "\(work.launchID)-r\(rank.launch)"
                    }
                    do {
                        let _: RankStatus = try await self.nodeKeys.agent(url, node: rank.node, enrolment: rank.enrolment, timeout: .seconds(10))
                            .post("/v1/attempts", json: request)
                        return (rank, nil)
                    } catch {
                        return (rank, error)
                    }
                }
            }
            for await (rank, error) in group {
                if case .api(422, let body)? = error as? APIClient.Failure {
                    refusal = (rank.node, body.error.message, rank.rank, rank.launch)
                } else if let error {
                    failure = (rank.node, "\(error)")
                } else {
                    let key = RankKey(jobID: work.jobID, attempt: work.attempt, rank: rank.rank)
                    do {
                        try await self.accepted.submit((store, key))
                    } catch {
                        self.logger.warning("recording a dispatch failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
        if let refusal {
            self.logger.warning("launch refused", metadata: ["job": "\(work.jobID)", "node": "\(refusal.node)", "reason": "\(refusal.reason)"])
            do {
                try await store.launchRefused(
                    jobID: work.jobID, attempt: work.attempt, node: refusal.node, reason: refusal.reason, rank: refusal.rank,
                    launch: refusal.launch)
            } catch {
                self.logger.warning("recording a refused launch failed", metadata: ["error": "\(error)"])
            }
        } else if let failure {
            self.metrics.dispatchFailed()
            self.logger.info("dispatch failed", metadata: ["job": "\(work.jobID)", "node": "\(failure.node)", "error": "\(failure.error)"])
            do {
                try await store.dispatchFailed(
                    jobID: work.jobID, attempt: work.attempt, node: failure.node, error: failure.error, maxTries: self.maxTries)
            } catch {
                self.logger.warning("recording a dispatch failure failed", metadata: ["error": "\(error)"])
            }
        }
    }

    func stop(_ work: StopWork) async {
        do {
            let _: RankStatus = try await self.nodeKeys.agent(work.agentURL, node: work.node, enrolment: work.enrolment, timeout: .seconds(3))
                .post(
                    "/v1/attempts/\(work.key.jobID)/\(work.key.attempt)/\(work.key.rank)/stop",
                    json: StopRequest(gracePeriodSeconds: work.gracePeriodSeconds, warnFirst: work.warnFirst ? true : nil))
        } catch {
            self.logger.info("stop not delivered; will retry", metadata: ["rank": "\(work.key)", "node": "\(work.node)", "error": "\(error)"])
        }
    }
}
