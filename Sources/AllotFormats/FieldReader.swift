import Foundation
import Yams

/// One problem in an input file: where it is, which field, and why.
public struct FormatIssue: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String?
    public var line: Int?
    /// The field path, as `organizations[1].allocations[0].limitGPUs`.
    public var field: String
    public var message: String

    public init(file: String? = nil, line: Int? = nil, field: String, message: String) {
        self.file = file
        self.line = line
        self.field = field
        self.message = message
    }

    /// `file:line: field: reason`, the form `allot policy validate` prints.
    public var description: String {
        var location = ""
        if let file { location += file }
        if let line { location += location.isEmpty ? "line \(line)" : ":\(line)" }
        let where_ = location.isEmpty ? "" : "\(location): "
        return field.isEmpty ? "\(where_)\(message)" : "\(where_)\(field): \(message)"
    }
}

/// Every problem found in an input, not just the first.
public struct FormatErrors: Error, Sendable, CustomStringConvertible {
    public var issues: [FormatIssue]
    public init(_ issues: [FormatIssue]) { self.issues = issues }
    public var description: String { self.issues.map(\.description).joined(separator: "\n") }
}

/// Reads typed fields out of a YAML (or JSON) tree, collecting every error with its line and field path.
final class FieldReader {
    let file: String?
    private(set) var issues: [FormatIssue] = []

    init(file: String?) { self.file = file }

    /// Parses text into a tree; syntax errors become issues with their line.
    func compose(_ text: String) -> Node? {
        do {
            return try Yams.compose(yaml: text)
        } catch let error as YamlError {
            switch error {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                self.issues.append(FormatIssue(file: self.file, line: mark.line, field: "", message: "malformed YAML: \(problem)"))
            case .duplicatedKeysInMapping(let duplicates, _):
                self.issues.append(FormatIssue(file: self.file, field: duplicates.joined(separator: ", "), message: "duplicate key"))
            default:
                self.issues.append(FormatIssue(file: self.file, field: "", message: "malformed YAML: \(error)"))
            }
        } catch {
            self.issues.append(FormatIssue(file: self.file, field: "", message: "malformed input: \(error)"))
        }
        return nil
    }

    func error(_ node: Node?, _ field: String, _ message: String) {
        self.issues.append(FormatIssue(file: self.file, line: node?.mark?.line, field: field, message: message))
    }

    /// The keys of a mapping, with an issue for every key not in `allowed` (so typos never pass silently).
    func mapping(_ node: Node?, _ path: String, allowed: Set<String>) -> Fields? {
        guard let node else { return nil }
        guard case .mapping(let mapping) = node else {
            self.error(node, path, "must be a mapping")
            return nil
        }
        var values: [String: Node] = [:]
        for (key, value) in mapping {
            guard let name = key.string else {
                self.error(key, path, "keys must be strings")
                continue
            }
            let field = path.isEmpty ? name : "\(path).\(name)"
            if !allowed.contains(name) {
                let hint = allowed.sorted().first { $0.lowercased() == name.lowercased() }.map { " (did you mean \($0)?)" } ?? ""
                self.error(key, field, "unknown field\(hint)")
                continue
            }
            values[name] = value
        }
        return Fields(reader: self, path: path, node: node, values: values)
    }

    func sequence(_ node: Node?, _ path: String) -> [Node]? {
        guard let node else { return nil }
        if case .sequence(let seq) = node { return Array(seq) }
        self.error(node, path, "must be a list")
        return nil
    }
}

/// The fields of one mapping, read by type. Every accessor reports a missing or mistyped field and returns nil.
struct Fields {
    let reader: FieldReader
    let path: String
    let node: Node
    let values: [String: Node]

    func field(_ key: String) -> String { self.path.isEmpty ? key : "\(self.path).\(key)" }
    func has(_ key: String) -> Bool { self.values[key].map { !Self.isNull($0) } ?? false }

    static func isNull(_ node: Node) -> Bool {
        if case .scalar(let s) = node, s.style == .plain, ["", "~", "null", "Null", "NULL"].contains(s.string) { return true }
        return false
    }

    private func present(_ key: String, required: Bool) -> Node? {
        guard let node = self.values[key], !Self.isNull(node) else {
            if required { self.reader.error(self.node, self.field(key), "is required") }
            return nil
        }
        return node
    }

    private func scalar(_ node: Node, _ key: String, _ kind: String) -> String? {
        guard case .scalar(let s) = node else {
            self.reader.error(node, self.field(key), "must be \(kind)")
            return nil
        }
        return s.string
    }

