public import AllotCore
public import AllotHTTPClient
import AllotHTTPServer
public import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore
import NIOFoundationCompat
import ServiceLifecycle

/// Many simulated nodes in one process, to measure allotd at national-cluster scale (`allot-agent simulate`,
/// ops/bench). Each node is what a real agent is to allotd — its own name, bearer token and node key,
/// its own agent URL (`http://LISTEN/nodes/NAME`), heartbeats with its inventory and ranks, launches and stops
/// signed with its key and checked like the real agent's, over real HTTP — but it runs no process: a rank "runs"
/// for the seconds a leading `sleep N` of its command asks (none otherwise) and exits 0; a stopped one ends as
/// SIGTERM does (143). Like the real agent, a change is reported at once (at most every 100 ms per node).
public actor SimulatedNodes {
    public struct Node: Sendable {
        public var name: String
        public var token: String
        public var key: Data
        public init(name: String, token: String, key: Data) {
            self.name = name
            self.token = token
            self.key = key
        }
    }

    struct Rank {
        var status: RankStatus
        var endsAt: Date?
        var launchedAt: Date
        var acknowledged = false
    }

    struct State {
        var node: Node
        var gpus: [GPUInfo]
        var ranks: [RankKey: Rank] = [:]
        var changes = 0
        var reported = -1
        var registered = false
        var sending = false
        var failures = 0
        var nextBeat: ContinuousClock.Instant
        var lastBeat: ContinuousClock.Instant
        var epoch: Int64 = 0
    }

    private var states: [String: State] = [:]
    /// Reports on their way: at most `inFlightLimit`, the HTTP client's connections to one host, so a report waits
    /// here (late, as a slow agent's is) rather than in the client's queue, where it would time out after 3 s.
    private var inFlight = 0
    static let inFlightLimit = 64
    /// When each node is next looked at, by tick since `started`: a node is found when it is due, without scanning
    /// the others (10,000 nodes every 5 s are 2,000 reports a second). A node may be listed more than once; a look
    /// that finds nothing due does nothing, since every change to a node lists it again (`lookAgain`).
    private var wheel: [Int64: [String]] = [:]
    private var wheelDone: Int64 = 0
    /// Due, but held back by the in-flight limit.
    private var ready: [String] = []
    private let started: ContinuousClock.Instant
    static let tick = Duration.milliseconds(5)
    let servers: [String]
    let baseURL: String
    let cpuMilli: Int
    let memoryMiB: Int
    let interval: Duration
    let logger: Logger
    nonisolated let nonces = Nonces()

    /// `baseURL` is where this process's API is reached (`http://HOST:PORT`); each node's agent URL is under it.
    public init(
        nodes: [Node], gpus: String, cpuMilli: Int, memoryMiB: Int, servers: [String], baseURL: String, interval: Duration, logger: Logger
    ) throws {
        let now = ContinuousClock.now
        self.started = now
        for (i, node) in nodes.enumerated() {
            // Spread the first beats over one interval, as agents started at different times are.
            let offset = interval * (Double(i) / Double(max(1, nodes.count)))
            self.states[node.name] = State(
                node: node, gpus: try GPUDiscovery.simulated(gpus, node: node.name), nextBeat: now + offset, lastBeat: now)
            self.wheel[max(1, Int64((offset / Self.tick).rounded(.up))), default: []].append(node.name)
        }
        self.servers = servers
        self.baseURL = baseURL
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
        self.interval = interval
        self.logger = logger
    }

    public nonisolated func agentURL(of node: String) -> String { "\(self.baseURL)/nodes/\(node)" }

    /// The seconds a command "runs": a leading `sleep N` (N in seconds, a fraction allowed), else none.
    public static func runSeconds(of command: String) -> Double {
        let words = command.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == ";" || $0 == "\t" })
        guard words.count >= 2, words[0] == "sleep", let seconds = Double(words[1].trimmingCharacters(in: CharacterSet(charactersIn: "s"))) else {
            return 0
        }
        return max(0, seconds)
    }

    // MARK: - What allotd asks of a node

    func launch(_ request: LaunchRequest, on node: String) throws(APIError) -> RankStatus {
        guard var state = self.states[node] else { throw APIError.notFound("no simulated node \(node)") }
        if let e = request.epoch {
            state.epoch = max(state.epoch, e)
            guard e == state.epoch else {
                self.states[node] = state
                throw APIError(
                    .conflict, code: "stale_epoch", message: "launched by leader epoch \(e), but epoch \(state.epoch) leads now", field: "epoch")
            }
        }
        // The same launch again is a retried dispatch; a restarted replica's next launch starts it anew.
        if let known = state.ranks[request.key], known.status.launch == request.launch {
            self.states[node] = state
            return known.status
        }
        let now = Date()
        var status = RankStatus(key: request.key, state: .running, exitCode: nil, signal: nil, pid: nil, detail: nil)
        status.launch = request.launch
        state.ranks[request.key] = Rank(status: status, endsAt: now.addingTimeInterval(Self.runSeconds(of: request.command)), launchedAt: now)
        state.changes += 1
        self.states[node] = state
        self.lookAgain(node)
        return status
    }

    func stop(_ key: RankKey, on node: String) throws(APIError) -> RankStatus {
        guard var rank = self.states[node]?.ranks[key] else { throw APIError.notFound("no rank \(key) on \(node)") }
        if rank.status.state == .running {
            rank.status.state = .exited
            rank.status.signal = 15
            rank.status.exitCode = 128 + 15
            rank.endsAt = nil
            self.states[node]?.ranks[key] = rank
            self.states[node]?.changes += 1
            self.lookAgain(node)
        }
        return rank.status
    }

    func statuses(on node: String) -> [RankStatus] { (self.states[node]?.ranks.values.map(\.status) ?? []).sorted { "\($0.key)" < "\($1.key)" } }

    func key(of node: String) -> Data? { self.states[node]?.node.key }

    // MARK: - Heartbeats

    /// Ends the ranks whose time is up, and sends the reports that are due (at most `inFlight` at once).
    public func run() async {
        let clients = self.servers.map { APIClient(baseURL: $0, token: nil, timeout: .seconds(5)) }
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                for report in self.due() {
                    group.addTask {
                        var client = clients[report.failures % clients.count]
                        client.token = report.token
                        let sentAt = Date()
                        do {
                            let reply: HeartbeatReply = try await client.post(report.path, json: report.report)
                            await self.delivered(report.report.node, changes: report.changes, reply: reply, sentAt: sentAt)
                        } catch {
                            await self.failed(report.report.node, error: error)
                        }
                    }
                }
                try? await Task.sleep(for: Self.tick)
            }
        }
    }

    struct DueReport {
        var report: AgentReport
        var path: String
        var token: String
        var changes: Int
        var failures: Int
    }

    /// Lists `node` to be looked at when its next report is due: its next beat, the end of a rank's time, or (a
    /// change not yet reported) 100 ms after its last report.
    private func lookAgain(_ node: String) {
        guard let state = self.states[node] else { return }
        let now = ContinuousClock.now
        var at = state.nextBeat
        // As `due` sends a change early: only once registered and answered.
        if state.registered && state.failures == 0 && state.changes != state.reported { at = min(at, state.lastBeat + .milliseconds(100)) }
        let date = Date()
        for rank in state.ranks.values where rank.status.state == .running {
            if let ends = rank.endsAt { at = min(at, now + .seconds(max(0, ends.timeIntervalSince(date)))) }
        }
        let tick = max(Int64(((at - self.started) / Self.tick).rounded(.up)), self.wheelDone + 1)
        self.wheel[tick, default: []].append(node)
    }

    private func due() -> [DueReport] {
        let now = ContinuousClock.now
        let date = Date()
        let current = Int64(((now - self.started) / Self.tick).rounded(.down))
        while self.wheelDone < current {
            self.wheelDone += 1
            if let names = self.wheel.removeValue(forKey: self.wheelDone) { self.ready.append(contentsOf: names) }
        }
        var out: [DueReport] = []
        var held: [String] = []
        for name in self.ready {
            guard self.inFlight + out.count < Self.inFlightLimit else {
                held.append(name)
                continue
            }
            // One on its way is listed again when it is answered.
            guard var state = self.states[name], !state.sending else { continue }
            for (key, rank) in state.ranks where rank.status.state == .running && (rank.endsAt.map { $0 <= date } ?? false) {
                state.ranks[key]?.status.state = .exited
                state.ranks[key]?.status.exitCode = 0
                state.changes += 1
            }
            let changed = state.registered && state.failures == 0 && state.changes != state.reported && now - state.lastBeat >= .milliseconds(100)
            if now >= state.nextBeat || changed {
                state.sending = true
                let ranks = state.ranks.values.filter { $0.status.state == .running || !$0.acknowledged }.map(\.status)
                out.append(
                    DueReport(
                        report: AgentReport(
                            node: name, agentURL: self.agentURL(of: name), cpuMilli: self.cpuMilli, memoryMiB: self.memoryMiB, gpus: state.gpus,
                            ranks: ranks),
                        path: state.registered ? "/v1/agents/heartbeat" : "/v1/agents/register", token: state.node.token, changes: state.changes,
                        failures: state.failures))
                self.states[name] = state
            } else {
                // Not due yet (a rank's end by one clock, not yet by the other, say): listed again for when it is.
                self.states[name] = state
                self.lookAgain(name)
            }
        }
        self.ready = held
        self.inFlight += out.count
        return out
    }

    private func delivered(_ node: String, changes: Int, reply: HeartbeatReply, sentAt: Date) {
        self.inFlight -= 1
        guard var state = self.states[node] else { return }
        state.sending = false
        state.registered = true
        state.failures = 0
        state.reported = changes
        state.lastBeat = .now
        state.nextBeat = state.lastBeat + self.interval
        for key in reply.acknowledged where state.ranks[key]?.status.state != .running { state.ranks[key] = nil }
        // As the real agent reconciles: a rank the scheduler no longer holds live, launched before this report, stops.
        let live = Set(reply.live)
        for (key, rank) in state.ranks where rank.status.state == .running && !live.contains(key) && rank.launchedAt < sentAt {
            state.ranks[key]?.status.state = .exited
            state.ranks[key]?.status.signal = 15
            state.ranks[key]?.status.exitCode = 143
            state.changes += 1
        }
        self.states[node] = state
        self.lookAgain(node)
    }

    private func failed(_ node: String, error: any Error) {
        self.inFlight -= 1
        guard var state = self.states[node] else { return }
        state.sending = false
        state.failures += 1
        state.nextBeat = .now + min(self.interval, .milliseconds(250 * (1 << min(state.failures, 4))))
        if state.failures == 1 || state.failures % 10 == 0 {
            self.logger.warning("heartbeat failed", metadata: ["node": "\(node)", "error": "\(error)", "failures": "\(state.failures)"])
        }
        self.states[node] = state
        self.lookAgain(node)
    }

    // MARK: - The API, one for every node

    public nonisolated func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/healthz") { _, _ in JSON.text("ok\n") }
        let node = router.group("/nodes/:node/v1")
        node.post("/attempts") { request, context in
            let (name, body) = try await self.verified(request, context)
            let launch = try JSON.decode(LaunchRequest.self, from: body)
            guard !launch.command.isEmpty else { throw APIError.badRequest("must not be empty", field: "command") }
            return JSON.response(try await self.launch(launch, on: name), status: .created)
        }
        node.get("/attempts") { request, context in
            let (name, _) = try await self.verified(request, context)
            return JSON.response(await self.statuses(on: name))
        }
        node.post("/attempts/:job/:attempt/:rank/stop") { request, context in
            let (name, _) = try await self.verified(request, context)
            guard let job = context.parameters.get("job", as: Int64.self), let attempt = context.parameters.get("attempt", as: Int.self),
                let rank = context.parameters.get("rank", as: Int.self)
            else { throw APIError.badRequest("job, attempt and rank must be numbers") }
            return JSON.response(try await self.stop(RankKey(jobID: job, attempt: attempt, rank: rank), on: name))
        }
        // A simulated rank writes nothing.
        node.get("/attempts/:job/:attempt/:rank/log") { request, context in
            _ = try await self.verified(request, context)
            return JSON.text("")
        }
        return router
    }

    /// The node named and the request's body, once the signature with that node's key is checked (over the path as
    /// allotd signed it, below the node's prefix); 401 otherwise, as the real agent answers.
    private nonisolated func verified(_ request: Request, _ context: BasicRequestContext) async throws -> (String, Data) {
        guard let name = context.parameters.get("node"), let key = await self.key(of: name) else {
            throw APIError.notFound("no simulated node here by that name")
        }
        let body = Data(buffer: try await request.body.collect(upTo: 4 << 20))
        let prefix = "/nodes/\(name)"
        let path = String(request.uri.path.dropFirst(prefix.count)) + (request.uri.query.map { "?\($0)" } ?? "")
        if let why = AgentSignature.problem(
            header: request.headers[AgentAPI.signatureField], method: request.method.rawValue, path: path, body: body, key: key,
            seen: self.nonces.seen)
        {
            throw APIError(.unauthorized, code: "unauthorized", message: why)
        }
        return (name, body)
    }

    /// Serves every node's API on `host:port` and heartbeats for them all until SIGTERM or SIGINT.
    public nonisolated func serve(host: String, port: Int) async throws {
        try await Application(
            router: self.router(), configuration: .init(address: .hostname(host, port: port), serverName: "allot-agent-simulated"),
            services: [Beats(nodes: self)], logger: self.logger
        ).runService()
    }

    struct Beats: Service {
        let nodes: SimulatedNodes
        func run() async throws { try await cancelWhenGracefulShutdown { await self.nodes.run() } }
    }
}
