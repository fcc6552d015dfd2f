import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import PostgresNIO
import Testing

/// "No GPU held by two live attempts" is a fact of the schema, whatever the code above it does.
@Suite("The database refuses double-booked GPUs", databaseTests)
struct ClaimConstraintTests {
    /// Inserts a live attempt of a new job holding `gpus` on `node` at `milli` each, straight in SQL (no scheduler).
    static func claim(_ f: StoreFixture, node: String, gpus: [Int], milli: Int = 1000) async throws {
        let id = try await f.submit(JobSpec(name: "raw", org: "lab", pool: "h200", gpusPerNode: 1, command: "true"))
        try await f.db.sql { c in
            try await c.query("UPDATE jobs SET state = 'placed', attempts = 1 WHERE id = \(id)", logger: f.db.logger)
            try await c.query("INSERT INTO attempts (job_id, number) VALUES (\(id), 1)", logger: f.db.logger)
            try await c.query(
                "INSERT INTO attempt_ranks (job_id, attempt, rank, node, gpu_indices, milli_per_gpu) VALUES (\(id), 1, 0, \(node), \(gpus)::integer[], \(milli))",
                logger: f.db.logger)
            try await c.query(
                "INSERT INTO gpu_claims (job_id, attempt, rank, node, gpu_index, milli) SELECT \(id), 1, 0, \(node), g, \(milli) FROM unnest(\(gpus)::integer[]) g",
                logger: f.db.logger)
        }
    }

    static func sqlState(_ body: () async throws -> Void) async -> String? {
        do {
            try await body()
            return nil
        } catch let error as PSQLError {
            return error.sqlState
        } catch {
            return "\(error)"
        }
    }

    @Test("a second live claim on the same whole GPU is refused by a unique index")
    func wholeGPU() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            try await Self.claim(f, node: "n1", gpus: [0, 1])
            let state = await Self.sqlState { try await Self.claim(f, node: "n1", gpus: [1, 2]) }
            #expect(state == "23505")  // unique_violation
            // The failed transaction left nothing: GPU 2 is still free, GPU 1 held once.
            #expect(try await f.scalar("SELECT claimed_milli FROM gpus WHERE node = 'n1' AND idx = 2", as: Int.self) == 0)
            #expect(try await f.scalar("SELECT claimed_milli FROM gpus WHERE node = 'n1' AND idx = 1", as: Int.self) == 1000)
            // The same index on another node is another GPU.
            try await Self.claim(f, node: "n2", gpus: [1])
        }
    }

    @Test("shares of one GPU may not add up to more than 1000 milli, nor share a GPU held whole")
    func fractions() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            try await Self.claim(f, node: "n1", gpus: [3], milli: 600)
            try await Self.claim(f, node: "n1", gpus: [3], milli: 400)
            #expect(await Self.sqlState { try await Self.claim(f, node: "n1", gpus: [3], milli: 1) } == "23514")  // check_violation
            try await Self.claim(f, node: "n1", gpus: [4], milli: 1000)
            #expect(await Self.sqlState { try await Self.claim(f, node: "n1", gpus: [4], milli: 500) } == "23514")
        }
    }

    @Test("a released claim frees the GPU for the next attempt")
    func release() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            try await Self.claim(f, node: "n1", gpus: [5])
            try await db.query("UPDATE gpu_claims SET released_at = now() WHERE node = 'n1' AND gpu_index = 5")
            #expect(try await f.scalar("SELECT claimed_milli FROM gpus WHERE node = 'n1' AND idx = 5", as: Int.self) == 0)
            try await Self.claim(f, node: "n1", gpus: [5])
        }
    }

    @Test("the scheduler's commit skips a placement the database refuses, and keeps the others")
    func commitSkipsConflicts() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db, nodes: ["n1"])
            let a = try await f.submit(JobSpec(name: "a", org: "lab", pool: "h200", gpusPerNode: 4, command: "true"))
            let b = try await f.submit(JobSpec(name: "b", org: "lab", pool: "h200", gpusPerNode: 4, command: "true"))
            let store = SchedulerStore(database: db)
            // A stale plan: both jobs on GPUs 0-3 (as if two schedulers raced).
            var plan = Plan()
            plan.placements = [a, b].map {
                Placement(jobID: $0, ranks: [RankAssignment(rank: 0, node: "n1", gpuIndices: [0, 1, 2, 3], milliPerGPU: 1000)])
            }
            #expect(try await store.commit(plan).placed == [a])
            #expect(try await f.job(b).state == .queued)
            #expect(try await f.job(b).attempts.isEmpty)
        }
    }
}
