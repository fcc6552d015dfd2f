public import AllotCore
import Crypto
public import Foundation
import Logging
import PostgresNIO

/// The one writer of `audit`: appends happen inside the transaction that makes the change, at its end, so a change
/// and its record commit together or not at all. Each record carries two links to the one before: a SHA-256 chain
/// (`hash`, checkable by anyone) and an HMAC chain (`mac`) keyed outside the database, which only allotd's key
/// can extend — so a rewritten, forged or truncated log is told apart from a true one.
struct AuditLog {
    let tx: Transaction

    /// Records `entry` as part of the transaction: it joins the chain when the transaction commits (`flush`), or
    /// never, with whatever else the transaction (or the savepoint it was made after) undoes.
    func append(_ entry: AuditEntry) async throws { self.tx.pendingAudit.append(entry) }

    func append(_ entries: [AuditEntry]) async throws { self.tx.pendingAudit += entries }

    /// Appends the transaction's records to the chain, in order: the chain's lock and head are taken once for
    /// them all, then each record links to the one before. `Database.transaction` calls it just before COMMIT,
    /// so the chain's lock is the last lock every transaction takes — none waits for it while holding rows that
    /// the lock's holder needs next (the scheduler's commit and a heartbeat deadlocked that way) — and it is held
    /// only from here to the commit.
    func flush() async throws {
        let entries = self.tx.pendingAudit
        guard !entries.isEmpty else { return }
        self.tx.pendingAudit = []
        let jsons = try entries.map { $0.detail.isEmpty ? "" : String(decoding: try JSONEncoder().encode($0.detail), as: UTF8.self) }
        // One writer at a time extends the chain; the time and the details are taken as PostgreSQL will store them.
        try await self.tx.query("SELECT pg_advisory_xact_lock(7321001)")
        guard
            let (head, headMac, at, details) = try await self.tx.query(
                """
                WITH t AS (SELECT clock_timestamp() AS ts)
                SELECT coalesce((SELECT hash FROM audit ORDER BY id DESC LIMIT 1), repeat('0', 64)),
                       (SELECT mac FROM audit ORDER BY id DESC LIMIT 1),
                       to_char(t.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
                       ARRAY(SELECT coalesce((nullif(d, '')::jsonb)::text, '') FROM unnest(\(jsons)::text[]) WITH ORDINALITY u(d, n) ORDER BY n)
                FROM t
                """
            ).decode((String, String?, String, [String]).self).first(), details.count == entries.count
        else { throw StoreError.conflict("the audit log cannot be read") }
        // The MACs chain in allotd (the key never reaches the database), the SHA-256 links in one INSERT (a recursive
        // query links each record to the one before), so a batch of records costs one round trip.
        var macs: [String] = []
        var previousMac = headMac
        for (i, entry) in entries.enumerated() {
            let mac = AuditChain.mac(
                key: self.tx.auditKey, previous: previousMac, at: at, actor: entry.actor.auditName, action: entry.action, target: entry.target,
                outcome: entry.outcome, detail: details[i])
            macs.append(mac)
            previousMac = mac
        }
        let (actors, actions, targets, outcomes) = (
            entries.map { $0.actor.auditName }, entries.map(\.action), entries.map(\.target), entries.map(\.outcome)
        )
        let stored = try await self.tx.query(
            """
            WITH RECURSIVE input AS (
                SELECT u.n, u.actor, u.action, u.target, u.outcome, nullif(u.detail, '')::jsonb AS detail, u.mac
                FROM unnest(\(actors)::text[], \(actions)::text[], \(targets)::text[], \(outcomes)::text[], \(jsons)::text[], \(macs)::text[])
                     WITH ORDINALITY AS u(actor, action, target, outcome, detail, mac, n)
            ), a AS (SELECT (\(at)::timestamp AT TIME ZONE 'UTC') AS at),
            chain AS (
                SELECT i.n, \(head)::text AS prev_hash, audit_hash(\(head), a.at, i.actor, i.action, i.target, i.outcome, i.detail) AS hash
                FROM input i, a WHERE i.n = 1
                UNION ALL
                SELECT i.n, c.hash, audit_hash(c.hash, a.at, i.actor, i.action, i.target, i.outcome, i.detail)
                FROM chain c JOIN input i ON i.n = c.n + 1, a
            )
            INSERT INTO audit (at, actor, action, target, outcome, detail, prev_hash, hash, mac)
            SELECT a.at, i.actor, i.action, i.target, i.outcome, i.detail, c.prev_hash, c.hash, i.mac
            FROM chain c JOIN input i USING (n), a ORDER BY c.n
            RETURNING id
            """
        ).rows.count
        guard stored == entries.count else { throw StoreError.conflict("the audit records were not stored") }
    }
}

