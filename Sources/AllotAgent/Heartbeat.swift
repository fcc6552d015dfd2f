public import AllotCore
public import AllotHTTPClient
import Foundation
public import Logging
public import ServiceLifecycle

/// What the agent reports of its node, apart from its ranks.
public struct NodeInventory: Sendable {
    public var gpus: [GPUInfo]
    public var cpuMilli: Int
    public var memoryMiB: Int
    public init(gpus: [GPUInfo], cpuMilli: Int, memoryMiB: Int) {
        self.gpus = gpus
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
    }
}

/// Registers with allotd, then reports every `interval`: inventory and ranks. Applies the answer: stops ranks
/// the scheduler no longer holds live (reconciliation after a loss) and forgets acknowledged endings.
/// Also polls the supervisor, so exits are noticed within a fraction of a second.
public struct Heartbeat: Service {
    /// allotd's addresses: every allotd serves the API, so when one does not answer the next is tried.
    public let servers: [APIClient]
    public let node: String
    public let agentURL: String
    public let supervisor: Supervisor
    public let interval: Duration
    /// Re-discovers the inventory (GPU health changes) at most this often.
    public let discover: @Sendable () throws -> NodeInventory
    public let logger: Logger
    /// Runs the srun steps of the batch scripts on this node.
    public let steps: StepRunner

    public init(
        server: APIClient, node: String, agentURL: String, supervisor: Supervisor, interval: Duration,
        logger: Logger, discover: @escaping @Sendable () throws -> NodeInventory
    ) {
        self.init(servers: [server], node: node, agentURL: agentURL, supervisor: supervisor, interval: interval, logger: logger, discover: discover)
    }

    public init(
        servers: [APIClient], node: String, agentURL: String, supervisor: Supervisor, interval: Duration,
        logger: Logger, discover: @escaping @Sendable () throws -> NodeInventory
    ) {
        precondition(!servers.isEmpty, "a heartbeat needs an allotd to report to")
        self.servers = servers
        self.node = node
        self.agentURL = agentURL
        self.supervisor = supervisor
        self.interval = interval
        self.discover = discover
        self.logger = logger
        self.steps = StepRunner(supervisor: supervisor)
    }

    /// The shortest time between two reports, when ranks change faster than that.
    static let soonest = Duration.milliseconds(100)

    public func run() async throws {
        var inventory = try self.discover()
        await self.supervisor.setGPUs(inventory.gpus)
        var lastDiscovery = ContinuousClock.now
        var registered = false
        var nextBeat = ContinuousClock.now
        var failures = 0
        var current = 0
        var lastBeat = ContinuousClock.now
        var reported = -1
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await self.supervisor.poll()
            await self.steps.tick()
            // A rank that started or ended is reported at once (at most every `soonest`), not at the next beat:
            // the job runs, or its GPUs are free for the next one, a beat's interval sooner.
            let changes = await self.supervisor.changes
            let changed = registered && failures == 0 && changes != reported && ContinuousClock.now - lastBeat >= Self.soonest
            if ContinuousClock.now >= nextBeat || changed {
                if ContinuousClock.now - lastDiscovery > .seconds(30) {
                    do {
                        inventory = try self.discover()
                        await self.supervisor.setGPUs(inventory.gpus)
                    } catch {
                        self.logger.warning("GPU discovery failed; reporting the last inventory", metadata: ["error": "\(error)"])
                    }
                    lastDiscovery = ContinuousClock.now
                }
                do {
                    try await self.beat(inventory, path: registered ? "/v1/agents/heartbeat" : "/v1/agents/register", via: self.servers[current])
                    if !registered {
                        self.logger.info("registered with allotd", metadata: ["node": "\(self.node)", "gpus": "\(inventory.gpus.count)"])
                    }
                    registered = true
                    failures = 0
                    reported = changes
                    lastBeat = ContinuousClock.now
                    nextBeat = lastBeat + self.interval
                } catch {
                    failures += 1
                    current = (current + 1) % self.servers.count
                    // Keep trying, a little slower each time, up to the heartbeat interval.
                    let wait = min(self.interval, .milliseconds(250 * (1 << min(failures, 4))))
                    if failures == 1 || failures % 10 == 0 {
                        self.logger.warning("heartbeat failed", metadata: ["error": "\(error)", "failures": "\(failures)"])
                    }
                    nextBeat = ContinuousClock.now + wait
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    func beat(_ inventory: NodeInventory, path: String, via server: APIClient) async throws {
        let sentAt = Date()
        var report = AgentReport(
            node: self.node, agentURL: self.agentURL, cpuMilli: inventory.cpuMilli,
            memoryMiB: inventory.memoryMiB, gpus: inventory.gpus, ranks: await self.supervisor.statuses(), steps: await self.steps.statuses())
        report.gpuSharing = self.supervisor.sharing.sharing
        let reply: HeartbeatReply = try await server.post(path, json: report)
        await self.supervisor.acknowledge(reply.acknowledged)
        let stopped = await self.supervisor.reconcile(live: Set(reply.live), heartbeatSentAt: sentAt)
        if !stopped.isEmpty {
            self.logger.warning("stopping ranks the scheduler no longer knows", metadata: ["ranks": "\(stopped)"])
        }
    }
}

extension NodeInventory {
    /// CPU and memory of this machine, for `--cpus`/`--memory` left unset.
    public static func hostResources() -> (cpuMilli: Int, memoryMiB: Int) {
        (ProcessInfo.processInfo.activeProcessorCount * 1000, Int(ProcessInfo.processInfo.physicalMemory / (1 << 20)))
    }
}
