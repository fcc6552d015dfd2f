/// Slurm's hostlist form (`man scontrol`, HOSTLIST): `gpu-[001-003,007],login1`. Written by hand: Slurm's own
/// code is the only implementation, and a rank needs it without Slurm installed.
public enum Hostlist {
    /// The compressed form of host names, in the order given: runs of one prefix with consecutive numbers (of one
    /// width, zeros kept) become ranges.
    public static func compress(_ hosts: [String]) -> String {
        /// Hosts that differ only in one number: `prefix`, the number padded to `width` digits (0: as it is), `suffix`.
        struct Run {
            var prefix: String
            var suffix: String
            var width: Int
            var numbers: [Int]
            func pad(_ n: Int) -> String {
                let s = String(n)
                return self.width > s.count ? String(repeating: "0", count: self.width - s.count) + s : s
            }
            var text: String {
                if self.numbers.count == 1 { return self.prefix + self.pad(self.numbers[0]) + self.suffix }
                var ranges: [String] = []
                var i = 0
                while i < self.numbers.count {
                    var j = i
                    while j + 1 < self.numbers.count, self.numbers[j + 1] == self.numbers[j] + 1 { j += 1 }
                    ranges.append(i == j ? self.pad(self.numbers[i]) : "\(self.pad(self.numbers[i]))-\(self.pad(self.numbers[j]))")
                    i = j + 1
                }
                return "\(self.prefix)[\(ranges.joined(separator: ","))]\(self.suffix)"
            }
        }
        var items: [Run?] = []  // nil keeps a host without a number in its place
        var plain: [Int: String] = [:]
        for host in hosts {
            // The last run of digits is the number; what follows it stays a suffix (`node12-ib`).
            let chars = Array(host)
            guard let end = chars.lastIndex(where: { $0.isASCII && $0.isNumber }) else {
                plain[items.count] = host
                items.append(nil)
                continue
            }
            var start = end
            while start > 0, chars[start - 1].isASCII, chars[start - 1].isNumber { start -= 1 }
            let digits = String(chars[start...end])
            guard digits.count <= 18, let n = Int(digits) else {
                plain[items.count] = host
                items.append(nil)
                continue
            }
            let prefix = String(chars[..<start])
            let suffix = String(chars[(end + 1)...])
            let padded = digits.count > 1 && digits.hasPrefix("0")
            if let last = items.last, var run = last, run.prefix == prefix, run.suffix == suffix,
                run.width == 0 ? !padded : digits.count == run.width
            {
                run.numbers.append(n)
                items[items.count - 1] = run
            } else {
                items.append(Run(prefix: prefix, suffix: suffix, width: padded ? digits.count : 0, numbers: [n]))
            }
        }
        return items.enumerated().map { i, run in run?.text ?? plain[i] ?? "" }.joined(separator: ",")
    }

    /// The host names a hostlist names, in order; nil when it is malformed or names more than `limit` hosts.
    public static func expand(_ list: String, limit: Int = 100_000) -> [String]? {
        var hosts: [String] = []
        for item in self.topLevelItems(list) where !item.isEmpty {
            guard let expanded = self.expandItem(item, limit: limit - hosts.count) else { return nil }
            hosts += expanded
        }
        return hosts
    }

    /// Splits at commas outside brackets.
    private static func topLevelItems(_ list: String) -> [String] {
        var items: [String] = []
        var current = ""
        var depth = 0
        for c in list {
            if c == "[" { depth += 1 } else if c == "]" { depth -= 1 }
            if c == "," && depth == 0 {
                items.append(current)
                current = ""
            } else {
                current.append(c)
            }
        }
        items.append(current)
        return items.map { String($0.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
    }

    /// One item, brackets possibly several (`rack[1-2]-gpu[01-04]`): the product, left to right.
    private static func expandItem(_ item: String, limit: Int) -> [String]? {
        guard let open = item.firstIndex(of: "[") else { return item.contains("]") ? nil : [item] }
        guard let close = item[open...].firstIndex(of: "]") else { return nil }
        let prefix = String(item[..<open])
        let body = item[item.index(after: open)..<close]
        guard let rest = self.expandItem(String(item[item.index(after: close)...]), limit: limit) else { return nil }
        var out: [String] = []
        for range in body.split(separator: ",", omittingEmptySubsequences: false) {
            let ends = range.split(separator: "-", omittingEmptySubsequences: false)
            guard ends.count == 1 || ends.count == 2, ends.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }),
                let low = Int(ends[0]), let high = Int(ends.last!), low <= high
            else { return nil }
            let width = ends[0].count
            for n in low...high {
                let s = String(n)
                let number = s.count < width ? String(repeating: "0", count: width - s.count) + s : s
                for r in rest {
                    out.append(prefix + number + r)
                    if out.count > limit { return nil }
                }
            }
        }
        return out
    }
}
