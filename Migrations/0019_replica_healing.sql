-- Inference services heal one replica at a time (issue 16): a replica that ends, or whose node is lost, starts
-- again (elsewhere if need be) while the others run on.
ALTER TABLE attempt_ranks
    -- When each restart within the window was, and which launch of the replica runs now (0: the first).
    ADD COLUMN restarted_at timestamptz[] NOT NULL DEFAULT '{}',
    ADD COLUMN launch integer NOT NULL DEFAULT 0 CONSTRAINT rank_launch_not_negative CHECK (launch >= 0),
    -- Its node was lost: it waits for the scheduler to give it another.
    ADD COLUMN needs_node boolean NOT NULL DEFAULT false,
    -- A restarted replica is dispatched again from this moment (its back-off), leased like an attempt's launch.
    ADD COLUMN next_dispatch_at timestamptz,
    -- Every launch it ever had, for `allot jobs show`.
    ADD COLUMN restarts integer NOT NULL DEFAULT 0 CONSTRAINT rank_restarts_not_negative CHECK (restarts >= 0);
CREATE INDEX attempt_ranks_to_relaunch ON attempt_ranks (next_dispatch_at) WHERE dispatched_at IS NULL AND launch > 0;

-- A replica moved to another node is charged anew there: one open charge per launch of a rank.
ALTER TABLE usage ADD COLUMN launch integer NOT NULL DEFAULT 0;
DROP INDEX usage_one_charge_per_rank;
CREATE UNIQUE INDEX usage_one_charge_per_rank ON usage (job_id, attempt, rank, launch) WHERE NOT credited;

-- Policies/ defaults: at most this many restarts of one replica in the window, then it is left down.
ALTER TABLE policy_defaults
    ADD COLUMN replica_restart_limit integer NOT NULL DEFAULT 5 CHECK (replica_restart_limit >= 0),
    ADD COLUMN replica_restart_window_s integer NOT NULL DEFAULT 600 CHECK (replica_restart_window_s > 0);

-- The launch is part of what a charge row says: never changed either.
CREATE OR REPLACE FUNCTION usage_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'usage row % is on a statement: it is never deleted (add an adjustment)', OLD.id
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'usage_is_append_only';
    END IF;
    IF TG_TABLE_NAME = 'usage_adjustments' THEN
        RAISE EXCEPTION 'adjustment % is on a statement: it never changes (add another)', OLD.id
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'usage_is_append_only';
    END IF;
    IF OLD.ended_at IS NOT NULL
       OR (OLD.job_id, OLD.attempt, OLD.rank, OLD.node, OLD.org, OLD.project, OLD.owner, OLD.pool, OLD.allocation_id, OLD.gpu_milli,
           OLD.started_at, OLD.credited, OLD.cause, OLD.fault_at, OLD.launch)
          IS DISTINCT FROM
          (NEW.job_id, NEW.attempt, NEW.rank, NEW.node, NEW.org, NEW.project, NEW.owner, NEW.pool, NEW.allocation_id, NEW.gpu_milli,
           NEW.started_at, NEW.credited, NEW.cause, NEW.fault_at, NEW.launch) THEN
        RAISE EXCEPTION 'usage row % is on a statement: only an open row''s end and checkpoint are written (add an adjustment)', OLD.id
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'usage_is_append_only';
    END IF;
    RETURN NEW;
END $$;
