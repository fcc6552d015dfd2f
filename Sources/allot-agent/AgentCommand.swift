import AllotAgent
import AllotCore
import AllotFormats
import AllotHTTP
import ArgumentParser
import Foundation
import Hummingbird
import Logging

@main
struct AllotAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allot-agent", abstract: "The Allot node agent.", subcommands: [Run.self, Inventory.self], defaultSubcommand: Run.self)
}

struct GPUOptions: ParsableArguments {
    @Option(help: "Simulate GPUs, COUNTxMODEL (e.g. 8xH200); otherwise nvidia-smi (-q -x) is asked, $ALLOT_NVIDIA_SMI or from PATH.")
    var gpus: String?

    func discover(node: String) throws -> [GPUInfo] {
        if let gpus { return try GPUDiscovery.simulated(gpus, node: node) }
        return KernelLog.attachXids(to: try GPUDiscovery.nvidiaSMI(path: GPUDiscovery.nvidiaSMIPath()))
    }
}

struct Inventory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the GPUs this node has.")
    @OptionGroup var gpu: GPUOptions
    @Option(help: "table or json") var output: String = "table"

    func run() async throws {
        let gpus = try self.gpu.discover(node: ProcessInfo.processInfo.hostName)
        if self.output == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(gpus), as: UTF8.self))
            return
        }
        print("INDEX  MODEL   MEMORY      MIG       NVLINK  HEALTH       UUID")
        for g in gpus {
            let health = g.health.rawValue + (g.healthDetail.map { " (\($0))" } ?? "")
            print(
                String(g.index).padding(toLength: 7, withPad: " ", startingAt: 0) + g.model.padding(toLength: 8, withPad: " ", startingAt: 0)
                    + "\(g.memoryMiB) MiB".padding(toLength: 12, withPad: " ", startingAt: 0)
                    + (g.migMode ?? "-").padding(toLength: 10, withPad: " ", startingAt: 0)
                    + (g.nvlinkDomain.map(String.init) ?? "-").padding(toLength: 8, withPad: " ", startingAt: 0)
                    + health.padding(toLength: 13, withPad: " ", startingAt: 0) + g.uuid)
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Register with allotd, heartbeat, and run what it dispatches.")
    @Option(help: "allotd's URL.") var server: String
    @Option(help: "This node's name, as registered with `allot nodes add`.") var node: String
    @Option(help: "The agent token file written by `allot nodes add`.") var tokenFile: String
    @Option(help: "Where the agent's API listens, HOST:PORT.") var listen: String = "127.0.0.1:9101"
    @Option(help: "The URL allotd uses to reach this agent (default: http://LISTEN).") var advertiseURL: String?
    @Option(help: "Where ranks' records and logs are kept (default: /var/lib/allot-agent/NODE as root, else ~/.local/state/allot-agent/NODE).")
    var stateDir: String?
    @OptionGroup var gpu: GPUOptions
    @Option(help: "CPUs to offer (default: all of this machine's).") var cpus: Double?
    @Option(help: "Memory to offer, e.g. 512G (default: all of this machine's).") var memory: String?
    @Option(help: "Seconds between heartbeats.") var heartbeatInterval: Double = 2
    @Option(help: "Log level.") var logLevel: String = "info"

    func run() async throws {
        let level = Logger.Level(rawValue: self.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "allot-agent")
        guard let colon = self.listen.lastIndex(of: ":"), let port = Int(self.listen[self.listen.index(after: colon)...]) else {
            throw ValidationError("--listen: '\(self.listen)' must be HOST:PORT")
        }
        let host = String(self.listen[..<colon])
        if self.advertiseURL == nil && (host == "0.0.0.0" || host == "::") {
            throw ValidationError("--advertise-url is needed when listening on every address")
        }
        guard let token = try? String(contentsOfFile: self.tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !token.isEmpty
        else { throw ValidationError("--token-file: cannot read a token from \(self.tokenFile)") }
        let stateDir = self.stateDir ?? Self.defaultStateDir(node: self.node)
        let supervisor = try Supervisor(stateDir: URL(fileURLWithPath: stateDir), node: self.node)

        let host_ = NodeInventory.hostResources()
        let cpuMilli = self.cpus.map { Int($0 * 1000) } ?? host_.cpuMilli
        var memoryMiB = host_.memoryMiB
        if let memory {
            guard let m = Units.mebibytes(memory) else { throw ValidationError("--memory: '\(memory)' is not a size like 512G") }
            memoryMiB = m
        }
        let node = self.node
        let offeredMemory = memoryMiB
        let gpuOptions = self.gpu
        _ = try gpuOptions.discover(node: node)  // fail fast on a bad --gpus or a missing nvidia-smi

        let callbackToken = "cb_" + UUID().uuidString
        let heartbeat = Heartbeat(
            server: APIClient(baseURL: self.server, token: token, timeout: .seconds(5)), node: node,
            agentURL: self.advertiseURL ?? "http://\(self.listen)", callbackToken: callbackToken, supervisor: supervisor,
            interval: .milliseconds(Int(self.heartbeatInterval * 1000)), logger: logger
        ) {
            NodeInventory(gpus: try gpuOptions.discover(node: node), cpuMilli: cpuMilli, memoryMiB: offeredMemory)
        }
        let app = Application(
            router: AgentAPI(supervisor: supervisor, callbackToken: callbackToken).router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "allot-agent"), services: [heartbeat], logger: logger)
        try await app.runService()
    }

    static func defaultStateDir(node: String) -> String {
        if getuid() == 0 { return "/var/lib/allot-agent/\(node)" }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".local/state/allot-agent/\(node)").path
    }
}
