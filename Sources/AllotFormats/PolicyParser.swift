public import AllotCore
import Foundation
import Yams

/// Reads `Policies/` (a folder of YAML files, or one file) into a `Policy`, reporting every error as
/// `file:line: field: reason` — not just the first.
public enum PolicyParser {
    /// Reads every `.yaml`/`.yml` file of a folder (sorted by name), or the one file named.
    public static func load(path: String) throws(FormatErrors) -> Policy {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FormatErrors([FormatIssue(file: path, field: "", message: "no such file or folder")])
        }
        var files: [(String, String)] = []
        let paths: [String]
        if isDirectory.boolValue {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            paths = names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted().map { (path as NSString).appendingPathComponent($0) }
            if paths.isEmpty { throw FormatErrors([FormatIssue(file: path, field: "", message: "the folder holds no .yaml files")]) }
        } else {
            paths = [path]
        }
        for p in paths {
            guard let data = FileManager.default.contents(atPath: p), let text = String(data: data, encoding: .utf8) else {
                throw FormatErrors([FormatIssue(file: p, field: "", message: "cannot be read as UTF-8 text")])
            }
            files.append((p, text))
        }
        return try self.parse(files: files)
    }

    /// Parses and validates several files as one policy.
    public static func parse(files: [(name: String, text: String)]) throws(FormatErrors) -> Policy {
        var policy = Policy()
        var issues: [FormatIssue] = []
        var total = 0
        var located = Located()
        var sawDefaults = false
        for (name, text) in files {
            let reader = FieldReader(file: name)
            if let root = reader.compose(text),
                let f = reader.mapping(root, "", allowed: ["pools", "organizations", "priorityClasses", "defaults"])
            {
                self.readPools(f, reader, &policy, &located)
                self.readOrganizations(f, reader, &policy, &located)
                self.readClasses(f, reader, &policy, &located)
                if let d = reader.mapping(
                    f.node("defaults"), "defaults",
                    allowed: [
                        "priorityClass", "gracePeriod", "reclaimDeadline", "heartbeatTimeout", "tokenLifetime", "tokenMaxLifetime", "budgetTime",
                        "fairShareHalfLife", "pool", "defragmentMovesPerHour", "defragmentMinimumRuntime", "replicaRestartLimit",
                        "replicaRestartWindow",
                    ])
                {
                    if sawDefaults { reader.error(f.values["defaults"], "defaults", "is declared in more than one file") }
                    sawDefaults = true
                    policy.defaults = PolicyDefaults(
                        priorityClass: d.name("priorityClass"),
                        gracePeriodSeconds: Int(d.duration("gracePeriod", max: 86400) ?? 60),
                        reclaimDeadlineSeconds: Int(d.duration("reclaimDeadline", max: 7 * 86400) ?? 300),
                        heartbeatTimeoutSeconds: Int(d.duration("heartbeatTimeout", max: 3600) ?? 30),
                        tokenLifetimeSeconds: d.duration("tokenLifetime", max: 10 * 366 * 86400) ?? 90 * 86400,
                        tokenMaxLifetimeSeconds: d.duration("tokenMaxLifetime", max: 10 * 366 * 86400) ?? 365 * 86400,
                        budgetTimeSeconds: d.duration("budgetTime", max: 366 * 86400) ?? 86400,
                        fairShareHalfLifeSeconds: d.duration("fairShareHalfLife", max: 366 * 86400) ?? 7 * 86400, pool: d.name("pool"),
                        defragmentMovesPerHour: d.int("defragmentMovesPerHour", in: 0...1000) ?? 4,
                        defragmentMinimumRuntimeSeconds: d.duration("defragmentMinimumRuntime", max: 366 * 86400) ?? 600)
                    policy.defaults.replicaRestartLimit = d.int("replicaRestartLimit", in: 0...1000) ?? 5
                    policy.defaults.replicaRestartWindowSeconds = Int(d.duration("replicaRestartWindow", max: 7 * 86400) ?? 600)
                    if policy.defaults.tokenLifetimeSeconds > policy.defaults.tokenMaxLifetimeSeconds {
                        reader.error(d.values["tokenLifetime"], "defaults.tokenLifetime", "is longer than defaults.tokenMaxLifetime")
                    }
                    if let pc = policy.defaults.priorityClass { located.defaultClass = (name, d.values["priorityClass"]?.mark?.line, pc) }
                    if let pool = policy.defaults.pool { located.defaultPool = (name, d.values["pool"]?.mark?.line, pool) }
                }
            }
            issues += reader.issues
            total += reader.total
        }
        let crossed = self.crossCheck(policy, located)
        issues += crossed
        total += crossed.count
        if total > 0 { throw FormatErrors(issues, total: total) }
        return policy
    }

    /// Why `text` cannot name the Unix account of an organisation's jobs, or nil: a user name as useradd allows,
    /// or `uid:gid` with both above 0 (jobs never run as root).
    static func accountProblem(_ text: String) -> String? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 2 {
            guard let uid = Int(parts[0]), let gid = Int(parts[1]), uid > 0, gid > 0, uid < 1 << 31, gid < 1 << 31 else {
                return "'\(text.prefix(64))' must be uid:gid with both above 0 (jobs never run as root)"
            }
            return nil
        }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard !text.isEmpty, text.count <= 32, text.allSatisfy({ allowed.contains($0) }), text.first != "-" else {
            return "'\(text.prefix(64))' must be a Unix user name (letters, digits, '.', '_', '-') or uid:gid"
        }
        if text == "root" { return "jobs never run as root" }
        return nil
    }

    /// Where each declared thing came from, for errors found only once every file is read.
    private struct Located {
        var pools: [String: (file: String, line: Int?)] = [:]
        var orgs: [String: (file: String, line: Int?)] = [:]
        var classes: [String: (file: String, line: Int?)] = [:]
        var allocationPools: [(file: String, line: Int?, field: String, pool: String)] = []
        var restrictions: [(file: String, line: Int?, field: String, org: String)] = []
        var defaultClass: (file: String, line: Int?, name: String)?
        var defaultPool: (file: String, line: Int?, name: String)?
        /// Unix accounts, by the organisation that runs jobs as them.
        var accounts: [String: String] = [:]
    }

    private static func readPools(_ f: Fields, _ reader: FieldReader, _ policy: inout Policy, _ located: inout Located) {
        guard let items = reader.sequence(f.node("pools"), "pools") else { return }
        for (i, item) in items.enumerated() {
            let path = "pools[\(i)]"
            guard let p = reader.mapping(item, path, allowed: ["name", "gpuModel", "restrictedTo", "isolateSharedGPUs"]),
                let name = p.name("name", required: true)
            else {
                continue
            }
            if let first = located.pools[name] {
                reader.error(item, "\(path).name", "pool '\(name)' is already declared at \(first.file):\(first.line ?? 0)")
                continue
            }
            located.pools[name] = (reader.file ?? "", item.mark?.line)
            let restricted = p.stringList("restrictedTo") ?? []
            for (j, org) in restricted.enumerated() {
                located.restrictions.append((reader.file ?? "", p.values["restrictedTo"]?.mark?.line, "\(path).restrictedTo[\(j)]", org))
            }
            policy.pools.append(
                Pool(name: name, gpuModel: p.string("gpuModel"), restrictedTo: restricted, isolateSharedGPUs: p.bool("isolateSharedGPUs")))
        }
    }

    /// A grant's projects: each named once, its limits within the grant's, a positive share, users' limits within
    /// the project's.
    private static func projects(_ fields: Fields, _ reader: FieldReader, _ ap: String, limitGPUs: Int, gpuHours: Int) -> [ProjectLimit] {
        var out: [ProjectLimit] = []
        for (k, item) in (reader.sequence(fields.node("projects"), "\(ap).projects") ?? []).enumerated() {
            let pp = "\(ap).projects[\(k)]"
            guard let p = reader.mapping(item, pp, allowed: ["name", "limitGPUs", "gpuHours", "share", "users"]),
                let name = p.name("name", required: true)
            else { continue }
            if out.contains(where: { $0.name == name }) {
                reader.error(item, "\(pp).name", "project '\(name)' is already declared in this allocation")
            }
            let limit = p.int("limitGPUs", in: 0...limitGPUs)
            let hours = p.int("gpuHours", in: 0...gpuHours)
            let share = p.double("share", in: 0.001...1_000_000) ?? 1
            var users: [String: UserLimit] = [:]
            if let node = p.node("users"), let um = reader.mapping(node, "\(pp).users", allowed: Self.anyKey(node)) {
                for (user, value) in um.values.sorted(by: { $0.key < $1.key }) {
                    guard let u = reader.mapping(value, "\(pp).users.\(user)", allowed: ["limitGPUs", "gpuHours"]) else { continue }
                    users[user] = UserLimit(
                        limitGPUs: u.int("limitGPUs", in: 0...(limit ?? limitGPUs)),
                        gpuHours: u.int("gpuHours", in: 0...(hours ?? gpuHours)).map(Int64.init))
                }
            }
            out.append(ProjectLimit(name: name, limitGPUs: limit, gpuHours: hours.map(Int64.init), share: share, users: users))
        }
        return out
    }

    /// Every key of a mapping node (for maps keyed by names, such as users).
    private static func anyKey(_ node: Node) -> Set<String> {
        guard case .mapping(let m) = node else { return [] }
        return Set(m.compactMap { $0.key.string })
    }

    /// Whether a grant's window meets `from…until` (nil: every month). Days are ISO dates, so they compare as text.
    private static func overlap(_ g: Allocation, _ from: String?, _ until: String?) -> Bool {
        guard let gf = g.validFrom, let gu = g.validUntil, let from, let until else { return true }
        return gf <= until && from <= gu
    }

    private static func readOrganizations(_ f: Fields, _ reader: FieldReader, _ policy: inout Policy, _ located: inout Located) {
        guard let items = reader.sequence(f.node("organizations"), "organizations") else { return }
        for (i, item) in items.enumerated() {
            let path = "organizations[\(i)]"
            guard let o = reader.mapping(item, path, allowed: ["name", "allocations", "account", "userAccounts"]),
                let name = o.name("name", required: true)
            else { continue }
            if let first = located.orgs[name] {
                reader.error(item, "\(path).name", "organization '\(name)' is already declared at \(first.file):\(first.line ?? 0)")
                continue
            }
            located.orgs[name] = (reader.file ?? "", item.mark?.line)
            var allocations: [Allocation] = []
            var declaredAt: [Int] = []  // each kept allocation's index in the file, for errors
            for (j, a) in (reader.sequence(o.node("allocations"), "\(path).allocations") ?? []).enumerated() {
                let ap = "\(path).allocations[\(j)]"
                guard
                    let fields = reader.mapping(
                        a, ap, allowed: ["pool", "guaranteedGPUs", "limitGPUs", "gpuHours", "validFrom", "validUntil", "projects"])
                else { continue }
                let pool = fields.name("pool", required: true)
                let guaranteed = fields.int("guaranteedGPUs", required: true, in: 0...1_000_000)
                let limit = fields.int("limitGPUs", in: 0...1_000_000) ?? guaranteed
                let hours = fields.int("gpuHours", required: true, in: 0...1_000_000_000_000)
                let from = self.day(fields, "validFrom")
                let until = self.day(fields, "validUntil")
                if (from == nil) != (until == nil), fields.has("validFrom") != fields.has("validUntil") {
                    reader.error(a, "\(ap).validUntil", "validFrom and validUntil go together (without both, the period is the calendar month)")
                }
                if let from, let until, from > until { reader.error(fields.values["validUntil"], "\(ap).validUntil", "is before validFrom \(from)") }
                if let g = guaranteed, let l = limit, l < g {
                    reader.error(fields.values["limitGPUs"], "\(ap).limitGPUs", "must be at least guaranteedGPUs (\(g)), not \(l)")
                }
                if let pool { located.allocationPools.append((reader.file ?? "", fields.values["pool"]?.mark?.line, "\(ap).pool", pool)) }
                guard let pool, let guaranteed, let limit, let hours else { continue }
                // One grant per organisation × pool at any moment: which one admission and the statements use is
                // never a choice. A monthly grant covers every month, so it overlaps any windowed one.
                if let (k, other) = allocations.enumerated().first(where: { $0.element.pool == pool && Self.overlap($0.element, from, until) }) {
                    reader.error(
                        a, "\(ap).validFrom",
                        "overlaps \(path).allocations[\(declaredAt[k])] (\(other.validFrom.map { "\($0) to \(other.validUntil ?? "")" } ?? "monthly")) in pool \(pool): one grant per organisation and pool at a time"
                    )
                }
                let projects = Self.projects(fields, reader, ap, limitGPUs: limit, gpuHours: hours)
                allocations.append(
                    Allocation(
                        pool: pool, guaranteedGPUs: guaranteed, limitGPUs: limit, gpuHours: Int64(hours), validFrom: from, validUntil: until,
                        projects: projects))
                declaredAt.append(j)
            }
            // The Unix account its jobs run as on the nodes: a name, or uid:gid (never root).
            let account = o.string("account")
            if let a = account, let why = Self.accountProblem(a) { reader.error(o.values["account"], "\(path).account", why) }
            // An account is what keeps organisations apart on a node: two may not share one.
            for a in [account ?? "allot-\(name)"] + Array((o.stringMap("userAccounts") ?? [:]).values).sorted() {
                if let other = located.accounts[a], other != name {
                    reader.error(
                        o.values["account"] ?? item, "\(path).account", "account '\(a)' is already \(other)'s: organisations never share an account")
                }
                located.accounts[a] = name
            }
            let userAccounts = o.stringMap("userAccounts") ?? [:]
            for (user, a) in userAccounts.sorted(by: { $0.key < $1.key }) {
                if let why = Self.accountProblem(a) { reader.error(o.values["userAccounts"], "\(path).userAccounts.\(user)", why) }
            }
            policy.organizations.append(Organization(name: name, allocations: allocations, account: account, userAccounts: userAccounts))
        }
    }

    private static func readClasses(_ f: Fields, _ reader: FieldReader, _ policy: inout Policy, _ located: inout Located) {
        guard let items = reader.sequence(f.node("priorityClasses"), "priorityClasses") else { return }
        for (i, item) in items.enumerated() {
            let path = "priorityClasses[\(i)]"
            guard let c = reader.mapping(item, path, allowed: ["name", "value", "preemptible", "preempts", "maxTime", "organizations", "roles"]),
                let name = c.name("name", required: true)
            else { continue }
            if let first = located.classes[name] {
                reader.error(item, "\(path).name", "priority class '\(name)' is already declared at \(first.file):\(first.line ?? 0)")
                continue
            }
            located.classes[name] = (reader.file ?? "", item.mark?.line)
            guard let value = c.int("value", required: true, in: -1_000_000...1_000_000) else { continue }
            // Who may submit with it: organisations (checked against those declared) and roles.
            let orgs = c.stringList("organizations") ?? []
            for (j, org) in orgs.enumerated() {
                located.restrictions.append((reader.file ?? "", c.values["organizations"]?.mark?.line, "\(path).organizations[\(j)]", org))
            }
            var roles: [Role] = []
            for (j, r) in (c.stringList("roles") ?? []).enumerated() {
                if let role = Role(rawValue: r), [.member, .orgAdmin, .operator].contains(role) {
                    roles.append(role)
                } else {
                    reader.error(
                        c.values["roles"], "\(path).roles[\(j)]", "must be member, org-admin or operator (the roles that submit), not '\(r)'")
                }
            }
            policy.priorityClasses.append(
                PriorityClass(
                    name: name, value: value, preemptible: c.bool("preemptible") ?? false, preempts: c.bool("preempts") ?? false,
                    maxTimeSeconds: c.duration("maxTime"), organizations: orgs, roles: roles))
        }
    }

    /// A calendar day `YYYY-MM-DD` (YAML may already have read it as a timestamp; its text is kept).
    private static func day(_ f: Fields, _ key: String) -> String? {
        guard let s = f.string(key) else { return nil }
        let parts = s.split(separator: "-")
        guard parts.count == 3, parts[0].count == 4, let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]),
            (1...12).contains(m), (1...31).contains(d), y >= 2000
        else {
            f.reader.error(f.values[key], f.field(key), "must be a day as YYYY-MM-DD, not '\(s)'")
            return nil
        }
        var components = DateComponents()
        (components.year, components.month, components.day) = (y, m, d)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        guard let date = calendar.date(from: components), calendar.component(.day, from: date) == d else {
            f.reader.error(f.values[key], f.field(key), "is not a real day: '\(s)'")
            return nil
        }
        return String(format: "%04d-%02d-%02d", y, m, d)
    }

    private static func crossCheck(_ policy: Policy, _ located: Located) -> [FormatIssue] {
        var issues: [FormatIssue] = []
        for a in located.allocationPools where located.pools[a.pool] == nil {
            issues.append(FormatIssue(file: a.file, line: a.line, field: a.field, message: "unknown pool '\(a.pool)'"))
        }
        for r in located.restrictions where located.orgs[r.org] == nil {
            issues.append(FormatIssue(file: r.file, line: r.line, field: r.field, message: "unknown organization '\(r.org)'"))
        }
        if let d = located.defaultPool, located.pools[d.name] == nil {
            issues.append(FormatIssue(file: d.file, line: d.line, field: "defaults.pool", message: "unknown pool '\(d.name)'"))
        }
        if let d = located.defaultClass, located.classes[d.name] == nil {
            issues.append(FormatIssue(file: d.file, line: d.line, field: "defaults.priorityClass", message: "unknown priority class '\(d.name)'"))
        }
        return issues
    }
}
