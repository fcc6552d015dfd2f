import AllotCommandLine
import AllotCore
import AllotFormats
import AllotHTTPClient
import ArgumentParser
import Foundation

struct Cordon: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop placing new work on a node; what runs keeps running.")
    @Argument var node: String
    @OptionGroup var connection: Connection
    func run() async throws { try await nodeAction(self.node, "cordon", self.connection) }
}

struct Uncordon: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Let a cordoned node take work again.")
    @Argument var node: String
    @OptionGroup var connection: Connection
    func run() async throws { try await nodeAction(self.node, "uncordon", self.connection) }
}

struct Undrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Return a draining or drained node to service.")
    @Argument var node: String
    @OptionGroup var connection: Connection
    func run() async throws { try await nodeAction(self.node, "undrain", self.connection) }
}

func nodeAction(_ node: String, _ action: String, _ connection: Connection) async throws {
    let detail: NodeDetail = try await connection.client().post("/v1/nodes/\(node)/\(action)", json: [String: String]())
    if connection.output == .json { return try printJSON(detail) }
    print("node \(node): \(detail.node.state.rawValue)\(detail.stateReason.map { " (\($0))" } ?? "")")
}

struct Drain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drain nodes: no new work now; work still running at the deadline gets SIGTERM, its grace period, and is requeued.")
    @Argument(help: "The nodes to drain.") var nodes: [String]
    @Option(help: "Why (recorded with the drain).") var reason: String
    @Option(help: "How long running work may go on, e.g. 2h or 30m; a bare number is minutes (default: until it ends by itself).")
    var deadline: DurationArgument?
    @Flag(help: "Follow the drain until every node is drained.") var wait = false
    @OptionGroup var connection: Connection

    func run() async throws {
        let seconds = self.deadline?.seconds
        let client = try self.connection.client()
        var view: DrainView = try await client.post(
            "/v1/drains", json: DrainRequest(nodes: self.nodes, reason: self.reason, deadlineSeconds: seconds))
        if !self.wait {
            if self.connection.output == .json { return try printJSON(view) }
            print("drain \(view.id) of \(self.nodes.joined(separator: ", ")) started\(view.deadline.map { ", deadline \(ago($0))" } ?? "")")
            return
        }
        var last = ""
        while true {
            let line = progress(view)
            if line != last {
                if self.connection.output == .json { try printJSON(view) } else { print(line) }
                last = line
            }
            if view.nodes.allSatisfy({ $0.state != .draining }) { break }
            try await Task.sleep(for: .seconds(1))
            view = try await client.get("/v1/drains/\(view.id)")
        }
        if self.connection.output != .json {
            print("drain \(view.id) done: \(view.nodes.map { "\($0.node) \($0.state.rawValue)" }.joined(separator: ", "))")
        }
    }

    func progress(_ view: DrainView) -> String {
        let jobs = view.nodes.reduce(0) { $0 + $1.jobs.count }
        let drained = view.nodes.filter { $0.state == .drained }.count
        var line = "drain \(view.id): \(drained)/\(view.nodes.count) nodes drained, \(jobs) job\(jobs == 1 ? "" : "s") left"
        if let d = view.deadline {
            let left = Int(d.timeIntervalSinceNow.rounded())
            line += left > 0 ? ", deadline in \(human(seconds: left))" : ", deadline passed: stopping"
        }
        let detail = view.nodes.filter { !$0.jobs.isEmpty }.map { "\($0.node): jobs \($0.jobs.map(String.init).joined(separator: ","))" }
        return detail.isEmpty ? line : line + " (" + detail.joined(separator: "; ") + ")"
    }
}

