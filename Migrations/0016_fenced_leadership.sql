-- Fenced leadership (issue 14). A lease alone does not keep a paused leader from writing after another allotd
-- took over; the database must refuse it. The lease carries an epoch that grows with every change of holder,
-- and every scheduling transaction first calls allot_fence(holder, epoch): it holds the lease row shared until
-- the transaction ends (so a takeover waits for it to commit or roll back) and refuses a stale epoch or a
-- lapsed lease, which rolls the whole transaction back.

-- Logged now: a crash empties an unlogged table, and the epoch must never go back. Epochs come from a
-- sequence, so they keep growing even if the row is removed by hand.
ALTER TABLE leader SET LOGGED;
CREATE SEQUENCE leader_epochs AS bigint;
ALTER TABLE leader
    ADD COLUMN epoch bigint NOT NULL DEFAULT nextval('leader_epochs'),
    ADD COLUMN acquired_at timestamptz NOT NULL DEFAULT now();

CREATE FUNCTION allot_fence(fence_holder text, fence_epoch bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lease leader%ROWTYPE;
BEGIN
    SELECT * INTO lease FROM leader FOR SHARE;
    IF NOT FOUND OR lease.holder <> fence_holder OR lease.epoch <> fence_epoch OR lease.expires_at < clock_timestamp() THEN
        RAISE EXCEPTION 'fenced: epoch % of % no longer holds the scheduling lease (now: epoch %, %)',
            fence_epoch, left(fence_holder, 200), coalesce(lease.epoch, 0), coalesce(left(lease.holder, 200), 'nobody')
            USING ERRCODE = 'AL001';
    END IF;
    -- What this transaction writes is stamped with its epoch (attempts.epoch), so a check can prove afterwards
    -- that no epoch wrote after the next one began.
    PERFORM set_config('allot.epoch', fence_epoch::text, true);
    -- A leader stopped in the middle of a transaction would hold the lease row, and so block any takeover, for
    -- as long as it stays stopped: PostgreSQL ends such a session after 5 s idle, rolling its work back.
    PERFORM set_config('idle_in_transaction_session_timeout', '5000', true);
END $$;


-- Every term of leadership, kept: when each epoch began and who held it (written by the trigger below only).
CREATE TABLE leader_terms (
    epoch bigint PRIMARY KEY,
    holder text NOT NULL,
    began_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION leader_term_began() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.epoch <> OLD.epoch THEN
        INSERT INTO leader_terms (epoch, holder) VALUES (NEW.epoch, NEW.holder) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER leader_terms_kept AFTER INSERT OR UPDATE ON leader FOR EACH ROW EXECUTE FUNCTION leader_term_began();

-- The epoch of the leader that placed each attempt (NULL: placed unfenced, by a test or before this migration).
ALTER TABLE attempts ADD COLUMN epoch bigint DEFAULT nullif(current_setting('allot.epoch', true), '')::bigint;

-- Gang rendezvous ports (MASTER_PORT) are reservations: each attempt takes one on its rank-0 node when it is
-- placed, from that node's range — by default 29500–32767, below Linux's ephemeral ports (32768 and up) — and no
-- two live attempts on a node hold the same one.
ALTER TABLE nodes ADD COLUMN rendezvous_ports int4range NOT NULL DEFAULT int4range(29500, 32768)
    CHECK (NOT isempty(rendezvous_ports) AND lower(rendezvous_ports) >= 1024 AND upper(rendezvous_ports) <= 65536);
ALTER TABLE attempts
    ADD COLUMN rendezvous_node text,
    ADD COLUMN rendezvous_port integer CHECK (rendezvous_port BETWEEN 1024 AND 65535),
    ADD CHECK ((rendezvous_node IS NULL) = (rendezvous_port IS NULL));
CREATE UNIQUE INDEX attempts_rendezvous_live ON attempts (rendezvous_node, rendezvous_port)
    WHERE rendezvous_port IS NOT NULL AND attempt_is_live(state);
