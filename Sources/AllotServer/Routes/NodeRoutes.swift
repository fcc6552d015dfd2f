import AllotCore
import AllotHTTPClient
import AllotHTTPServer
import AllotStore
import Foundation
import Hummingbird
import NIOFoundationCompat

/// `/v1/nodes`, `/v1/drains`, `/v1/maintenance`: the inventory and the operators' actions on it.
struct NodeRoutes {
    let nodes: NodeStore
    let lifecycle: NodeLifecycleStore
    let nodeKeys: NodeKeys
    let wake: ClusterWake
    /// Forgotten when a node is enrolled again (its old agent token revoked), here before the answer.
    let tokenCache: TokenCache?

    var routes: RouteCollection<AllotRequestContext> {
        let routes = RouteCollection(context: AllotRequestContext.self)
        routes.on(.listNodes) { _, _ in JSON.response(try await self.nodes.list()) }
        routes.on(.addNode) { request, context in
            let body = try await JSON.body(AddNodeRequest.self, from: request)
            if let url = body.agentURL, let why = Self.agentURLProblem(url) { throw APIError.badRequest(why, field: "agentURL") }
            let token = try await self.nodes.add(
                name: body.name, pool: body.pool, block: body.block, agentURL: body.agentURL, by: try context.caller().principal)
            let key = NodeKey.hex(self.nodeKeys.key(node: body.name, enrolment: 1))
            return JSON.response(AddNodeResponse(node: body.name, token: token, nodeKey: key), status: .created)
        }
        routes.on(.enrolNode) { request, context in
            let node = try context.nodeName()
            let body = try await JSON.body(EnrolRequest.self, from: request)
            if let url = body.agentURL, let why = Self.agentURLProblem(url) { throw APIError.badRequest(why, field: "agentURL") }
            let (token, enrolment) = try await self.nodes.enrol(node, agentURL: body.agentURL, by: try context.caller().principal)
            self.tokenCache?.forget()
            return JSON.response(AddNodeResponse(node: node, token: token, nodeKey: NodeKey.hex(self.nodeKeys.key(node: node, enrolment: enrolment))))
        }
        routes.on(.showNode) { _, context in JSON.response(try await self.nodes.detail(try context.nodeName())) }
        let actions: [(Endpoint, @Sendable (String, Principal) async throws -> Void)] = [
            (.cordon, self.lifecycle.cordon), (.uncordon, self.lifecycle.uncordon), (.undrain, self.lifecycle.undrain),
            (.declareLost, self.nodes.declareLost),
        ]
        for (endpoint, change) in actions {
            routes.on(endpoint) { _, context in
                let node = try context.nodeName()
                try await change(node, try context.caller().principal)
                self.wake.signal()
                return JSON.response(try await self.nodes.detail(node))
            }
        }
        routes.on(.restoreGPU) { request, context in
            let node = try context.nodeName()
            guard let index = context.parameters.get("index", as: Int.self) else { throw APIError.badRequest("must be a GPU index", field: "index") }
            let body = try await JSON.body([String: String].self, from: request)
            try await self.lifecycle.restoreGPU(
                node: node, index: index, reason: body["reason"] ?? "returned to service", by: try context.caller().principal)
            self.wake.signal()
            return JSON.response(try await self.nodes.detail(node))
        }
        routes.on(.drain) { request, context in
            let body = try await JSON.body(DrainRequest.self, from: request)
            let id = try await self.lifecycle.drain(
                body.nodes, reason: body.reason, deadlineSeconds: body.deadlineSeconds, by: try context.caller().principal)
            try await self.lifecycle.advanceDrains()
            return JSON.response(try await self.lifecycle.drainView(id), status: .created)
        }
        routes.on(.showDrain) { _, context in JSON.response(try await self.lifecycle.drainView(try context.id())) }
        routes.on(.listMaintenance) { request, _ in
            JSON.response(try await self.lifecycle.listMaintenance(includeEnded: try request.query("all", as: Bool.self) ?? false))
        }
        routes.on(.addMaintenance) { request, context in
            let window = try await self.lifecycle.addMaintenance(
                try await JSON.body(MaintenanceRequest.self, from: request), by: try context.caller().principal)
            self.wake.signal()
            return JSON.response(window, status: .created)
        }
        routes.on(.removeMaintenance) { _, context in
            try await self.lifecycle.removeMaintenance(try context.id(), by: try context.caller().principal)
            self.wake.signal()
            return JSON.response(["removed": true])
        }
        return routes
    }
}

