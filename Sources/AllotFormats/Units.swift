import Foundation

/// Durations and sizes as people and Slurm write them.
public enum Units {
    /// Parses `90s`, `45m`, `48h`, `2d`, `1h30m`, or Slurm's `--time` forms (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`,
    /// `D-HH:MM`, `D-HH:MM:SS`); a bare number is minutes, as in Slurm. Returns seconds, or nil when malformed.
    public static func durationSeconds(_ text: String) -> Int64? {
        let s = text.trimmingCharacters(in: .whitespaces).lowercased()
        if s.isEmpty { return nil }
        if s == "unlimited" || s == "infinite" { return nil }
        if s.contains(":") || s.contains("-") { return self.slurmTime(s) }
        if let minutes = Int64(s), minutes >= 0 { return minutes <= Self.largestField ? minutes * 60 : nil }
        // Suffixed parts: 1d2h30m15s, each unit at most once, in descending order.
        let units: [(Character, Int64)] = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)]
        var total: Int64 = 0
        var digits = ""
        var nextUnit = 0
        for ch in s {
            if ch.isNumber {
                digits.append(ch)
                continue
            }
            guard let u = units.firstIndex(where: { $0.0 == ch }), u >= nextUnit, let n = Int64(digits) else { return nil }
            let (product, overflow) = n.multipliedReportingOverflow(by: units[u].1)
            if overflow { return nil }
            total += product
            digits = ""
            nextUnit = u + 1
        }
        return digits.isEmpty ? total : nil
    }

    /// No field of a duration is larger (about 190 years of minutes): the arithmetic never overflows.
    static let largestField: Int64 = 100_000_000

    /// Slurm's `-t/--time`: "minutes", "minutes:seconds", "hours:minutes:seconds", "days-hours",
    /// "days-hours:minutes" and "days-hours:minutes:seconds".
    static func slurmTime(_ s: String) -> Int64? {
        var days: Int64 = 0
        var rest = Substring(s)
        let hasDays = s.contains("-")
        if hasDays {
            let parts = s.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, let d = Int64(parts[0]), d >= 0, d <= Self.largestField else { return nil }
            days = d
            rest = parts[1]
        }
        let fields = rest.split(separator: ":", omittingEmptySubsequences: false).map { Int64($0) }
        guard !fields.isEmpty, fields.count <= 3, fields.allSatisfy({ $0 != nil && $0! >= 0 && $0! <= Self.largestField }) else { return nil }
        let f = fields.map { $0! }
        let seconds: Int64
        if hasDays {
            switch f.count {
            case 1: seconds = f[0] * 3600
            case 2: seconds = f[0] * 3600 + f[1] * 60
            default: seconds = f[0] * 3600 + f[1] * 60 + f[2]
            }
        } else {
            switch f.count {
            case 1: seconds = f[0] * 60
            case 2: seconds = f[0] * 60 + f[1]
            default: seconds = f[0] * 3600 + f[1] * 60 + f[2]
            }
        }
        return days * 86400 + seconds
    }

    /// Renders seconds as the shortest exact `XdYhZmWs` form.
    public static func formatDuration(_ seconds: Int64) -> String {
        if seconds == 0 { return "0s" }
        var out = ""
        var left = seconds
        for (unit, size) in [("d", Int64(86400)), ("h", 3600), ("m", 60), ("s", 1)] where left >= size {
            out += "\(left / size)\(unit)"
            left %= size
        }
        return out
    }

    /// Parses a memory size into MiB: `512M`, `64G`, `64Gi`, `1T`, `1.5G` (binary units, as Slurm and
    /// Kubernetes users both mean for memory); a bare number is `defaultUnit`. Nil when malformed.
    public static func mebibytes(_ text: String, defaultUnit: Character = "M") -> Int? {
        var s = text.trimmingCharacters(in: .whitespaces).uppercased()
        if s.hasSuffix("IB") { s.removeLast(2) } else if s.hasSuffix("I") || s.hasSuffix("B") { s.removeLast() }
        guard let last = s.last else { return nil }
        var unit = Character(defaultUnit.uppercased())
        if last.isLetter {
            unit = last
            s.removeLast()
        }
        guard let n = Double(s), n >= 0, n.isFinite else { return nil }
        let factor: Double
        switch unit {
        case "K": factor = 1.0 / 1024
        case "M": factor = 1
        case "G": factor = 1024
        case "T": factor = 1024 * 1024
        default: return nil
        }
        let mib = (n * factor).rounded(.up)
        return mib < Double(Int.max / 2) ? Int(mib) : nil
    }
}
