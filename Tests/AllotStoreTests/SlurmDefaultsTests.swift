import AllotCore
import AllotDatabaseTesting
import AllotStore
import AllotTesting
import PostgresNIO
import Testing

/// Slurm's defaults at submission: the default partition and the user's default account.
@Suite("Submission: the default pool and project", databaseTests)
struct SlurmDefaultsTests {
    @Test("no pool: the only pool the organisation holds an allocation in; else defaults.pool; else an error naming the choices")
    func defaultPool() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            let jobs = JobStore(database: db)
            // lab holds an allocation in h200 only: that is its default.
            let id = try await f.submit(JobSpec(name: "a job", org: "lab", pool: nil, gpusPerNode: 1, command: "true"))
            #expect(try await jobs.show(id, scope: .all).pool == "h200")
            #expect(try await jobs.show(id, scope: .all).name == "a job")

            // Two pools and no default: refused, naming both.
            var policy = StoreFixture.policy
            policy.pools.append(Pool(name: "h100", gpuModel: "H100"))
            policy.organizations[0].allocations.append(Allocation(pool: "h100", guaranteedGPUs: 0, limitGPUs: 8, gpuHours: 100))
            _ = try await PolicyStore(database: db).apply(policy, by: f.op, dryRun: false)
            do {
                _ = try await f.submit(JobSpec(name: "b", org: "lab", pool: nil, gpusPerNode: 1, command: "true"))
                Issue.record("accepted without a pool")
            } catch let StoreError.invalid(field, message) {
                #expect(field == "pool" && message.contains("h100, h200"), "\(message)")
            }

            // The policy's default pool decides.
            policy.defaults.pool = "h200"
            _ = try await PolicyStore(database: db).apply(policy, by: f.op, dryRun: false)
            let c = try await f.submit(JobSpec(name: "c", org: "lab", pool: nil, gpusPerNode: 1, command: "true"))
            #expect(try await jobs.show(c, scope: .all).pool == "h200")
        }
    }

    @Test("-A org without a project: the first of the grant's projects that lists the user; a site's GPU type names the pool's model")
    func defaultProject() async throws {
        try await TestDatabase.with { db in
            let f = try await StoreFixture(db)
            var policy = StoreFixture.policy
            policy.organizations[0].allocations[0].projects = [
                ProjectLimit(name: "pretrain", limitGPUs: 8), ProjectLimit(name: "eval", limitGPUs: 8, users: ["alice": UserLimit(limitGPUs: 4)]),
            ]
            _ = try await PolicyStore(database: db).apply(policy, by: f.op, dryRun: false)
            let jobs = JobStore(database: db)
            let alice = Principal(name: "alice", role: .member, org: "lab")
            let a = try await f.submit(JobSpec(name: "a", pool: nil, gpusPerNode: 1, command: "true"), as: alice)
            #expect(try await jobs.show(a, scope: .all).project == "eval")
            let bob = Principal(name: "bob", role: .member, org: "lab")
            let b = try await f.submit(JobSpec(name: "b", pool: "h200", gpuModel: ["nvidia_h200_141gb"], gpusPerNode: 1, command: "true"), as: bob)
            #expect(try await jobs.show(b, scope: .all).project == nil, "bob is in no project's users: the organisation's own")
            let models = try await f.db.sql { c in
                try await c.query("SELECT gpu_models FROM jobs WHERE id = \(b)", logger: f.db.logger).decode([String].self).first { _ in true }
            }
            #expect(models == ["H200"])
        }
    }
}