extension NodeRoutes {
    /// Why an agent address is not one allotd will call, or nil: http(s), a host, no credentials or query.
    static func agentURLProblem(_ text: String) -> String? {
        guard let url = URLComponents(string: text), let scheme = url.scheme, ["http", "https"].contains(scheme), let host = url.host, !host.isEmpty,
            url.user == nil, url.password == nil, url.query == nil, url.fragment == nil
        else { return "must be http(s)://HOST:PORT, not '\(text.prefix(200))'" }
        return nil
    }

    /// A GPU is known by its UUID, so one UUID listed twice (or one index twice) is a broken report.
    static func gpuListProblem(_ gpus: [GPUInfo]) -> String? {
        var uuids: Set<String> = []
        var indices: Set<Int> = []
        for gpu in gpus {
            if !gpu.uuid.isEmpty, !uuids.insert(gpu.uuid).inserted { return "GPU \(gpu.uuid.prefix(100)) is listed twice" }
            // nvidia-smi numbers from 0; no node holds a thousand GPUs, so a larger index is a broken report.
            guard (0...1023).contains(gpu.index) else { return "index \(gpu.index) is outside 0...1023" }
            if !indices.insert(gpu.index).inserted { return "index \(gpu.index) is listed twice" }
            // No GPU is cut into more than 7 GPU instances of up to 8 compute instances each.
            let devices = gpu.migDevices ?? []
            if devices.count > 56 { return "GPU \(gpu.index) lists \(devices.count) MIG devices (at most 56)" }
            for d in devices where !d.uuid.isEmpty {
                if !uuids.insert(d.uuid).inserted { return "MIG device \(d.uuid.prefix(100)) is listed twice" }
            }
        }
        return nil
    }
}

/// `/v1/agents`: registrations and heartbeats, each from the agent of the node it reports.
struct AgentRoutes {
    let agents: AgentStore
    let wake: ClusterWake
    let shortcut: HeartbeatShortcut

    var routes: RouteCollection<AllotRequestContext> {
        let routes = RouteCollection(context: AllotRequestContext.self)
        for endpoint in [Endpoint.register, .heartbeat] {
            routes.on(endpoint) { request, context in
                let (principal, scope) = try context.caller()
                let body = Data(buffer: try await request.collectBody(upTo: 4 << 20))
                // The same bytes as this node's last full report, checked then: nothing to decode or check again.
                if endpoint == .heartbeat, case .node(let node) = scope,
                    let reply = try await self.shortcut.reply(to: node, digest: HeartbeatShortcut.digest(body))
                {
                    return JSON.response(encoded: reply)
                }
                let report = try JSON.decode(AgentReport.self, from: body)
                guard scope == .node(report.node) else {
                    throw APIError.forbidden("this token acts only for node \(principal.node ?? "-"), not \(report.node)")
                }
                if let why = NodeRoutes.agentURLProblem(report.agentURL) { throw APIError.badRequest(why, field: "agentURL") }
                if let why = NodeRoutes.gpuListProblem(report.gpus) { throw APIError.badRequest(why, field: "gpus") }
                // Only a report of healthy GPUs may be answered again unread: one naming a faulty GPU must meet the
                // database's GPU each time (an operator may have restored it; the full path quarantines it again).
                let digest =
                    report.ranks.isEmpty && (report.steps?.isEmpty ?? true) && report.gpus.allSatisfy({ $0.health == .healthy })
                    ? HeartbeatShortcut.digest(body) : nil
                let reply = try await self.agents.report(report, from: principal)
                self.shortcut.answered(report.node, digest: endpoint == .heartbeat ? digest : nil, reply: reply)
                // Capacity comes back when a rank ends (or a node registers); a report of ranks still running frees
                // nothing, and at scale every busy node sends one every interval.
                if endpoint == .register || report.ranks.contains(where: { $0.state != .running }) { self.wake.signal() }
                return JSON.response(reply)
            }
        }
        return routes
    }
}
