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
        // Both may quote the input; a hostile key or value must not make the answer as big as the question.
        self.field = FormatErrors.capped(field, 200)
        self.message = FormatErrors.capped(message, 400)
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

/// Every problem found in an input, not just the first, but told within a cap: the first `shown` and a count
/// of the rest (the API, the CLI and `allot simulate` all answer with this).
public struct FormatErrors: Error, Sendable, CustomStringConvertible {
    /// The problems kept (at most `kept`; `total` counts them all).
    public var issues: [FormatIssue]
    public var total: Int
    /// How many are told; how many are kept at most.
    public static let shown = 10
    public static let kept = 100

    public init(_ issues: [FormatIssue], total: Int? = nil) {
        self.issues = Array(issues.prefix(Self.kept))
        self.total = max(total ?? issues.count, self.issues.count)
    }

    /// The first problems, one a line, and how many more there are.
    public var description: String { self.told(separator: "\n") }

    public func told(separator: String) -> String {
        var lines = self.issues.prefix(Self.shown).map(\.description)
        if self.total > lines.count { lines.append("(and \(self.total - lines.count) more)") }
        return lines.joined(separator: separator)
    }

    static func capped(_ text: String, _ limit: Int) -> String {
        text.count <= limit ? text : text.prefix(limit) + "… (\(text.count - limit) more characters)"
    }
}

/// What an input may be: its size, and the nodes it expands to once its aliases are followed (a few aliases
/// of aliases make billions, the "billion laughs").
public enum InputLimits {
    public static let documentBytes = 4 << 20
    public static let nodes = 200_000
}

/// Reads typed fields out of a YAML (or JSON) tree, collecting every error with its line and field path.
final class FieldReader {
    let file: String?
    private(set) var issues: [FormatIssue] = []
    /// Every issue found, also those past the ones kept.
    private(set) var total = 0

    init(file: String?) { self.file = file }

    /// Parses text into a tree; syntax errors become issues with their line.
    func compose(_ text: String) -> Node? {
        guard text.utf8.count <= InputLimits.documentBytes else {
            self.add(
                FormatIssue(
                    file: self.file, field: "", message: "the document is \(text.utf8.count) bytes; at most \(InputLimits.documentBytes) are read"))
            return nil
        }
        do {
            guard let node = try Yams.compose(yaml: text) else { return nil }
            guard Self.fits(node, within: InputLimits.nodes) else {
                self.add(
                    FormatIssue(
                        file: self.file, field: "",
                        message: "the document expands to more than \(InputLimits.nodes) values once its aliases are followed"))
                return nil
            }
            return node
        } catch let error as YamlError {
            switch error {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                self.add(FormatIssue(file: self.file, line: mark.line, field: "", message: "malformed YAML: \(problem)"))
            case .duplicatedKeysInMapping(let duplicates, _):
                self.add(FormatIssue(file: self.file, field: duplicates.joined(separator: ", "), message: "duplicate key"))
            default:
                self.add(FormatIssue(file: self.file, field: "", message: "malformed YAML: \(error)"))
            }
        } catch {
            self.add(FormatIssue(file: self.file, field: "", message: "malformed input: \(error)"))
        }
        return nil
    }

    func error(_ node: Node?, _ field: String, _ message: String) {
        self.add(FormatIssue(file: self.file, line: node?.mark?.line, field: field, message: message))
    }

    func add(_ issue: FormatIssue) {
        self.total += 1
        if self.issues.count < FormatErrors.kept { self.issues.append(issue) }
    }

    /// The problems found, as one error.
    var errors: FormatErrors { FormatErrors(self.issues, total: self.total) }

    /// Whether the tree has at most `budget` nodes; stops counting as soon as it has more, so a bomb costs little.
    static func fits(_ root: Node, within budget: Int) -> Bool {
        var left = budget
        var stack = [root]
        while let node = stack.popLast() {
            left -= 1
            if left < 0 { return false }
            switch node {
            case .mapping(let m):
                for (k, v) in m {
                    stack.append(k)
                    stack.append(v)
                }
            case .sequence(let s): stack.append(contentsOf: s)
            default: break
            }
        }
        return true
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
