import AllotCore
import AllotHTTPClient
import AllotHTTPServer
public import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore
import NIOFoundationCompat
import Synchronization

/// The agent's own HTTP API, for allotd only: every request must carry allotd's signature with this node's key
/// (`AgentSignature`), fresh and never seen before. `POST /v1/attempts` (start a rank, idempotent),
/// `POST /v1/attempts/JOB/ATTEMPT/RANK/stop`, `GET /v1/attempts`, `GET /v1/attempts/JOB/ATTEMPT/RANK/log?offset=N`;
/// a batch job's steps (`POST /v1/steps/JOB/ATTEMPT/RANK`, `GET …/STEP?offset=N`, `POST …/STEP/cancel`), signed by
/// the agent of its first node with the attempt's step key instead; and `GET /healthz`, which tells nothing.
public struct AgentAPI: Sendable {
    public let supervisor: Supervisor
    let nodeKey: Data
    let nonces = Nonces()
    /// The newest leader epoch a launch came with: launches of older epochs come from a deposed leader.
    let epoch = EpochFloor()

    public init(supervisor: Supervisor, nodeKey: Data) {
        self.supervisor = supervisor
        self.nodeKey = nodeKey
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/healthz") { _, _ in JSON.text("ok\n") }
        let v1 = router.group("/v1")
        v1.post("/attempts") { request, _ in
            let body = try await self.verified(request)
            let launch = try JSON.decode(LaunchRequest.self, from: body)
            guard !launch.command.isEmpty else { throw APIError.badRequest("must not be empty", field: "command") }
            if let e = launch.epoch {
                let newest = self.epoch.newest.withLock { newest in
                    newest = max(newest, e)
                    return newest
                }
                guard e == newest else {
                    throw APIError(
                        .conflict, code: "stale_epoch", message: "launched by leader epoch \(e), but epoch \(newest) leads now", field: "epoch")
                }
            }
            do {
                return JSON.response(try await self.supervisor.launch(launch), status: .created)
            } catch SupervisorError.gpuMissing(let uuid) {
                throw APIError(.conflict, code: "gpu_missing", message: SupervisorError.gpuMissing(uuid).description, field: "gpuUUIDs")
            } catch SupervisorError.refused(let why) {
                throw APIError(.unprocessableContent, code: "launch_refused", message: why)
            } catch let error as SupervisorError {
                throw APIError.conflict(error.description)
            }
        }
        v1.get("/attempts") { request, _ in
            _ = try await self.verified(request)
            return JSON.response(await self.supervisor.all())
        }
        v1.post("/attempts/:job/:attempt/:rank/stop") { request, context in
            let body = try await self.verified(request)
            let key = try Self.key(context)
            let stop = try JSON.decode(StopRequest.self, from: body)
            do {
                return JSON.response(
                    try await self.supervisor.stop(key, gracePeriodSeconds: max(0, stop.gracePeriodSeconds), warnFirst: stop.warnFirst ?? false))
            } catch {
                throw APIError.notFound("\(error)")
            }
        }
        v1.get("/attempts/:job/:attempt/:rank/log") { request, context in
            _ = try await self.verified(request)
            let key = try Self.key(context)
            let offset = request.uri.queryParameters.get("offset", as: Int.self) ?? 0
            let path = await self.supervisor.logPath(for: key)
            guard let handle = FileHandle(forReadingAtPath: path) else { throw APIError.notFound("no log for rank \(key) on this node") }
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(max(0, offset)))
            let data = try handle.read(upToCount: 8 << 20) ?? Data()
            return JSON.text(String(decoding: data, as: UTF8.self))
        }
        // A batch job's steps, from the agent of its first node: signed with the attempt's step key, which only
        // the agents of that attempt hold.
        v1.post("/steps/:job/:attempt/:rank") { request, context in
            let key = try Self.key(context)
            let body = try await self.verified(request, key: try await self.stepKey(key))
            let tasks = try JSON.decode(StepTasks.self, from: body)
            guard !tasks.argv.isEmpty, !tasks.tasks.isEmpty else {
                throw APIError.badRequest("a step runs a command in at least one task", field: "argv")
            }
            do {
                try await self.supervisor.runStep(key, tasks)
                return JSON.response(try await self.supervisor.stepProgress(key, step: tasks.step, offset: 0), status: .created)
            } catch {
                throw APIError.conflict("\(error)")
            }
        }
        v1.get("/steps/:job/:attempt/:rank/:step") { request, context in
            let key = try Self.key(context)
            _ = try await self.verified(request, key: try await self.stepKey(key))
            guard let step = context.parameters.get("step", as: Int.self) else { throw APIError.badRequest("the step must be a number") }
            let offset = request.uri.queryParameters.get("offset", as: Int.self) ?? 0
            do {
                return JSON.response(try await self.supervisor.stepProgress(key, step: step, offset: offset))
            } catch {
                throw APIError.notFound("no step \(step) of rank \(key) on this node")
            }
        }
        v1.post("/steps/:job/:attempt/:rank/:step/cancel") { request, context in
            let key = try Self.key(context)
            _ = try await self.verified(request, key: try await self.stepKey(key))
            guard let step = context.parameters.get("step", as: Int.self) else { throw APIError.badRequest("the step must be a number") }
            await self.supervisor.cancelStep(key, step: step)
            do {
                return JSON.response(try await self.supervisor.stepProgress(key, step: step, offset: 0))
            } catch {
                throw APIError.notFound("no step \(step) of rank \(key) on this node")
            }
        }
        return router
    }

    /// The step key of a rank here, or 401: a rank that is no batch job's has none, and nobody may send it steps.
    private func stepKey(_ key: RankKey) async throws -> Data {
        guard let k = await self.supervisor.stepKey(for: key) else {
            throw APIError(.unauthorized, code: "unauthorized", message: "rank \(key) takes no steps here")
        }
        return k
    }

    /// The request's body, once its signature is checked; 401 naming what is wrong otherwise.
    private func verified(_ request: Request, key: Data? = nil) async throws -> Data {
        // A request with no signature, or an old one, is refused before its body is read.
        guard let header = request.headers[AgentAPI.signatureField], header.hasPrefix("v1 t="),
            let t = header.dropFirst(5).prefix(while: \.isNumber).description.nonEmptyInt,
            abs(Date().timeIntervalSince1970 - Double(t)) <= AgentSignature.maxSkew
        else { throw APIError(.unauthorized, code: "unauthorized", message: "no fresh \(AgentSignature.header): only allotd may call this agent") }
        let body = Data(buffer: try await request.body.collect(upTo: 4 << 20))
        let path = request.uri.path + (request.uri.query.map { "?\($0)" } ?? "")
        if let why = AgentSignature.problem(
            header: request.headers[AgentAPI.signatureField], method: request.method.rawValue, path: path, body: body,
            key: key ?? self.nodeKey, seen: self.nonces.seen)
        {
            throw APIError(.unauthorized, code: "unauthorized", message: why)
        }
        return body
    }

    static let signatureField = HTTPField.Name(AgentSignature.header)!

    private static func key(_ context: BasicRequestContext) throws -> RankKey {
        guard let job = context.parameters.get("job", as: Int64.self), let attempt = context.parameters.get("attempt", as: Int.self),
            let rank = context.parameters.get("rank", as: Int.self)
        else { throw APIError.badRequest("job, attempt and rank must be numbers") }
        return RankKey(jobID: job, attempt: attempt, rank: rank)
    }
}

extension String {
    fileprivate var nonEmptyInt: Int? { self.isEmpty ? nil : Int(self) }
}

/// The nonces of the signatures accepted lately (for twice the allowed clock skew): a request seen once is
/// refused the second time.
/// The newest leader epoch seen (in a class: a Mutex cannot live in a copyable struct).
final class EpochFloor: Sendable {
    let newest = Mutex<Int64>(0)
}

final class Nonces: Sendable {
    private let seenAt = Mutex<[String: Date]>([:])

    func seen(_ nonce: String) -> Bool {
        let now = Date()
        return self.seenAt.withLock { seen in
            if seen.count > 10_000 || Int.random(in: 0..<100) == 0 {
                seen = seen.filter { now.timeIntervalSince($0.value) < 2 * AgentSignature.maxSkew }
            }
            if seen[nonce] != nil { return true }
            seen[nonce] = now
            return false
        }
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