struct ShowNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "A node: its state, GPUs and their health history.")
    @Argument var node: String
    @OptionGroup var connection: Connection

    func run() async throws {
        let d: NodeDetail = try await self.connection.client().get("/v1/nodes/\(self.node)")
        if self.connection.output == .json { return try printJSON(d) }
        let n = d.node
        print("Node \(n.name): \(n.state.rawValue)\(d.stateReason.map { " (\($0))" } ?? "")")
        print("  pool \(n.pool), block \(n.block ?? "-"), \(n.cpuMilli / 1000) CPUs, \(n.memoryMiB / 1024) GiB, heartbeat \(ago(n.lastHeartbeat))")
        print("  running jobs: \(d.runningJobs.isEmpty ? "none" : d.runningJobs.map(String.init).joined(separator: ", "))")
        switch n.gpuSharing {
        case .mps?: print("  GPU shares: enforced (NVIDIA MPS: each share held to its threads and memory)")
        case .soft?: print("  GPU shares: soft (no MPS on this node: a share is bookkeeping, a rank may use more)")
        case nil: print("  GPU shares: not reported")
        }
        print(
            table(
                ["GPU", "MODEL", "PRODUCT", "MEMORY", "MIG", "HEALTH", "HELD", "UUID", "DETAIL"],
                n.gpus.map { g in
                    [
                        "\(g.index)", g.model, g.productName ?? "-", "\(g.memoryMiB) MiB",
                        g.migProfile.map { "\($0) of GPU \(g.migParent.map(String.init) ?? "?") (charges \(g.chargeMilli ?? 1000)‰)" }
                            ?? (g.migMode == "Enabled" ? "enabled" : "-") + (g.migPending == true ? " (change pending)" : ""),
                        g.health.rawValue + (g.missingSince == nil ? "" : ", missing since \(iso(g.missingSince))"),
                        "\(n.usedGPUMilli["\(g.index)"] ?? 0)", g.uuid,
                        g.healthDetail ?? "",
                    ]
                }))
        if !d.healthEvents.isEmpty {
            print("Health history:")
            for e in d.healthEvents {
                print(
                    "  \(ISO8601DateFormatter().string(from: e.at))  GPU \(e.gpuIndex) \(e.from.rawValue) → \(e.to.rawValue)  \(e.cause)"
                        + "\(e.jobID.map { " (job \($0))" } ?? "") by \(e.actor)")
            }
        }
    }
}

struct RestoreGPU: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore-gpu", abstract: "Return a suspect or quarantined GPU to service.")
    @Argument var node: String
    @Argument var index: Int
    @Option(help: "Why it is fit again (recorded).") var reason: String
    @OptionGroup var connection: Connection

    func run() async throws {
        let d: NodeDetail = try await self.connection.client().post(
            "/v1/nodes/\(self.node)/gpus/\(self.index)/restore", json: ["reason": self.reason])
        if self.connection.output == .json { return try printJSON(d) }
        print("GPU \(self.index) of \(self.node): \(d.node.gpus.first { $0.index == self.index }?.health.rawValue ?? "?")")
    }
}

struct DeclareLost: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "declare-lost", abstract: "Declare a silent node lost: its jobs are requeued and its GPUs released.")
    @Argument var nodes: [String]
    @OptionGroup var connection: Connection
    func run() async throws { for n in self.nodes { try await nodeAction(n, "lost", self.connection) } }
}

struct Maintenance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Plan maintenance windows: placement keeps jobs off the nodes whose time limit would cross the start.",
        subcommands: [AddMaintenance.self, ListMaintenance.self, RemoveMaintenance.self])
}

struct AddMaintenance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Plan a window for nodes.")
    @Argument var nodes: [String]
    @Option(help: "When it starts: 2026-12-01T06:00:00Z, 2026-12-01T06:00 (UTC), 2026-12-01, or +2h from now.") var start: MomentArgument
    @Option(help: "When it ends (the same forms).") var end: MomentArgument
    @Option(help: "Why.") var reason: String
    @OptionGroup var connection: Connection

    func run() async throws {
        let request = MaintenanceRequest(
            nodes: self.nodes, startsAt: self.start.date, endsAt: self.end.date, reason: self.reason
        )
        let w: MaintenanceWindow = try await self.connection.client().post("/v1/maintenance", json: request)
        if self.connection.output == .json { return try printJSON(w) }
        print(
            "maintenance \(w.id): \(w.nodes.joined(separator: ", ")) from \(ISO8601DateFormatter().string(from: w.startsAt)) to \(ISO8601DateFormatter().string(from: w.endsAt))"
        )
    }
}

struct ListMaintenance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Planned and current windows.")
    @Flag(help: "Include ended windows.") var all = false
    @OptionGroup var connection: Connection

    func run() async throws {
        let windows: [MaintenanceWindow] = try await self.connection.client().get("/v1/maintenance" + (self.all ? "?all=true" : ""))
        if self.connection.output == .json { return try printJSON(windows) }
        let f = ISO8601DateFormatter()
        print(
            table(
                ["ID", "NODES", "START", "END", "STATUS", "REASON"],
                windows.map { w in
                    [
                        "\(w.id)", w.nodes.joined(separator: ","), f.string(from: w.startsAt), f.string(from: w.endsAt),
                        w.endedAt != nil ? "ended" : w.startedAt != nil ? "under way" : "planned", w.reason,
                    ]
                }))
    }
}

struct RemoveMaintenance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a window (one under way ends now).")
    @Argument var id: Int64
    @OptionGroup var connection: Connection

    func run() async throws {
        _ = try await self.connection.client().delete("/v1/maintenance/\(self.id)")
        if self.connection.output == .json { return try printJSON(["id": self.id]) }
        print("maintenance \(self.id) removed")
    }
}
