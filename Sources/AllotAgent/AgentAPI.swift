import AllotCore
import AllotHTTPServer
import Foundation
public import Hummingbird
public import Logging

/// The agent's own HTTP API, called by the scheduler with the callback token the agent chose:
/// `POST /v1/attempts` (start a rank, idempotent), `POST /v1/attempts/JOB/ATTEMPT/RANK/stop`,
/// `GET /v1/attempts`, `GET /v1/attempts/JOB/ATTEMPT/RANK/log?offset=N`, and `GET /healthz`.
public struct AgentAPI: Sendable {
    public let supervisor: Supervisor
    public let callbackToken: String

    public init(supervisor: Supervisor, callbackToken: String) {
        self.supervisor = supervisor
        self.callbackToken = callbackToken
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/healthz") { _, _ in JSON.text("ok\n") }
        let v1 = router.group("/v1")
        v1.post("/attempts") { request, _ in
            try self.authorize(request)
            let launch = try await JSON.body(LaunchRequest.self, from: request)
            guard !launch.command.isEmpty else { throw APIError.badRequest("must not be empty", field: "command") }
            do {
                return JSON.response(try await self.supervisor.launch(launch), status: .created)
            } catch let error as SupervisorError {
                throw APIError.conflict(error.description)
            }
        }
        v1.get("/attempts") { request, _ in
            try self.authorize(request)
            return JSON.response(await self.supervisor.all())
        }
        v1.post("/attempts/:job/:attempt/:rank/stop") { request, context in
            try self.authorize(request)
            let key = try Self.key(context)
            let stop = try await JSON.body(StopRequest.self, from: request)
            do {
                return JSON.response(try await self.supervisor.stop(key, gracePeriodSeconds: max(0, stop.gracePeriodSeconds)))
            } catch {
                throw APIError.notFound("\(error)")
            }
        }
        v1.get("/attempts/:job/:attempt/:rank/log") { request, context in
            try self.authorize(request)
            let key = try Self.key(context)
            let offset = request.uri.queryParameters.get("offset", as: Int.self) ?? 0
            let path = await self.supervisor.logPath(for: key)
            guard let handle = FileHandle(forReadingAtPath: path) else { throw APIError.notFound("no log for rank \(key) on this node") }
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(max(0, offset)))
            let data = try handle.read(upToCount: 8 << 20) ?? Data()
            return JSON.text(String(decoding: data, as: UTF8.self))
        }
        return router
    }

    private func authorize(_ request: Request) throws {
        guard request.bearerToken == self.callbackToken else { throw APIError.unauthorized }
    }

    private static func key(_ context: BasicRequestContext) throws -> RankKey {
        guard let job = context.parameters.get("job", as: Int64.self), let attempt = context.parameters.get("attempt", as: Int.self),
            let rank = context.parameters.get("rank", as: Int.self)
        else { throw APIError.badRequest("job, attempt and rank must be numbers") }
        return RankKey(jobID: job, attempt: attempt, rank: rank)
    }
}

extension AgentAPI {
    /// Runs the agent until SIGTERM or SIGINT: its API on `host:port`, with the heartbeat as its service.
    public func serve(host: String, port: Int, heartbeat: Heartbeat, logger: Logger) async throws {
        try await Application(
            router: self.router(), configuration: .init(address: .hostname(host, port: port), serverName: "allot-agent"), services: [heartbeat],
            logger: logger
        ).runService()
    }
}
