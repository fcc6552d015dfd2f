public import AllotCore
import Foundation

/// The simulation files of SPEC §6, read by their header (columns in any order; extra columns are errors):
/// `cluster.csv`: `node,pool,gpus,gpu_model,cpu_milli,memory_mib,block`;
/// `trace.csv`: `id,submit_s,duration_s,org,kind,pool,nodes,gpus_per_node,gpu_milli,gpu_model,cpu_milli,memory_mib,priority,time_limit_s`
/// (an empty `duration_s` never ends, an empty `gpu_model` accepts any, several models are separated by `|`).
public enum SimulationCSV {
    static let clusterColumns = ["node", "pool", "gpus", "gpu_model", "cpu_milli", "memory_mib", "block"]
    static let traceColumns = [
        "id", "submit_s", "duration_s", "org", "kind", "pool", "nodes", "gpus_per_node", "gpu_milli", "gpu_model", "cpu_milli", "memory_mib",
        "priority", "time_limit_s",
    ]

    public static func cluster(_ text: String, file: String = "cluster.csv") throws(FormatErrors) -> [NodeSnapshot] {
        var nodes: [NodeSnapshot] = []
        try self.rows(text, file: file, columns: self.clusterColumns) { row, issue in
            guard let name = row.text("node", issue), let pool = row.text("pool", issue), let gpus = row.int("gpus", issue, 0...64),
                let model = row.text("gpu_model", issue), let cpu = row.int("cpu_milli", issue, 0...100_000_000),
                let memory = row.int("memory_mib", issue, 0...(1 << 40))
            else { return }
            let block = row.optional("block")
            nodes.append(
                NodeSnapshot(
                    name: name, pool: pool, block: block, cpuMilli: cpu, memoryMiB: memory,
                    gpus: (0..<gpus).map { GPUSlot(index: $0, model: model, nvlinkDomain: 0) }))
        }
        return nodes
    }

    public static func trace(_ text: String, file: String = "trace.csv") throws(FormatErrors) -> [TraceJob] {
        var jobs: [TraceJob] = []
        try self.rows(text, file: file, columns: self.traceColumns) { row, issue in
            guard let id = row.int("id", issue, 0...Int.max), let submit = row.int("submit_s", issue, 0...Int.max),
                let org = row.text("org", issue), let pool = row.text("pool", issue), let nodes = row.int("nodes", issue, 1...4096),
                let gpus = row.int("gpus_per_node", issue, 0...64), let cpu = row.int("cpu_milli", issue, 0...100_000_000),
                let memory = row.int("memory_mib", issue, 0...(1 << 40)), let priority = row.int("priority", issue, -1_000_000...1_000_000)
            else { return }
            let duration = row.optional("duration_s").map { Int($0) }
            if let d = duration, d == nil || d! < 0 { issue("duration_s", "must be empty or a number of seconds") }
            let milli = row.optional("gpu_milli").flatMap { Int($0) }
            if let m = milli, !(1...999).contains(m) { issue("gpu_milli", "must be 1…999 or empty") }
            let limit = row.optional("time_limit_s").flatMap { Int64($0) }
            let kind = row.optional("kind") ?? "training"
            if JobKind(rawValue: kind) == nil { issue("kind", "must be training or inference") }
            let models = row.optional("gpu_model")?.split(separator: "|").map(String.init) ?? []
            jobs.append(
                TraceJob(
                    id: Int64(id), submitSeconds: Int64(submit), durationSeconds: (duration ?? nil).map(Int64.init),
                    job: PendingJob(
                        id: Int64(id), org: org, pool: pool, gpuModels: models, nodes: nodes,
                        perNode: NodeRequest(gpus: milli == nil ? gpus : 0, fractionMilli: milli, cpuMilli: cpu, memoryMiB: memory),
                        priority: priority, submittedAt: Int64(submit), timeLimitSeconds: limit)))
        }
        return jobs
    }

    struct Row {
        var values: [String: String]
        func optional(_ c: String) -> String? { self.values[c].flatMap { $0.isEmpty ? nil : $0 } }
        func text(_ c: String, _ issue: (String, String) -> Void) -> String? {
            guard let v = self.optional(c) else {
                issue(c, "is required")
                return nil
            }
            return v
        }
        func int(_ c: String, _ issue: (String, String) -> Void, _ range: ClosedRange<Int>) -> Int? {
            guard let v = self.text(c, issue) else { return nil }
            guard let n = Int(v), range.contains(n) else {
                issue(c, "must be a whole number in \(range.lowerBound)…\(range.upperBound), not '\(v)'")
                return nil
            }
            return n
        }
    }

    static func rows(_ text: String, file: String, columns: [String], _ each: (Row, (String, String) -> Void) -> Void) throws(FormatErrors) {
        var issues: [FormatIssue] = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
        guard let header = lines.first?.split(separator: ",", omittingEmptySubsequences: false).map({ $0.trimmingCharacters(in: .whitespaces) })
        else {
            throw FormatErrors([FormatIssue(file: file, line: 1, field: "", message: "empty file")])
        }
        for h in header where !columns.contains(h) { issues.append(FormatIssue(file: file, line: 1, field: h, message: "unknown column")) }
        for c in columns where !header.contains(c) && c != "block" {
            issues.append(FormatIssue(file: file, line: 1, field: c, message: "missing column"))
        }
        if !issues.isEmpty { throw FormatErrors(issues) }
        for (i, line) in lines.enumerated().dropFirst() where !line.trimmingCharacters(in: .whitespaces).isEmpty && !line.hasPrefix("#") {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count == header.count else {
                issues.append(FormatIssue(file: file, line: i + 1, field: "", message: "has \(cells.count) cells, the header \(header.count)"))
                continue
            }
            each(Row(values: Dictionary(uniqueKeysWithValues: zip(header, cells)))) { field, message in
                issues.append(FormatIssue(file: file, line: i + 1, field: field, message: message))
            }
        }
        if !issues.isEmpty { throw FormatErrors(issues) }
    }
}
