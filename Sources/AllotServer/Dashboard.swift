import AllotCore
import AllotStore
import Foundation

/// The read-only web page at `/`, behind a login: quota bars, the node/GPU grid and the queue with wait reasons —
/// all of them for operators and auditors, a member's own organisation's for its members (the grid shows which
/// GPUs are busy, never whose jobs). Rendered on the server, self-contained (no scripts, fonts or styles from
/// elsewhere, since the cluster may be air-gapped), and refreshed every few seconds by the browser.
struct Dashboard {
    let database: Database

    /// The login form: a token (or the identity provider's token) in, a session cookie out.
    static func loginForm(message: String?) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>Allot: sign in</title>
        <style>body{font:14px/1.4 system-ui,sans-serif;margin:48px;color:#1b1f24;background:#f6f7f9}
        form{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:20px;max-width:520px}
        input[type=password]{width:100%;padding:6px;margin:8px 0}.err{color:#a33}</style></head><body>
        <h1>Allot</h1>
        <form method="post" action="/login" id="login"><label for="token">Your Allot token (or your identity provider's token)</label>
        <input type="password" id="token" name="token" autocomplete="off" required>
        <button type="submit">Sign in</button>\(message.map { "<p class=\"err\">\(Self.escape($0))</p>" } ?? "")</form>
        </body></html>

        """
    }

    func html(for principal: Principal, scope: Scope, now: Date = Date()) async throws -> String {
        let quota = scope.seesOrganizations ? try await QuotaStore(database: self.database).rows(org: scope.organization, at: now) : []
        let nodes = try await NodeStore(database: self.database).list()
        let jobs = try await JobStore(database: self.database).list(state: nil, org: nil, scope: scope, limit: 500)
            .filter { !$0.state.isTerminal }
        var page = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
            <meta name="viewport" content="width=device-width, initial-scale=1"><title>Allot</title>
            <style>
            body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1b1f24;background:#f6f7f9}
            h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} .muted{color:#667}
            .quota{display:grid;grid-template-columns:260px 1fr 300px;gap:6px 12px;align-items:center;max-width:1100px}
            .bar{position:relative;height:18px;background:#e3e6ea;border-radius:3px;overflow:hidden}
            .fill{position:absolute;top:0;bottom:0;left:0;background:#2f6fde}.borrow{position:absolute;top:0;bottom:0;background:#e8a33d}
            .mark{position:absolute;top:0;bottom:0;width:2px;background:#1b1f24}
            .nodes{display:flex;flex-wrap:wrap;gap:10px}.node{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:8px;width:190px}
            .node.lost{opacity:.5}.node.draining,.node.cordoned,.node.drained,.node.maintenance{border-color:#e8a33d;border-width:2px}
            .gpus{display:grid;grid-template-columns:repeat(8,18px);gap:3px;margin-top:6px}
            .gpu{width:18px;height:18px;border-radius:3px;background:#cfe8d0;border:1px solid #9bc79d}
            .gpu.busy{background:#2f6fde;border-color:#2457b0}.gpu.part{background:linear-gradient(to top,#2f6fde var(--p),#cfe8d0 var(--p))}
            .gpu.quarantined{background:#d9534f;border-color:#a33}
            table{border-collapse:collapse;background:#fff;min-width:800px}td,th{border-bottom:1px solid #e3e6ea;padding:4px 10px;text-align:left}
            .legend span{display:inline-block;margin-right:14px}.legend .gpu{display:inline-block;vertical-align:middle;margin-right:4px}
            </style></head><body>
            <h1>Allot</h1>
            <form method="post" action="/logout" style="float:right"><span class="muted">\(Self.escape(principal.auditName))</span> <button>Sign out</button></form>
            <div class="muted">\(nodes.count) nodes · \(nodes.reduce(0) { $0 + $1.gpus.count }) GPUs · \(jobs.filter { $0.state == .queued }.count) queued · \(jobs.filter { $0.state != .queued }.count) running · \(Self.escape(ISO8601DateFormatter().string(from: now)))</div>
            <h2>Quota</h2>
            <div class="quota" id="quota">
            """
        for q in quota {
            let scale = Double(max(q.limitGPUs, Int(q.inUseGPUs.rounded(.up)), 1))
            let own = min(q.inUseGPUs, Double(q.guaranteedGPUs))
            let pct = { (x: Double) in String(format: "%.1f%%", x / scale * 100) }
            page += """
                <div><b>\(Self.escape(q.org))</b> <span class="muted">in \(Self.escape(q.pool))</span></div>
                <div class="bar" title="guaranteed \(q.guaranteedGPUs), limit \(q.limitGPUs)"><div class="fill" style="width:\(pct(own))"></div>\
                <div class="borrow" style="left:\(pct(own));width:\(pct(q.borrowedGPUs))"></div><div class="mark" style="left:\(pct(Double(q.guaranteedGPUs)))"></div></div>
                <div class="muted">\(Self.gpus(q.inUseGPUs)) in use of \(q.guaranteedGPUs) guaranteed (limit \(q.limitGPUs)) · \(Self.gpus(q.gpuHoursUsed)) of \(Self.gpus(q.gpuHours)) GPU-h</div>

                """
        }
        if quota.isEmpty { page += "<div class=\"muted\">No allocations in force.</div>\n" }
        page += """
            </div>
            <h2>Nodes</h2>
            <div class="legend muted"><span><i class="gpu"></i>free</span><span><i class="gpu busy"></i>busy</span>\
            <span><i class="gpu part" style="--p:50%"></i>shared</span><span><i class="gpu quarantined"></i>quarantined</span></div>
            <div class="nodes" id="nodes">
            """
        for n in nodes {
            page +=
                "<div class=\"node \(n.state.rawValue)\"><b>\(Self.escape(n.name))</b> <span class=\"muted\">\(Self.escape(n.pool)) · \(n.state.rawValue)</span><div class=\"gpus\">"
            for g in n.gpus {
                let used = n.usedGPUMilli["\(g.index)"] ?? 0
                let title = "GPU \(g.index) \(g.model) \(g.health.rawValue)\(used > 0 ? ", \(used) milli held" : "")"
                if g.health == .quarantined {
                    page += "<i class=\"gpu quarantined\" title=\"\(Self.escape(title))\"></i>"
                } else if used >= 1000 {
                    page += "<i class=\"gpu busy\" title=\"\(Self.escape(title))\"></i>"
                } else if used > 0 {
                    page += "<i class=\"gpu part\" style=\"--p:\(used / 10)%\" title=\"\(Self.escape(title))\"></i>"
                } else {
                    page += "<i class=\"gpu\" title=\"\(Self.escape(title))\"></i>"
                }
            }
            page += "</div></div>\n"
        }
        page += """
            </div>
            <h2>Queue</h2>
            <table id="queue"><tr><th>Job</th><th>Organisation</th><th>Name</th><th>GPUs</th><th>State</th><th>Waiting since</th><th>Why</th></tr>
            """
        for j in jobs.sorted(by: {
            ($0.state == .queued ? 0 : 1, -$0.priority, $0.submittedAt) < ($1.state == .queued ? 0 : 1, -$1.priority, $1.submittedAt)
        }) {
            let gpus = j.gpuMilli.map { "\(j.nodes) × \(Double($0) / 1000)" } ?? "\(j.nodes) × \(j.gpusPerNode)"
            page += "<tr><td>\(j.id)</td><td>\(Self.escape(j.org))</td><td>\(Self.escape(j.name))</td><td>\(gpus)</td><td>\(j.state.rawValue)</td>"
            page += "<td>\(Self.escape(ISO8601DateFormatter().string(from: j.submittedAt)))</td><td>\(Self.escape(j.reason ?? ""))</td></tr>\n"
        }
        if jobs.isEmpty { page += "<tr><td colspan=\"7\" class=\"muted\">Nothing queued or running.</td></tr>\n" }
        page += "</table>\n</body></html>\n"
        return page
    }

    static func gpus(_ v: Double) -> String { v == v.rounded() ? String(Int64(v)) : String(format: "%.2f", v) }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;").replacingOccurrences(of: "'", with: "&#39;")
    }
}
