-- Accounting an auditor accepts (issue 13): budget time for jobs without a limit, versioned grants, an
-- append-only ledger per rank with credits of their own, and corrections as adjustment rows.

-- What admission reserves for a job without a time limit: its GPUs × this.
ALTER TABLE policy_defaults ADD COLUMN budget_time_s bigint NOT NULL DEFAULT 86400 CHECK (budget_time_s > 0);

-- Grants are versioned: a policy change supersedes the version in force and adds the next, effective from
-- that moment; a version is never edited, and one that usage is charged to is never deleted.
ALTER TABLE allocations
    ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN effective_from timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN superseded_at timestamptz,
    -- Its split inside the organisation: projects with their limits, shares and users' limits (JSON, as Policies/).
    ADD COLUMN projects jsonb NOT NULL DEFAULT '[]',
    ADD CONSTRAINT allocation_superseded_after_effective CHECK (superseded_at IS NULL OR superseded_at >= effective_from);
DROP INDEX allocations_one_per_window;
CREATE UNIQUE INDEX allocations_one_current_per_window ON allocations (org, pool, coalesce(valid_from, '-infinity'::date))
    WHERE superseded_at IS NULL;
CREATE UNIQUE INDEX allocations_one_version_number ON allocations (org, pool, coalesce(valid_from, '-infinity'::date), version);

CREATE FUNCTION allocations_are_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT 1 FROM usage WHERE allocation_id = OLD.id) OR EXISTS (SELECT 1 FROM usage_adjustments WHERE allocation_id = OLD.id) THEN
            RAISE EXCEPTION 'allocation % (% × %, version %) is history: usage is charged to it', OLD.id, OLD.org, OLD.pool, OLD.version
                USING ERRCODE = 'restrict_violation', CONSTRAINT = 'allocation_is_history';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.superseded_at IS NOT NULL
       OR (OLD.org, OLD.pool, OLD.guaranteed_gpus, OLD.limit_gpus, OLD.gpu_hours, OLD.valid_from, OLD.valid_until, OLD.granted_by,
           OLD.granted_at, OLD.version, OLD.effective_from, OLD.projects)
          IS DISTINCT FROM
          (NEW.org, NEW.pool, NEW.guaranteed_gpus, NEW.limit_gpus, NEW.gpu_hours, NEW.valid_from, NEW.valid_until, NEW.granted_by,
           NEW.granted_at, NEW.version, NEW.effective_from, NEW.projects) THEN
        RAISE EXCEPTION 'allocation % (% × %, version %) cannot change: a policy change adds a new version', OLD.id, OLD.org, OLD.pool, OLD.version
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'allocation_is_history';
    END IF;
    RETURN NEW;
END $$;

-- The ledger: one charge row per rank of an attempt (its node and GPU thousandths), and for time the
-- infrastructure lost a credit row of its own (cause and the fault's moment). Rows written before this
-- migration keep their attempt-level form (no rank, no node).
ALTER TABLE usage DROP CONSTRAINT usage_pkey;
ALTER TABLE usage DROP CONSTRAINT usage_allocation_id_fkey;
ALTER TABLE usage
    ADD COLUMN id bigserial PRIMARY KEY,
    ADD COLUMN rank integer,
    ADD COLUMN node text,
    ADD COLUMN project text,
    ADD COLUMN owner text,
    ADD COLUMN cause text,
    ADD COLUMN fault_at timestamptz,
    -- Running rows are checkpointed every minute: the ledger knows the rank ran at least until then.
    ADD COLUMN checkpointed_at timestamptz,
    ADD CONSTRAINT usage_allocation_fkey FOREIGN KEY (allocation_id) REFERENCES allocations (id),
    ADD CONSTRAINT usage_credit_is_closed CHECK (NOT credited OR ended_at IS NOT NULL),
    ADD CONSTRAINT usage_interval_ordered CHECK (ended_at IS NULL OR ended_at >= started_at);
UPDATE usage u SET project = j.project, owner = j.owner, checkpointed_at = coalesce(u.ended_at, now()),
       cause = CASE WHEN u.credited THEN 'credited before per-rank accounting' END
FROM jobs j WHERE j.id = u.job_id;
-- Checked once the rows written before have their cause.
ALTER TABLE usage ADD CONSTRAINT usage_credit_has_cause CHECK (credited = (cause IS NOT NULL));
CREATE UNIQUE INDEX usage_one_charge_per_rank ON usage (job_id, attempt, rank) WHERE NOT credited;
CREATE INDEX usage_by_job ON usage (job_id, attempt);
CREATE INDEX usage_open ON usage (job_id) WHERE ended_at IS NULL;

-- Corrections: never an edit, always a row with who, why and when it applies (GPU-seconds, signed: negative
-- gives time back).
CREATE TABLE usage_adjustments (
    id bigserial PRIMARY KEY,
    org text NOT NULL REFERENCES organizations (name),
    pool text NOT NULL REFERENCES pools (name),
    project text,
    owner text,
    allocation_id bigint REFERENCES allocations (id),
    gpu_seconds bigint NOT NULL CONSTRAINT adjustment_not_zero CHECK (gpu_seconds <> 0),
    applies_at timestamptz NOT NULL,
    actor text NOT NULL,
    reason text NOT NULL CONSTRAINT adjustment_has_reason CHECK (length(reason) BETWEEN 1 AND 500),
    made_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_adjustments_by_org ON usage_adjustments (org, pool, applies_at);

CREATE TRIGGER allocations_history BEFORE UPDATE OR DELETE ON allocations FOR EACH ROW EXECUTE FUNCTION allocations_are_history();

-- A closed row never changes; an open one only closes or is checkpointed; nothing is deleted.
CREATE FUNCTION usage_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
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
           OLD.started_at, OLD.credited, OLD.cause, OLD.fault_at)
          IS DISTINCT FROM
          (NEW.job_id, NEW.attempt, NEW.rank, NEW.node, NEW.org, NEW.project, NEW.owner, NEW.pool, NEW.allocation_id, NEW.gpu_milli,
           NEW.started_at, NEW.credited, NEW.cause, NEW.fault_at) THEN
        RAISE EXCEPTION 'usage row % is on a statement: only an open row''s end and checkpoint are written (add an adjustment)', OLD.id
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'usage_is_append_only';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER usage_append_only BEFORE UPDATE OR DELETE ON usage FOR EACH ROW EXECUTE FUNCTION usage_is_append_only();
CREATE TRIGGER usage_adjustments_append_only BEFORE UPDATE OR DELETE ON usage_adjustments FOR EACH ROW EXECUTE FUNCTION usage_is_append_only();
-- TRUNCATE skips row triggers: refuse it too.
CREATE FUNCTION ledger_refuses_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is the ledger: it is never truncated', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER usage_no_truncate BEFORE TRUNCATE ON usage FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuses_truncate();
CREATE TRIGGER usage_adjustments_no_truncate BEFORE TRUNCATE ON usage_adjustments FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuses_truncate();

-- From which moment a stopping attempt's time is the infrastructure's fault (credited); NULL: none.
ALTER TABLE attempts ADD COLUMN stop_credit_from timestamptz;
