-- A lease renewal must not wait behind the scheduling transactions (issue 17). allot_fence held the lease row
-- FOR SHARE, which the renewal's UPDATE conflicts with; under load a stream of overlapping fenced transactions kept
-- the row share-locked, the renewal timed out after 2 s, and the leader lost its lease mid-run (seen: scheduling
-- and dispatch stopped for seconds, then a new term began). Now the fence holds the row FOR KEY SHARE, which only
-- a DELETE (or a key change) waits for: a renewal (an UPDATE of the same holder's expiry) passes, and a takeover,
-- which deletes the lapsed row before inserting its own (LeaderLease.acquireOrRenew), still waits for every
-- fenced transaction of the old term to end.
CREATE OR REPLACE FUNCTION allot_fence(fence_holder text, fence_epoch bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lease leader%ROWTYPE;
BEGIN
    SELECT * INTO lease FROM leader FOR KEY SHARE;
    IF NOT FOUND OR lease.holder <> fence_holder OR lease.epoch <> fence_epoch OR lease.expires_at < clock_timestamp() THEN
        RAISE EXCEPTION 'fenced: epoch % of % no longer holds the scheduling lease (now: epoch %, %)',
            fence_epoch, left(fence_holder, 200), coalesce(lease.epoch, 0), coalesce(left(lease.holder, 200), 'nobody')
            USING ERRCODE = 'AL001';
    END IF;
    PERFORM set_config('allot.epoch', fence_epoch::text, true);
    PERFORM set_config('idle_in_transaction_session_timeout', '5000', true);
END $$;
