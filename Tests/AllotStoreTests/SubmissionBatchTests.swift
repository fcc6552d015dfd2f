import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import Foundation
import PostgresNIO
import Testing

@Suite("Submissions in batches: one commit, each checked on its own", databaseTests)
struct SubmissionBatchTests {
    static func neverFits(_ spec: JobSpec, _ shapes: [NodeShape]) -> WaitReason? {
        Placer.neverFitsReason(
            spec.pendingShape, shapes: shapes)
    }

    @Test("a refused submission — by the checks or by the database's constraints — changes nothing and leaves the rest of its batch")
    func refusalsStayTheirOwn() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let member = Principal(name: "alice", role: .member, org: "lab")
            let batch = [
                Submission(JobSpec(name: "first", pool: "h200", gpusPerNode: 1, command: "true"), by: member),
                Submission(JobSpec(name: "nowhere", pool: "no-such-pool", gpusPerNode: 1, command: "true"), by: member),
                // maxAttempts 0 passes the Swift checks and breaks job_max_attempts_in_range: the database refuses it
                // mid-transaction, and only its savepoint is rolled back.
                Submission(JobSpec(name: "zero", pool: "h200", gpusPerNode: 1, command: "true", maxAttempts: 0), by: member),
                Submission(JobSpec(name: "restricted", pool: "secure", gpusPerNode: 1, command: "true"), by: member),
                Submission(JobSpec(name: "never", pool: "h200", gpusPerNode: 9, command: "true"), by: member),
                Submission(JobSpec(name: "held", pool: "h200", gpusPerNode: 2, command: "true", hold: true), by: member),
                Submission(JobSpec(name: "other-org", org: "defense", pool: "h200", command: "true"), by: member),
            ]
            let results = try await JobStore(database: db).submit(batch, neverFits: Self.neverFits)
            #expect(results.count == batch.count)
            let stored = results.compactMap { try? $0.get() }
            #expect(stored.map(\.name) == ["first", "held"])
            #expect(stored.allSatisfy { $0.org == "lab" && $0.owner == "alice" && $0.state == .queued })
            #expect(stored[1].heldBy == "alice")
            func failure(_ i: Int) -> StoreError? {
                if case .failure(let e) = results[i] { return e as? StoreError }
                return nil
            }
            #expect(failure(1).map { "\($0)".contains("no-such-pool") } == true, "\(String(describing: failure(1)))")
            #expect(failure(2) != nil, "the constraint's refusal is a StoreError (a 4xx), not a passing database error")
            #expect(failure(3).map { "\($0)".contains("restricted") } == true)
            #expect(failure(4) != nil)
            #expect(failure(6).map { "\($0)".contains("cannot submit for defense") } == true)

            // Only the two stored jobs exist, each with its audit record, and the chain verifies.
            #expect(try await f.scalar("SELECT count(*)::int FROM jobs", as: Int.self) == 2)
            let audited = try await AuditStore(database: db).list(since: nil).filter { $0.action == "job.submit" }
            #expect(audited.map(\.target) == stored.map { "job/\($0.id)" })
            let verified = try await AuditStore(database: db).verify()
            #expect(verified.intact, "\(verified.problems)")
        }
    }

    @Test("concurrent batches of random submissions: every accepted one stored once, every refused one absent, the chain intact (seeded)")
    func concurrentBatches() async throws {
        let seed = UInt64.random(in: 1...UInt64(UInt32.max))
        try await TestDatabase.with { db in
            _ = try await StoreFixture(db)
            var rng = SeededRandom(seed: seed)
            let member = Principal(name: "bob", role: .member, org: "lab")
            // 8 batches of up to 32, half of them in flight together, each with a share of refusals.
            let batches: [[Submission]] = (0..<8).map { b in
                (0..<Int.random(in: 1...32, using: &rng)).map { i in
                    let bad = Int.random(in: 0..<4, using: &rng) == 0
                    return Submission(
                        JobSpec(name: "b\(b)-\(i)", pool: bad ? "missing" : "h200", gpusPerNode: Int.random(in: 0...8, using: &rng), command: "true"),
                        by: member)
                }
            }
            let store = JobStore(database: db)
            let outcomes = try await withThrowingTaskGroup(of: [Result<JobView, any Error>].self) { group in
                for batch in batches { group.addTask { try await store.submit(batch, neverFits: Self.neverFits) } }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            let accepted = outcomes.compactMap { try? $0.get() }
            let expected = batches.joined().filter { $0.spec.pool == "h200" }.count
            #expect(accepted.count == expected, "seed \(seed)")
            #expect(Set(accepted.map(\.id)).count == accepted.count, "seed \(seed): an id acknowledged twice")
            let rows = try await db.query("SELECT name FROM jobs ORDER BY id").decode(String.self).reduce(into: [String]()) { $0.append($1) }
            #expect(Set(rows) == Set(accepted.map(\.name)) && rows.count == accepted.count, "seed \(seed)")
            let verified = try await AuditStore(database: db).verify()
            #expect(verified.intact && verified.checked >= expected, "seed \(seed): \(verified.problems)")
        }
    }
}
