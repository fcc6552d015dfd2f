import AllotCore
import AllotStore

/// Group commit for submissions: the POST /v1/jobs requests that arrive while a batch commits wait together and go
/// into the next one — one transaction, one extension of the audit chain, one fsync for all of them — and each
/// is answered only after that commit. The audit chain admits one writer at a time, so without batching every
/// submission would wait for the previous one's fsync; PostgreSQL's own group commit cannot help across that lock.
/// Two batches may be in flight, so one checks and inserts while the other commits.
struct SubmissionBatcher {
    /// Each submission in a batch takes a savepoint; PostgreSQL keeps 64 subtransactions per transaction in
    /// shared memory before other sessions' snapshots slow down, so a batch stays below that.
    static let batchLimit = 32
    static let inFlightLimit = 2
    private let batches: GroupCommit<Submission, JobView>

    init(jobs: JobStore) {
        let shapes = NodeShapeCache()
        self.batches = GroupCommit(batchLimit: Self.batchLimit, inFlightLimit: Self.inFlightLimit) { batch in
            try await jobs.submit(batch, shapes: shapes, neverFits: Self.neverFits)
        }
    }

    /// Stores the submission with whatever else is waiting; returns its job once committed.
    func submit(_ submission: Submission) async throws -> JobView { try await self.batches.submit(submission) }

    /// Whether the job could run on none of the pool's nodes even were they empty (asked with the pool's nodes).
    @Sendable static func neverFits(_ spec: JobSpec, _ shapes: [NodeShape]) -> WaitReason? {
        Placer.neverFitsReason(spec.pendingShape, shapes: shapes)
    }
}
