import AllotCore
import AllotFormats
import AllotHTTPClient
import AllotHTTPServer
import AllotStore
import Foundation
import HTTPTypes
import Hummingbird

/// `/v1/jobs`: submit, list, show, cancel, and a rank's log (fetched from its agent).
struct JobRoutes {
    let jobs: JobStore
    let nodes: NodeStore
    let nodeKeys: NodeKeys
    let wake: ClusterWake
    let submissions: SubmissionBatcher

    var routes: RouteCollection<AllotRequestContext> {
        let routes = RouteCollection(context: AllotRequestContext.self)
        routes.on(.submitJob) { request, context in
            let (principal, scope) = try context.caller()
            let spec = try JobSpecParser.parse(String(buffer: try await request.collectBody(upTo: InputLimits.documentBytes)))
            let job = try await self.submissions.submit(Submission(spec, by: principal, scope: scope))
            // A held job, or one that may not begin yet, gives the scheduler nothing to do now (releasing it wakes it;
            // a begin time is met by the periodic cycle).
            if job.heldBy == nil && (job.beginAt ?? .distantPast) <= Date() { self.wake.signal() }
            return JSON.response(job, status: .created)
        }
        routes.on(.listJobs) { request, context in
            let (_, scope) = try context.caller()
            let state = try request.query("state", oneOf: JobState.self)
            let q = request.uri.queryParameters
            let limit = try request.query("limit", as: Int.self) ?? 500
            let jobs = try await self.jobs.list(
                state: state, org: q.get("org"), scope: scope, limit: limit, user: q.get("user").map { String($0.prefix(200)) },
                name: q.get("name").map { String($0.prefix(200)) }, ended: try request.query("ended", as: Bool.self) ?? false,
                before: try request.query("before", as: Int64.self))
            var response = JSON.response(jobs)
            // A full page may have more after it: RFC 8288's next link, as GitHub's API pages (the body stays a list).
            if jobs.count == limit, let last = jobs.last {
                let plain = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
                let others = q.filter { $0.key != "before" }.map {
                    "\($0.key)=\(String($0.value).addingPercentEncoding(withAllowedCharacters: plain) ?? "")"
                }
                response.headers[HTTPField.Name("Link")!] = "</v1/jobs?\((others + ["before=\(last.id)"]).joined(separator: "&"))>; rel=\"next\""
            }
            return response
        }
        routes.on(.showJob) { _, context in
            JSON.response(try await self.jobs.show(try context.id(), scope: try context.caller().scope))
        }
        routes.on(.cancelJob) { _, context in
            let (principal, scope) = try context.caller()
            let job = try await self.jobs.cancel(try context.id(), by: principal, scope: scope)
            self.wake.signal()
            return JSON.response(job)
        }
        routes.on(.holdJob) { _, context in
            let (principal, scope) = try context.caller()
            return JSON.response(try await self.jobs.hold(try context.id(), by: principal, scope: scope))
        }
        routes.on(.releaseJob) { _, context in
            let (principal, scope) = try context.caller()
            let job = try await self.jobs.release(try context.id(), by: principal, scope: scope)
            self.wake.signal()
            return JSON.response(job)
        }
        routes.on(.requeueJob) { _, context in
            let (principal, scope) = try context.caller()
            let job = try await self.jobs.requeue(try context.id(), by: principal, scope: scope)
            self.wake.signal()
            return JSON.response(job)
        }
        routes.on(.updateJob) { request, context in
            let (principal, scope) = try context.caller()
            let update = try JobSpecParser.parseUpdate(String(buffer: try await request.collectBody(upTo: InputLimits.documentBytes)))
            let job = try await self.jobs.update(try context.id(), update, by: principal, scope: scope)
            self.wake.signal()
            return JSON.response(job)
        }
        routes.on(.jobLog) { request, context in
            let (principal, scope) = try context.caller()
            let id = try context.id()
            let offset = try request.query("offset", as: Int.self) ?? 0
            let rank = try request.query("rank", as: Int.self) ?? 0
            let response = try await self.log(job: id, attempt: try request.query("attempt", as: Int.self), rank: rank, offset: offset, scope: scope)
            // A job's output is read on the record: once per reading (from its start), not per poll of a follow.
            if offset == 0 {
                try await AuditStore(database: self.jobs.database).record([
                    AuditEntry(actor: principal, action: "job.log.read", target: "job/\(id)/rank/\(rank)", outcome: "read")
                ])
            }
            return response
        }
        return routes
    }

    /// Fetches a rank's output from its agent.
    private func log(job: Int64, attempt: Int?, rank: Int, offset: Int, scope: Scope) async throws -> Response {
        let view = try await self.jobs.show(job, scope: scope)
        let chosen: AttemptView
        if let attempt {
            guard let found = view.attempts.first(where: { $0.number == attempt }) else {
                throw APIError.notFound("job \(job) has no attempt \(attempt) (it has \(view.attempts.count))")
            }
            chosen = found
        } else {
            guard let last = view.attempts.last else { throw APIError.notFound("job \(job) has not started yet: no log") }
            chosen = last
        }
        guard let r = chosen.nodes.first(where: { $0.rank == rank }) else { throw APIError.notFound("attempt \(chosen.number) has no rank \(rank)") }
        guard let agent = try await self.nodes.agentEndpoint(r.node) else {
            throw APIError(.badGateway, code: "agent_unreachable", message: "node \(r.node) has no agent address")
        }
        do {
            let data: Data = try await self.nodeKeys.agent(agent.url, node: r.node, enrolment: agent.enrolment, timeout: .seconds(5)).get(
                "/v1/attempts/\(job)/\(chosen.number)/\(rank)/log?offset=\(offset)")
            return JSON.text(String(decoding: data, as: UTF8.self))
        } catch {
            throw APIError(.badGateway, code: "agent_unreachable", message: "cannot read the log from \(r.node): \(error)")
        }
    }
}
