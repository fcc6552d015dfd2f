import AllotCommandLine
import AllotCore
import AllotHTTPClient
public import ArgumentParser
import Foundation

/// How to reach allotd: `--server`/`ALLOT_SERVER`, and the token from `--token-file`, `ALLOT_TOKEN` or `ALLOT_TOKEN_FILE`.
/// Flags win over the environment.
public struct Connection: ParsableArguments {
    @Option(help: "allotd's URL (default: $ALLOT_SERVER, else http://127.0.0.1:8080).")
    var server: String?
    @Option(help: "A file holding your bearer token (default: $ALLOT_TOKEN, else the file named by $ALLOT_TOKEN_FILE).")
    var authTokenFile: String?
    @Option(help: "Output format: table or json.")
    var output: OutputFormat = .table

    public init() {}

    func client() throws -> APIClient {
        let env = ProcessInfo.processInfo.environment
        let server = self.server ?? env["ALLOT_SERVER"] ?? "http://127.0.0.1:8080"
        var token: String?
        if let file = self.authTokenFile ?? (env["ALLOT_TOKEN"] == nil ? env["ALLOT_TOKEN_FILE"] : nil) {
            do {
                token = try SecretFile.read(file)
            } catch {
                throw CLIError("\(error)")
            }
        } else {
            token = env["ALLOT_TOKEN"]
        }
        return APIClient(baseURL: server, token: token)
    }
}

/// An error the CLI reports in one line.
public struct CLIError: Error, CustomStringConvertible {
    public var description: String
    public init(_ message: String) { self.description = message }
}

/// Prints a value as pretty JSON (sorted keys, ISO dates): the stable form for scripts.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Aligned columns for people.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

/// `3m12s ago`, `in 2h`, for times near now.
func ago(_ date: Date?, now: Date = Date()) -> String {
    guard let date else { return "-" }
    let s = Int(now.timeIntervalSince(date).rounded())
    return s >= 0 ? "\(human(seconds: s)) ago" : "in \(human(seconds: -s))"
}

func human(seconds: Int) -> String {
    if seconds < 60 { return "\(seconds)s" }
    if seconds < 3600 { return "\(seconds / 60)m\(seconds % 60 == 0 ? "" : "\(seconds % 60)s")" }
    if seconds < 86400 { return "\(seconds / 3600)h\(seconds % 3600 / 60 == 0 ? "" : "\(seconds % 3600 / 60)m")" }
    return "\(seconds / 86400)d\(seconds % 86400 / 3600 == 0 ? "" : "\(seconds % 86400 / 3600)h")"
}

func gpuText(_ job: JobView) -> String {
    if let milli = job.gpuMilli { return "\(job.nodes)x\(Double(milli) / 1000)" }
    return job.nodes > 1 ? "\(job.nodes)x\(job.gpusPerNode)" : "\(job.gpusPerNode)"
}