extension Transaction {
    var audit: AuditLog { AuditLog(tx: self) }
}

/// The HMAC chain and its checkpoints.
public enum AuditChain {
    static let zero = String(repeating: "0", count: 64)

    static func mac(
        key: Data, previous: String?, at: String, actor: String, action: String, target: String, outcome: String, detail: String
    )
        -> String
    {
        let message = [previous ?? Self.zero, at, actor, action, target, outcome, detail].joined(separator: "\u{1f}")
        return Data(HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: SymmetricKey(data: key))).map { String(format: "%02x", $0) }
            .joined()
    }

    /// A checkpoint line: the chain's head as it was at `at`, signed with the audit key. Written by allotd to a file
    /// outside the database (and its log), so that records deleted from the head or a truncated table show.
    public struct Checkpoint: Sendable, Hashable {
        public var id: Int64
        public var mac: String
        public var at: Date
        public var signature: String

        public var line: String { "checkpoint id=\(self.id) mac=\(self.mac) at=\(Int64(self.at.timeIntervalSince1970)) sig=\(self.signature)" }

        static func sign(key: Data, id: Int64, mac: String, at: Date) -> String {
            AuditChain.mac(
                key: key, previous: nil, at: "\(Int64(at.timeIntervalSince1970))", actor: "checkpoint", action: "\(id)", target: mac, outcome: "",
                detail: "")
        }

        public init(key: Data, id: Int64, mac: String, at: Date) {
            self.id = id
            self.mac = mac
            self.at = Date(timeIntervalSince1970: at.timeIntervalSince1970.rounded(.down))  // the line keeps whole seconds
            self.signature = Self.sign(key: key, id: id, mac: mac, at: at)
        }

        /// Parses a line; nil for anything else (blank lines, comments).
        public init?(line: String) {
            var f: [String: String] = [:]
            let words = line.split(separator: " ")
            guard words.first == "checkpoint" else { return nil }
            for w in words.dropFirst() {
                let kv = w.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { f[String(kv[0])] = String(kv[1]) }
            }
            guard let id = f["id"].flatMap({ Int64($0) }), let mac = f["mac"], let at = f["at"].flatMap({ Double($0) }), let sig = f["sig"] else {
                return nil
            }
            self.id = id
            self.mac = mac
            self.at = Date(timeIntervalSince1970: at)
            self.signature = sig
        }

        func isSigned(by key: Data) -> Bool { Self.sign(key: key, id: self.id, mac: self.mac, at: self.at) == self.signature }
    }
}

/// The append-only, hash-chained audit log as operators and auditors read and verify it.
public struct AuditStore: Sendable {
    public let database: Database
    public init(database: Database) { self.database = database }

    public func list(since: Date?, limit: Int = 1000) async throws -> [AuditRecord] {
        try await self.database.read { tx in
            let rows = try await tx.query(
                """
                SELECT id, at, actor, action, target, outcome, detail::text FROM audit
                WHERE at >= coalesce(\(since), '-infinity'::timestamptz) ORDER BY id LIMIT \(limit)
                """)
            var out: [AuditRecord] = []
            for try await (id, at, actor, action, target, outcome, detail) in rows.decode(
                (Int64, Date, String, String, String, String, String?).self)
            {
                out.append(AuditRecord(id: id, at: at, actor: actor, action: action, target: target, outcome: outcome, detail: detail))
            }
            return out
        }
    }

