public import Foundation

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

    /// Slurm's `--begin` (`man sbatch`): `now[+COUNT[seconds|minutes|hours|days|weeks]]` (seconds by default),
    /// `HH:MM[:SS]` (its next occurrence), `YYYY-MM-DD[THH:MM[:SS]]`, `midnight`, `noon`, `fika` (15:00),
    /// `teatime` (16:00), `today`, `tomorrow`; local times in `timeZone`. Nil when malformed.
    public static func beginTime(_ text: String, now: Date, timeZone: TimeZone = .current) -> Date? {
        let s = text.trimmingCharacters(in: .whitespaces).lowercased()
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let today = calendar.startOfDay(for: now)
        func next(_ hour: Int, _ minute: Int, _ second: Int) -> Date? {
            guard let t = calendar.date(bySettingHour: hour, minute: minute, second: second, of: today) else { return nil }
            return t > now ? t : calendar.date(byAdding: .day, value: 1, to: t)
        }
        switch s {
        case "now": return now
        case "today": return today
        case "tomorrow": return calendar.date(byAdding: .day, value: 1, to: today)
        case "midnight": return calendar.date(byAdding: .day, value: 1, to: today)
        case "noon": return next(12, 0, 0)
        case "fika": return next(15, 0, 0)
        case "teatime": return next(16, 0, 0)
        default: break
        }
        if s.hasPrefix("now+") {
            let rest = s.dropFirst(4)
            let digits = rest.prefix { $0.isNumber }
            guard let n = Int64(digits), n <= Self.largestField else { return nil }
            let units: [String: Int64] = [
                "": 1, "s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hour": 3600,
                "hours": 3600, "d": 86400, "day": 86400, "days": 86400, "w": 604_800, "week": 604_800, "weeks": 604_800,
            ]
            guard let unit = units[String(rest.dropFirst(digits.count))] else { return nil }
            return now.addingTimeInterval(Double(n * unit))
        }
        let clock = s.split(separator: ":").map { Int($0) }
        if !s.contains("-"), (2...3).contains(clock.count), clock.allSatisfy({ $0 != nil }) {
            let f = clock.map { $0! }
            guard (0...23).contains(f[0]), (0...59).contains(f[1]), f.count == 2 || (0...59).contains(f[2]) else { return nil }
            return next(f[0], f[1], f.count == 3 ? f[2] : 0)
        }
        let parts = s.split(separator: "t", maxSplits: 1).map(String.init)
        let day = parts[0].split(separator: "-").map { Int($0) }
        guard day.count == 3, day.allSatisfy({ $0 != nil }) else { return nil }
        var c = DateComponents()
        (c.year, c.month, c.day) = (day[0], day[1], day[2])
        if parts.count == 2 {
            let t = parts[1].split(separator: ":").map { Int($0) }
            guard (2...3).contains(t.count), t.allSatisfy({ $0 != nil }) else { return nil }
            (c.hour, c.minute, c.second) = (t[0], t[1], t.count == 3 ? t[2] : 0)
        }
        guard let date = calendar.date(from: c), calendar.component(.day, from: date) == c.day else { return nil }
        return date
    }
}
