import AllotCommandLine
import AllotCore
import AllotFormats
import ArgumentParser
import Foundation

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a workload trace through the placement core in virtual time (no server needed).")
    @Option(help: "The cluster: node,pool,gpus,gpu_model,cpu_milli,memory_mib,block") var cluster: String
    @Option(
        help: "The trace: id,submit_s,duration_s,org,kind,pool,nodes,gpus_per_node,gpu_milli,gpu_model,cpu_milli,memory_mib,priority,time_limit_s")
    var trace: String
    @Option(help: "Placement strategy: \(ScoringStrategy.allCases.map(\.rawValue).joined(separator: ", ")), or all.")
    var strategy: StrategyChoice = .one(.fragmentationAware)
    @Option(help: "table or json") var output: OutputFormat = .table

    func run() async throws {
        func read(_ path: String) throws -> String {
            guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read \(path)") }
            return String(decoding: data, as: UTF8.self)
        }
        let nodes: [NodeSnapshot]
        let jobs: [TraceJob]
        do {
            nodes = try SimulationCSV.cluster(try read(self.cluster), file: self.cluster)
            jobs = try SimulationCSV.trace(try read(self.trace), file: self.trace)
        } catch let error as FormatErrors {
            throw CLIError(error.told(separator: "; "))
        }
        let strategies: [ScoringStrategy]
        switch self.strategy {
        case .all: strategies = ScoringStrategy.allCases
        case .one(let s): strategies = [s]
        }
        let clock = ContinuousClock()
        let reports = strategies.map { s in
            Simulator(placer: Placer(strategy: s)).run(cluster: nodes, trace: jobs) { decide in
                var plan = Plan()
                let d = clock.measure { plan = decide() }
                return (plan, Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
            }
        }
        if self.output == .json { return try printJSON(reports.count == 1 ? reports[0] : nil) ?? printJSON(reports) }
        for r in reports {
            print(
                "strategy \(r.strategy): \(r.placed)/\(r.jobs) jobs placed on \(r.gpus) GPUs over \(human(seconds: Int(r.simulatedSeconds))) simulated"
            )
            print(
                String(
                    format: "  utilisation %.1f%%, peak %.1f GPUs, at the end %.1f GPUs held, fragmentation %.1f%%, %.0f decisions/s",
                    r.utilisation * 100, Double(r.peakAllocatedGPUMilli) / 1000, Double(r.allocatedGPUMilli) / 1000, r.fragmentation * 100,
                    r.decisionsPerSecond))
            print(
                table(
                    ["WAITS", "JOBS", "P50", "P90", "P99", "MAX"],
                    (r.waitsByOrg.sorted { $0.key < $1.key }.map { ("org \($0.key)", $0.value) }
                        + r.waitsByPriority.sorted { $0.key < $1.key }.map { ("priority \($0.key)", $0.value) }).map { name, w in
                            [
                                name, "\(w.jobs)", human(seconds: Int(w.p50Seconds)), human(seconds: Int(w.p90Seconds)),
                                human(seconds: Int(w.p99Seconds)), human(seconds: Int(w.maxSeconds)),
                            ]
                        }))
        }
    }
}

/// One placement strategy, or every one side by side.
enum StrategyChoice: ExpressibleByArgument {
    case one(ScoringStrategy)
    case all

    init?(argument: String) {
        if argument == "all" {
            self = .all
        } else if let s = ScoringStrategy(rawValue: argument) {
            self = .one(s)
        } else {
            return nil
        }
    }

    var defaultValueDescription: String {
        if case .one(let s) = self { return s.rawValue }
        return "all"
    }
}

/// Prints one value, or nothing when it is nil (so a single report prints as an object, several as an array).
private func printJSON<T: Encodable>(_ value: T?) throws -> Void? {
    guard let value else { return nil }
    try printJSON(value)
    return ()
}