    /// Appends records outside any other change (reads of job output and of statements are audited too).
    public func record(_ entries: [AuditEntry]) async throws {
        try await self.database.transaction { tx in try await tx.audit.append(entries) }
    }

    /// The head of the chain now, as a signed checkpoint; nil for an empty log.
    public func checkpoint(at now: Date = Date()) async throws -> AuditChain.Checkpoint? {
        try await self.database.read { tx in
            guard
                let (id, mac) = try await tx.query("SELECT id, mac FROM audit WHERE mac IS NOT NULL ORDER BY id DESC LIMIT 1")
                    .decode((Int64, String).self).first()
            else { return nil }
            return AuditChain.Checkpoint(key: self.database.auditKey, id: id, mac: mac, at: now)
        }
    }

    /// Recomputes both chains and checks the log against `checkpoints`: returns the records checked, the first
    /// record that does not verify, and what is wrong, in words. Records written before the log was keyed (no
    /// MAC, all of them before the first that has one) are checked by their SHA-256 chain only.
    public func verify(checkpoints: [AuditChain.Checkpoint] = []) async throws -> AuditVerification {
        // One snapshot, read a page at a time: the log grows without bound and every result is read whole.
        try await self.database.transaction(.repeatableRead) { tx in
            var problems: [String] = []
            var firstBroken: Int64?
            func broken(_ id: Int64, _ why: String) {
                if firstBroken == nil || id < firstBroken! { firstBroken = id }
                if problems.count < 20 { problems.append(why) }
            }
            let checkpointed = Set(checkpoints.map(\.id))
            var checked = 0
            var previousHash = AuditChain.zero
            var previousMac: String?
            var keyed = false
            var macs: [Int64: String] = [:]
            var lastID: Int64 = 0
            while true {
                let rows = try await tx.query(
                    """
                    SELECT id, mac, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), actor, action, target, outcome,
                           coalesce(detail::text, ''), prev_hash, hash, audit_hash(prev_hash, at, actor, action, target, outcome, detail)
                    FROM audit WHERE id > \(lastID) ORDER BY id LIMIT 10000
                    """)
                if rows.rows.isEmpty { break }
                for try await row in rows {
                    let (id, mac, at, actor, action, target, outcome, detail, prevHash, hash, recomputed) = try row.decode(
                        (Int64, String?, String, String, String, String, String, String, String, String, String).self)
                    checked += 1
                    lastID = id
                    if prevHash != previousHash || hash != recomputed {
                        broken(id, "record \(id): its SHA-256 link does not follow the record before it")
                    }
                    if let mac {
                        keyed = true
                        let expected = AuditChain.mac(
                            key: self.database.auditKey, previous: previousMac, at: at, actor: actor, action: action, target: target,
                            outcome: outcome,
                            detail: detail)
                        if mac != expected { broken(id, "record \(id): its MAC does not verify (written or rewritten without allotd's key)") }
                        if checkpointed.contains(id) { macs[id] = mac }
                    } else if keyed {
                        broken(id, "record \(id): it has no MAC (not written by allotd)")
                    }
                    previousHash = hash
                    previousMac = mac
                }
            }
            for c in checkpoints.sorted(by: { $0.id < $1.id }) {
                guard c.isSigned(by: self.database.auditKey) else {
                    problems.append("checkpoint at record \(c.id): its signature does not verify")
                    continue
                }
                if c.id > lastID {
                    broken(lastID + 1, "checkpoint at record \(c.id): the log ends at \(lastID): records were deleted or the table truncated")
                } else if let mac = macs[c.id], mac != c.mac {
                    broken(c.id, "checkpoint at record \(c.id): the record there is not the one checkpointed")
                } else if macs[c.id] == nil {
                    broken(c.id, "checkpoint at record \(c.id): that record is missing")
                }
            }
            return AuditVerification(
                checked: checked, intact: problems.isEmpty, firstBrokenID: firstBroken, problems: problems, checkpointsChecked: checkpoints.count)
        }
    }
}
