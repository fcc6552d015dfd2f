import AllotAgent
import AllotCommandLine
import AllotCore
import AllotFormats
import AllotHTTPClient
import ArgumentParser
import Foundation
import Logging

@main
struct AllotAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allot-agent", abstract: "The Allot node agent.", subcommands: [Run.self, Inventory.self, Simulate.self],
        defaultSubcommand: Run.self)
}

struct GPUOptions: ParsableArguments {
    @Option(help: "Simulate GPUs, COUNTxMODEL (e.g. 8xH200); otherwise nvidia-smi (-q -x) is asked, $ALLOT_NVIDIA_SMI or from PATH.")
    var gpus: String?

    func discover(node: String) throws -> [GPUInfo] {
        if let gpus {
            let simulated = try GPUDiscovery.simulated(gpus, node: node)
            // A simulated node's XIDs come from a fixture ($ALLOT_DMESG) alone, never from this machine's kernel log.
            let environment = ProcessInfo.processInfo.environment
            return environment["ALLOT_DMESG"] == nil ? simulated : KernelLog.attachXids(to: simulated, environment: environment)
        }
        return KernelLog.attachXids(to: try GPUDiscovery.nvidiaSMI(path: GPUDiscovery.nvidiaSMIPath()))
    }
}

struct Inventory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the GPUs this node has.")
    @OptionGroup var gpu: GPUOptions
    @Option(help: "table or json") var output: OutputFormat = .table

    func run() async throws {
        let gpus = try self.gpu.discover(node: ProcessInfo.processInfo.hostName)
        if self.output == .json {
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
                    + health.padding(toLength: 13, withPad: " ", startingAt: 0) + g.uuid + (g.productName.map { "  \($0)" } ?? ""))
            for d in g.migDevices ?? [] {
                print(
                    "  MIG \(d.index)  \(d.profile ?? "?")  GI \(d.gpuInstance) CI \(d.computeInstance)  \(d.memoryMiB) MiB  "
                        + (d.uuid.isEmpty ? "(no UUID: nvidia-smi -L did not list it)" : d.uuid))
            }
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Register with allotd, heartbeat, and run what it dispatches.")
    @Option(help: "allotd's URL, or several separated by commas: when one does not answer, the next is tried.") var server: String
    @Option(help: "This node's name, as registered with `allot nodes add`.") var node: String
    @Option(help: "The node's credentials file written by `allot nodes add` (keep it in a folder only root can read).") var tokenFile: String
    @Option(help: "Where the agent's API listens, HOST:PORT.") var listen = HostPort(host: "127.0.0.1", port: 9101)
    @Option(help: "The URL allotd uses to reach this agent (default: http://LISTEN).") var advertiseURL: String?
    @Option(help: "Where ranks' records and logs are kept (default: /var/lib/allot-agent/NODE as root, else ~/.local/state/allot-agent/NODE).")
    var stateDir: String?
    @OptionGroup var gpu: GPUOptions
    @Option(help: "CPUs to offer (default: all of this machine's).") var cpus: Double?
    @Option(help: "Memory to offer, e.g. 512G (default: all of this machine's).") var memory: SizeArgument?
    @Option(help: "Seconds between heartbeats.") var heartbeatInterval: Double = 2
    @Option(help: "How much to log.") var logLevel: LogLevel = .info
    @Option(
        help:
            "How ranks are confined: container (an OCI container per rank, started by runc; the agent must be root) or none (plain processes in the agent's account, for development only: ranks are not isolated)."
    )
    var isolation: IsolationChoice = .container
    @Option(help: "The runc binary (default: runc on PATH).") var runc: String?
    @Option(
        name: .customLong("bind"),
        help:
            "A host folder every rank sees, PATH[:ro|:rw] (read-only unless :rw); repeat it. The system folders (/usr, /bin, /lib, /etc …) always are."
    )
    var binds: [String] = []
    @Option(help: "The most processes and threads one rank may have.") var pidsLimit: Int = 4096
    @Option(help: "OCI image layouts for jobs' images, a folder per image name (skopeo copy … oci:DIR/NAME:TAG).") var imageDir: String?
    @Option(help: "The NVIDIA Container Toolkit's CDI spec, applied to ranks with an image.") var cdiSpec: String = "/etc/cdi/nvidia.yaml"
    @Option(help: "Where ranks' output goes, a folder per organisation (default: STATE-DIR/output).") var outputDir: String?

    enum IsolationChoice: String, ExpressibleByArgument { case container, none }

    func validate() throws {
        if self.pidsLimit < 16 { throw ValidationError("--pids-limit: at least 16") }
        for b in self.binds where ContainerRuntime.Bind(b) == nil { throw ValidationError("--bind: '\(b)' must be an absolute PATH[:ro|:rw]") }
        if self.advertiseURL == nil && self.listen.isWildcard { throw ValidationError("--advertise-url is needed when listening on every address") }
    }

    func run() async throws {
        let logger = self.logLevel.bootstrap(label: "allot-agent")
        let credentials: AgentCredentials
        do {
            credentials = try AgentCredentials.read(self.tokenFile)
        } catch {
            throw ValidationError("--token-file: \(error)")
        }
        guard let nodeKey = NodeKey.parse(hex: credentials.nodeKey) else { throw ValidationError("--token-file: its node-key is not hex") }
        if let mode = (try? FileManager.default.attributesOfItem(atPath: self.tokenFile))?[.posixPermissions] as? Int, mode & 0o077 != 0 {
            throw ValidationError("--token-file: \(self.tokenFile) is readable by others (mode \(String(mode, radix: 8))): chmod 600 it")
        }
        let host_ = NodeInventory.hostResources()
        let cpuMilli = self.cpus.map { Int($0 * 1000) } ?? host_.cpuMilli
        let node = self.node
        let offeredMemory = self.memory?.mebibytes ?? host_.memoryMiB
        let isolation: Isolation
        switch self.isolation {
        case .none:
            // As root, a plain process would be a job running as root: refused.
            guard getuid() != 0 else {
                throw ValidationError("--isolation none runs jobs in the agent's account: never as root (install runc instead)")
            }
            logger.warning("--isolation none: ranks run as plain processes in the agent's account and are NOT isolated from each other")
            isolation = .none
        case .container:
            guard getuid() == 0 else {
                throw ValidationError("--isolation container needs the agent to run as root (or use --isolation none to develop)")
            }
            guard let runc = self.runc ?? ContainerRuntime.findRunc() else {
                throw ValidationError("--runc: runc is not installed (apt install runc)")
            }
            isolation = .container(
                ContainerRuntime(
                    runc: runc, binds: ContainerRuntime.systemBinds + self.binds.compactMap(ContainerRuntime.Bind.init), pidsLimit: self.pidsLimit,
                    offeredMemoryMiB: offeredMemory, imageDir: self.imageDir, cdiSpec: self.cdiSpec,
                    // The agent's credentials stay out of every container, whatever folder they sit in.
                    masked: [URL(fileURLWithPath: self.tokenFile).standardizedFileURL.path]))
        }
        let stateDir = self.stateDir ?? Self.defaultStateDir(node: self.node)
        let supervisor = try Supervisor(
            stateDir: URL(fileURLWithPath: stateDir), node: self.node, isolation: isolation,
            outputDir: self.outputDir.map { URL(fileURLWithPath: $0) },
            sharing: GPUSharingControl.find(simulated: self.gpu.gpus != nil, root: URL(fileURLWithPath: stateDir).appendingPathComponent("mps")))
        let gpuOptions = self.gpu
        _ = try gpuOptions.discover(node: node)  // fail fast on a bad --gpus or a missing nvidia-smi

        let heartbeat = Heartbeat(
            servers: self.server.split(separator: ",").map {
                APIClient(baseURL: $0.trimmingCharacters(in: .whitespaces), token: credentials.token, timeout: .seconds(5))
            }, node: node,
            agentURL: self.advertiseURL ?? self.listen.httpURL, supervisor: supervisor,
            interval: .milliseconds(Int(self.heartbeatInterval * 1000)), logger: logger
        ) {
            NodeInventory(gpus: try gpuOptions.discover(node: node), cpuMilli: cpuMilli, memoryMiB: offeredMemory)
        }
        try await AgentAPI(supervisor: supervisor, nodeKey: nodeKey).serve(
            host: self.listen.host, port: self.listen.port, heartbeat: heartbeat, logger: logger)
    }

    static func defaultStateDir(node: String) -> String {
        if getuid() == 0 { return "/var/lib/allot-agent/\(node)" }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".local/state/allot-agent/\(node)").path
    }
}

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Many simulated nodes in one process, for benchmarks: each heartbeats and takes launches over HTTP, and runs nothing.",
        discussion: """
            Every NAME.token file in --credentials (as `allot nodes add NAME --token-file DIR/NAME.token` writes them) is one node; \
            add each with --agent-url http://LISTEN/nodes/NAME. A rank runs for the seconds its command's leading `sleep N` asks \
            (none otherwise) and exits 0.
            """)
    @Option(help: "allotd's URL, or several separated by commas.") var server: String
    @Option(help: "A folder of NAME.token credentials files, one per node.") var credentials: String
    @Option(help: "Where the nodes' API listens, HOST:PORT.") var listen = HostPort(host: "127.0.0.1", port: 9101)
    @Option(help: "Each node's GPUs, COUNTxMODEL.") var gpus = "8xH200"
    @Option(help: "Each node's CPUs.") var cpus: Double = 64
    @Option(help: "Each node's memory, e.g. 512G.") var memory = SizeArgument(argument: "512G")!
    @Option(help: "Seconds between each node's heartbeats.") var heartbeatInterval: Double = 5
    @Option(help: "How much to log.") var logLevel: LogLevel = .info

    func run() async throws {
        let logger = self.logLevel.bootstrap(label: "allot-agent-simulated")
        let files = try FileManager.default.contentsOfDirectory(atPath: self.credentials).filter { $0.hasSuffix(".token") }.sorted()
        guard !files.isEmpty else { throw ValidationError("--credentials: \(self.credentials) holds no NAME.token file") }
        let nodes = try files.map { file in
            let credentials = try AgentCredentials.read("\(self.credentials)/\(file)")
            guard let key = NodeKey.parse(hex: credentials.nodeKey) else { throw ValidationError("--credentials: \(file): its node-key is not hex") }
            return SimulatedNodes.Node(name: String(file.dropLast(".token".count)), token: credentials.token, key: key)
        }
        let simulated = try SimulatedNodes(
            nodes: nodes, gpus: self.gpus, cpuMilli: Int(self.cpus * 1000), memoryMiB: self.memory.mebibytes,
            servers: self.server.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }, baseURL: self.listen.httpURL,
            interval: .milliseconds(Int(self.heartbeatInterval * 1000)), logger: logger)
        logger.info("simulating nodes", metadata: ["nodes": "\(nodes.count)", "listen": "\(self.listen.httpURL)"])
        try await simulated.serve(host: self.listen.host, port: self.listen.port)
    }
}
