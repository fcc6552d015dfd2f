/// Requests that arrive while a batch of them is being written wait together and are written as the next batch:
/// group commit, as PostgreSQL does for fsyncs, for writes that share one transaction. Each caller gets its own
/// answer only once its batch's `write` returned; a `write` that throws fails its whole batch.
actor GroupCommit<Input: Sendable, Output: Sendable> {
    /// One answer per input, in order.
    typealias Write = @Sendable ([Input]) async throws -> [Result<Output, any Error>]
    let batchLimit: Int
    let inFlightLimit: Int
    let write: Write
    private var pending: [(input: Input, answer: CheckedContinuation<Output, any Error>)] = []
    private var inFlight = 0

    init(batchLimit: Int = .max, inFlightLimit: Int = 1, write: @escaping Write) {
        self.batchLimit = batchLimit
        self.inFlightLimit = inFlightLimit
        self.write = write
    }

    /// Writes `input` with whatever else is waiting; returns its answer.
    func submit(_ input: Input) async throws -> Output {
        try await withCheckedThrowingContinuation { answer in
            self.pending.append((input, answer))
            if self.inFlight < self.inFlightLimit {
                self.inFlight += 1
                Task { await self.drain() }
            }
        }
    }

    private func drain() async {
        while !self.pending.isEmpty {
            let batch = Array(self.pending.prefix(self.batchLimit))
            self.pending.removeFirst(batch.count)
            do {
                let results = try await self.write(batch.map(\.input))
                // A write owes one answer per input; one it failed to give fails its caller rather than leaving it waiting.
                for (i, waiting) in batch.enumerated() {
                    waiting.answer.resume(with: i < results.count ? results[i] : .failure(CancellationError()))
                }
            } catch {
                for waiting in batch { waiting.answer.resume(throwing: error) }
            }
        }
        self.inFlight -= 1
    }
}
