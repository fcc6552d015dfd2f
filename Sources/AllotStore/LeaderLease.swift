import Foundation
import PostgresNIO

/// Which allotd schedules: a lease in the `leader` table that its holder renews. Any allotd whose lease
/// has expired can take it over, so a crashed leader is replaced within `ttl`.
public struct LeaderLease: Sendable {
    public let database: Database
    public let holder: String
    public let ttlSeconds: Double

    public init(database: Database, holder: String, ttlSeconds: Double = 10) {
        self.database = database
        self.holder = holder
        self.ttlSeconds = ttlSeconds
    }

    /// Takes or renews the lease; true when this process holds it afterwards.
    public func acquireOrRenew() async throws -> Bool {
        let rows = try await self.database.query(
            """
            INSERT INTO leader (holder, expires_at) VALUES (\(self.holder), now() + make_interval(secs => \(self.ttlSeconds)))
            ON CONFLICT (only_row) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
            WHERE leader.holder = EXCLUDED.holder OR leader.expires_at < now()
            RETURNING holder
            """)
        return try await rows.decode(String.self).first() == self.holder
    }

    /// Gives the lease up, so another allotd can take over at once.
    public func release() async throws {
        try await self.database.query("DELETE FROM leader WHERE holder = \(self.holder)")
    }
}
