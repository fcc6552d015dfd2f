public import AllotCore
import Crypto
import Foundation
import Synchronization

/// The principals of bearer tokens looked up lately, so that a request does not cost a database round trip each
/// (10,000 nodes heartbeating every 5 s is 2,000 lookups a second). Only while this allotd listens for the
/// database's notice of a change to tokens (a trigger on revocation, expiry, role, org or deletion: Migrations/0022)
/// is anything kept; every notice, and every loss of the listening connection, forgets everything. A token revoked
/// through an allotd stops there before the revocation is answered, and on every other allotd as its notice arrives
/// (sent on commit; milliseconds on a healthy connection). An entry is kept a
/// minute at most — the token's `last_used_at` is still written about once a minute — and never past the token's
/// expiry. Secrets are kept only as their SHA-256 (as the tokens table keeps them).
public final class TokenCache: Sendable {
    struct Entry {
        let id: Int64
        let principal: Principal
        /// The token's expiry on this process's monotonic clock, measured from the database's time (no skew).
        let expiresBy: ContinuousClock.Instant?
        let keptAt: ContinuousClock.Instant
    }

    struct State {
        var entries: [Data: Entry] = [:]
        /// Moves on at every forgetting: a lookup that began before one may not keep its answer.
        var generation: UInt64 = 0
        var listening = false
    }

    let lifetime: Duration
    let capacity: Int
    private let state = Mutex(State())

    public init(lifetime: Duration = .seconds(60), capacity: Int = 200_000) {
        self.lifetime = lifetime
        self.capacity = capacity
    }

    static func key(_ secret: String) -> Data { Data(SHA256.hash(data: Data(secret.utf8))) }

    /// The principal kept for this secret, if any is still good now.
    public func principal(for secret: String) -> (id: Int64, principal: Principal)? {
        let key = Self.key(secret)
        let now = ContinuousClock.now
        return self.state.withLock { state in
            guard state.listening, let e = state.entries[key] else { return nil }
            guard now - e.keptAt < self.lifetime, e.expiresBy.map({ now < $0 }) ?? true else {
                state.entries[key] = nil
                return nil
            }
            return (e.id, e.principal)
        }
    }

    /// Where a lookup starts: the generation it may keep its answer under; nil when nothing may be kept.
    public func begin() -> UInt64? { self.state.withLock { $0.listening ? $0.generation : nil } }

    /// Keeps a lookup's answer, unless something was forgotten since it began; `expiresIn` is the time the database
    /// gave its token still to live.
    public func keep(_ secret: String, id: Int64, principal: Principal, expiresIn: Duration?, since generation: UInt64) {
        let key = Self.key(secret)
        let now = ContinuousClock.now
        self.state.withLock { state in
            guard state.listening, state.generation == generation else { return }
            if state.entries.count >= self.capacity { state.entries.removeAll() }
            state.entries[key] = Entry(id: id, principal: principal, expiresBy: expiresIn.map { now + $0 }, keptAt: now)
        }
    }

    /// Forgets everything (a token changed somewhere).
    public func forget() {
        self.state.withLock { state in
            state.entries.removeAll()
            state.generation &+= 1
        }
    }

    /// Whether the notices of changes are being received: only then is anything kept. Either way, everything kept
    /// so far is forgotten (notices may have been missed while not listening).
    public func listening(_ on: Bool) {
        self.state.withLock { state in
            state.entries.removeAll()
            state.generation &+= 1
            state.listening = on
        }
    }

    /// The channel of the notices (Migrations/0022_token_changes.sql).
    public static let channel = "allot_tokens"
}