    func string(_ key: String, required: Bool = false) -> String? {
        guard let node = self.present(key, required: required), let s = self.scalar(node, key, "a string") else { return nil }
        if s.trimmingCharacters(in: .whitespaces).isEmpty {
            self.reader.error(node, self.field(key), "must not be empty")
            return nil
        }
        return s
    }

    /// A name that is also used in paths, URLs and SQL identifiers' places: letters, digits, `-`, `_`, `.`.
    func name(_ key: String, required: Bool = false) -> String? {
        guard let s = self.string(key, required: required) else { return nil }
        let ok = s.count <= 63 && s.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) }
        if !ok {
            self.reader.error(self.values[key], self.field(key), "must be at most 63 letters, digits, '-', '_' or '.'")
            return nil
        }
        return s
    }

    func int(_ key: String, required: Bool = false, in range: ClosedRange<Int>) -> Int? {
        guard let node = self.present(key, required: required), let s = self.scalar(node, key, "a whole number") else { return nil }
        guard let n = Int(s.replacingOccurrences(of: "_", with: "")) else {
            self.reader.error(node, self.field(key), "must be a whole number, not '\(s)'")
            return nil
        }
        guard range.contains(n) else {
            self.reader.error(node, self.field(key), "must be between \(range.lowerBound) and \(range.upperBound), not \(n)")
            return nil
        }
        return n
    }

    func double(_ key: String, in range: ClosedRange<Double>) -> Double? {
        guard let node = self.present(key, required: false), let s = self.scalar(node, key, "a number") else { return nil }
        guard let n = Double(s), n.isFinite else {
            self.reader.error(node, self.field(key), "must be a number, not '\(s)'")
            return nil
        }
        guard range.contains(n) else {
            self.reader.error(node, self.field(key), "must be between \(range.lowerBound) and \(range.upperBound), not \(s)")
            return nil
        }
        return n
    }

    func bool(_ key: String) -> Bool? {
        guard let node = self.present(key, required: false), let s = self.scalar(node, key, "true or false") else { return nil }
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            self.reader.error(node, self.field(key), "must be true or false, not '\(s)'")
            return nil
        }
    }

    /// A duration (`90s`, `2h`, Slurm forms), in seconds.
    func duration(_ key: String, required: Bool = false, max: Int64 = 366 * 86400) -> Int64? {
        guard let node = self.present(key, required: required), let s = self.scalar(node, key, "a duration") else { return nil }
        guard let seconds = Units.durationSeconds(s) else {
            self.reader.error(node, self.field(key), "must be a duration like 90s, 45m, 48h, 2d or Slurm's D-HH:MM:SS, not '\(s)'")
            return nil
        }
        guard seconds > 0, seconds <= max else {
            self.reader.error(node, self.field(key), "must be more than 0s and at most \(Units.formatDuration(max)), not '\(s)'")
            return nil
        }
        return seconds
    }

    /// A memory size (`64G`, `512Mi`, or a bare number of MiB), in MiB.
    func mebibytes(_ key: String) -> Int? {
        guard let node = self.present(key, required: false), let s = self.scalar(node, key, "a size") else { return nil }
        guard let mib = Units.mebibytes(s), mib <= 1 << 40 else {
            self.reader.error(node, self.field(key), "must be a size like 512M, 64G or 1T, not '\(s)'")
            return nil
        }
        return mib
    }

    /// One string or a list of strings.
    func stringList(_ key: String) -> [String]? {
        guard let node = self.present(key, required: false) else { return nil }
        switch node {
        case .scalar(let s):
            return s.string.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        case .sequence(let seq):
            var out: [String] = []
            for (i, item) in seq.enumerated() {
                guard case .scalar(let s) = item, !s.string.isEmpty else {
                    self.reader.error(item, "\(self.field(key))[\(i)]", "must be a non-empty string")
                    continue
                }
                out.append(s.string)
            }
            return out
        default:
            self.reader.error(node, self.field(key), "must be a string or a list of strings")
            return nil
        }
    }

    /// A mapping of strings to strings (numbers and booleans are taken as written).
    func stringMap(_ key: String) -> [String: String]? {
        guard let node = self.present(key, required: false) else { return nil }
        guard case .mapping(let mapping) = node else {
            self.reader.error(node, self.field(key), "must be a mapping of names to strings")
            return nil
        }
        var out: [String: String] = [:]
        for (k, v) in mapping {
            guard let name = k.string, !name.isEmpty else {
                self.reader.error(k, self.field(key), "keys must be non-empty strings")
                continue
            }
            guard case .scalar(let s) = v else {
                self.reader.error(v, "\(self.field(key)).\(name)", "must be a string")
                continue
            }
            out[name] = s.string
        }
        return out
    }

    func node(_ key: String) -> Node? { self.present(key, required: false) }
}
