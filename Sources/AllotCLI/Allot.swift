import AllotCommandLine
import AllotHTTPClient
public import ArgumentParser
import Foundation

/// The `allot` command line.
public struct Allot: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "allot", abstract: "Submit and follow jobs on an Allot GPU pool; operate its nodes and policy.",
        subcommands: [
            Submit.self, Jobs.self, Cancel.self, Hold.self, Release.self, Requeue.self, Update.self, History.self, Logs.self, QuotaCommand.self,
            Nodes.self, Pools.self, Cordon.self, Uncordon.self, Drain.self,
            Undrain.self, Maintenance.self, PolicyCommand.self, Tokens.self, Audit.self, Report.self, Simulate.self,
        ])
    public init() {}

    /// Runs the CLI; errors are printed in one line and exit non-zero.
    public static func main(arguments: [String]) async -> Int32 {
        do {
            var command = try Self.parseAsRoot(arguments)
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
            return 0
        } catch let error as CLIError {
            FileHandle.standardError.write(Data("allot: \(error.description)\n".utf8))
            return 1
        } catch let error as APIClient.Failure {
            FileHandle.standardError.write(Data("allot: \(error.description)\n".utf8))
            return 1
        } catch {
            let code = Self.exitCode(for: error)
            let message = Self.fullMessage(for: error)
            if !message.isEmpty {
                let out = code == .success ? FileHandle.standardOutput : FileHandle.standardError
                out.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
            }
            return code.rawValue
        }
    }
}
