public import AllotCore
public import AllotFormats
public import ArgumentParser
public import Foundation
public import Logging

// ArgumentParser's own types for Allot's options, shared by allotd, allot-agent and allot, so that each
// option is parsed (and its error worded) one way everywhere.

extension HostPort: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
    public var defaultValueDescription: String { self.description }
}

extension ScoringStrategy: ExpressibleByArgument {}

extension Role: ExpressibleByArgument {}

extension Statement.Grouping: ExpressibleByArgument {}

/// How a command prints its answer.
public enum OutputFormat: String, ExpressibleByArgument, Sendable, CaseIterable {
    case table, json, csv
}

/// A duration option: `90s`, `45m`, `48h`, `2d`, `1h30m` or Slurm's forms. A bare number is minutes, everywhere
/// in Allot, as in Slurm's `--time` (the one rule for a bare number: `--deadline 30` is 30 minutes).
public struct DurationArgument: ExpressibleByArgument, Sendable, Hashable {
    public var seconds: Int64

    public init(seconds: Int64) { self.seconds = seconds }

    public init?(argument: String) {
        guard let s = Units.durationSeconds(argument) else { return nil }
        self.seconds = s
    }

    public var defaultValueDescription: String { Units.formatDuration(self.seconds) }
}

/// A size option: `512M`, `64G`, `1T` (binary units); a bare number is MiB.
public struct SizeArgument: ExpressibleByArgument, Sendable, Hashable {
    public var mebibytes: Int

    public init?(argument: String) {
        guard let m = Units.mebibytes(argument) else { return nil }
        self.mebibytes = m
    }
}

extension JobState: ExpressibleByArgument {}

/// A moment: `2026-12-01T06:00:00Z`, `2026-12-01T06:00` (UTC), `2026-12-01`, or `+2h` from now.
public struct MomentArgument: ExpressibleByArgument, Sendable, Hashable {
    public var date: Date

    public init?(argument: String) {
        if argument.hasPrefix("+") {
            guard let s = Units.durationSeconds(String(argument.dropFirst())) else { return nil }
            self.date = Date().addingTimeInterval(Double(s))
            return
        }
        let f = ISO8601DateFormatter()
        for options: ISO8601DateFormatter.Options in [
            [.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds],
            [.withFullDate, .withTime, .withColonSeparatorInTime, .withDashSeparatorInDate], [.withFullDate],
        ] {
            f.formatOptions = options
            if let d = f.date(from: argument) {
                self.date = d
                return
            }
        }
        guard let d = f.date(from: argument + ":00Z") else { return nil }
        self.date = d
    }
}

/// How much a daemon logs, and the one way allotd and allot-agent set their logging up (to standard error).
public enum LogLevel: String, ExpressibleByArgument, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical

    public var level: Logger.Level { Logger.Level(rawValue: self.rawValue) ?? .info }

    /// Sends every logger of the process to standard error at this level; returns the logger named `label`.
    public func bootstrap(label: String) -> Logger {
        let level = self.level
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return DeferredMetadataLogHandler(inner: handler)
        }
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

/// StreamLogHandler renders its metadata as text each time a key is set (the HTTP server sets a request id on every
/// request: a few percent of allotd's time under 2,000 heartbeats a second); this keeps what is set as it is and
/// hands it to StreamLogHandler only with a message that is logged. Written by hand: swift-log has no such handler.
struct DeferredMetadataLogHandler: LogHandler {
    var inner: StreamLogHandler
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(inner: StreamLogHandler) {
        self.inner = inner
        self.metadataProvider = inner.metadataProvider
        self.inner.metadataProvider = nil
    }

    var logLevel: Logger.Level {
        get { self.inner.logLevel }
        set { self.inner.logLevel = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    /// As StreamLogHandler merges them: the logger's metadata, then the provider's, then the message's.
    func log(event: LogEvent) {
        var event = event
        var merged = self.metadata
        if let provided = self.metadataProvider?.get() { merged.merge(provided) { _, later in later } }
        if let logged = event.metadata { merged.merge(logged) { _, later in later } }
        event.metadata = merged.isEmpty ? nil : merged
        self.inner.log(event: event)
    }
}
