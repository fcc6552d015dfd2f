-- 0008: a waiting job's reason as data too: the code (`capacity`, `quota`, `budget`, `reserved`, `unschedulable`)
-- beside the sentence, so scripts and dashboards need not parse text.
ALTER TABLE jobs ADD COLUMN reason_code text;

-- The two state rules every query asks, written once (they mirror AttemptState.isLive and RankState.isActive;
-- a store test checks that they agree). Plain SQL functions, so the planner inlines them.
CREATE FUNCTION attempt_is_live(s attempt_state) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT s IN ('placed', 'starting', 'running')
$$;
CREATE FUNCTION rank_is_active(s rank_state) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT s IN ('pending', 'running')
$$;
