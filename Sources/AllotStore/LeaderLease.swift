public import Foundation
import PostgresNIO

/// The proof that this allotd schedules: the lease's holder and epoch. A database fenced by it (`Database.fenced`)
/// starts each transaction with `allot_fence`, which PostgreSQL refuses once another allotd has taken over or
/// the lease has lapsed — so a leader that was paused and wakes up commits nothing.
public struct Fence: Sendable, Hashable, CustomStringConvertible {
    public var holder: String
    public var epoch: Int64
    public init(holder: String, epoch: Int64) {
        self.holder = holder
        self.epoch = epoch
    }
    public var description: String { "epoch \(self.epoch) (\(self.holder))" }
}

/// Which allotd schedules: one row in `leader`, timed by the database's clock, that its holder renews. Any
/// allotd may take it over once it has expired; each change of holder takes a new, higher epoch.
public struct LeaderLease: Sendable {
    public let database: Database
    public let holder: String
    public let ttlSeconds: Double

    public init(database: Database, holder: String, ttlSeconds: Double = 10) {
        self.database = database
        self.holder = holder
        self.ttlSeconds = ttlSeconds
    }

    /// Takes or renews the lease: the fence this process holds afterwards, or nil when another allotd holds it.
    /// A renewal keeps the epoch and never waits for fenced transactions (they hold the row FOR KEY SHARE, which an
    /// update of the expiry does not conflict with). A takeover (or a lease of ours that had lapsed) takes the next
    /// epoch, and first deletes the lapsed row: a delete waits until every fenced transaction of the old term has
    /// ended, so none commits after the new term began. Waits at most two seconds for that.
    public func acquireOrRenew() async throws -> Fence? {
        try await self.database.transaction { tx in
            try await tx.query("SET LOCAL lock_timeout = '2s'")
            try await tx.query("DELETE FROM leader WHERE expires_at < now()")
            let rows = try await tx.query(
                """
                INSERT INTO leader (holder, expires_at, epoch, acquired_at)
                SELECT \(self.holder), now() + make_interval(secs => \(self.ttlSeconds)),
                    -- A new epoch only for a takeover: a renewal, or a standby's try while the lease is held, takes none.
                    CASE WHEN EXISTS (SELECT 1 FROM leader WHERE holder = \(self.holder) AND expires_at >= now())
                        THEN (SELECT epoch FROM leader) ELSE nextval('leader_epochs') END,
                    now()
                WHERE NOT EXISTS (SELECT 1 FROM leader WHERE holder <> \(self.holder) AND expires_at >= now())
                -- Only a renewal updates the row (its expiry): a change of term goes through the DELETE above, which
                -- waits for the old term's fenced transactions, and an update would not (they hold FOR KEY SHARE).
                ON CONFLICT (only_row) DO UPDATE SET expires_at = EXCLUDED.expires_at
                WHERE leader.holder = EXCLUDED.holder AND leader.expires_at >= now()
                RETURNING holder, epoch
                """)
            for try await (holder, epoch) in rows.decode((String, Int64).self) where holder == self.holder {
                return Fence(holder: holder, epoch: epoch)
            }
            return nil
        }
    }

    /// Gives the lease up, so another allotd can take over at once (the row stays: epochs only grow).
    public func release() async throws {
        try await self.database.query("UPDATE leader SET expires_at = now() - interval '1 second' WHERE holder = \(self.holder)")
    }

    /// Who holds the lease now, and until when (database time); nil when nobody ever has.
    public func current() async throws -> (holder: String, epoch: Int64, expiresAt: Date)? {
        let rows = try await self.database.query("SELECT holder, epoch, expires_at FROM leader")
        for try await row in rows.decode((String, Int64, Date).self) { return (row.0, row.1, row.2) }
        return nil
    }
}
