-- 0001_init: the model of SPEC §3. Forward-only; fix mistakes in a later file.
-- Enums are the states the code knows. Adding a value later is possible; removing one is not
-- (PostgreSQL cannot drop an enum value), so a retired state stays declared.

CREATE TYPE node_state AS ENUM ('ready', 'cordoned', 'draining', 'drained', 'maintenance', 'lost');
CREATE TYPE gpu_health AS ENUM ('healthy', 'suspect', 'quarantined');
CREATE TYPE job_kind AS ENUM ('training', 'inference');
CREATE TYPE job_state AS ENUM ('queued', 'placed', 'starting', 'running', 'succeeded', 'failed', 'cancelled');
CREATE TYPE attempt_state AS ENUM (
    'placed', 'starting', 'running', 'succeeded', 'failed', 'cancelled', 'lost', 'preempted', 'drained', 'dispatch_failed');
-- pending: not yet started on the agent; ended: exited, or known gone.
CREATE TYPE rank_state AS ENUM ('pending', 'running', 'exited', 'vanished');
CREATE TYPE token_role AS ENUM ('member', 'org-admin', 'operator', 'auditor', 'agent');

-- Names end up in URLs, file names and environment variables: keep them plain.
CREATE DOMAIN allot_name AS text CHECK (VALUE ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$');

CREATE TABLE pools (
    name allot_name PRIMARY KEY,
    gpu_model text,
    -- Organisations allowed to run here; empty means all.
    restricted_to text[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
    name allot_name PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The state's grant: one row per organisation × pool × validity window (NULL window = every calendar month).
CREATE TABLE allocations (
    id bigserial PRIMARY KEY,
    org text NOT NULL REFERENCES organizations (name) ON DELETE CASCADE,
    pool text NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
    guaranteed_gpus integer NOT NULL CONSTRAINT allocation_guarantee_not_negative CHECK (guaranteed_gpus >= 0),
    limit_gpus integer NOT NULL,
    gpu_hours bigint NOT NULL CONSTRAINT allocation_hours_not_negative CHECK (gpu_hours >= 0),
    valid_from date,
    valid_until date,
    granted_by text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT allocation_limit_covers_guarantee CHECK (limit_gpus >= guaranteed_gpus),
    CONSTRAINT allocation_window_complete CHECK ((valid_from IS NULL) = (valid_until IS NULL)),
    CONSTRAINT allocation_window_ordered CHECK (valid_from IS NULL OR valid_from <= valid_until)
);
CREATE UNIQUE INDEX allocations_one_per_window ON allocations (org, pool, coalesce(valid_from, '-infinity'::date));

CREATE TABLE priority_classes (
    name allot_name PRIMARY KEY,
    value integer NOT NULL,
    preemptible boolean NOT NULL DEFAULT false,
    preempts boolean NOT NULL DEFAULT false,
    max_time_s bigint CONSTRAINT priority_class_max_time_positive CHECK (max_time_s > 0)
);

-- Cluster-wide defaults from Policies/: exactly one row.
CREATE TABLE policy_defaults (
    only_row boolean PRIMARY KEY DEFAULT true CONSTRAINT policy_defaults_single_row CHECK (only_row),
    priority_class text,
    grace_period_s integer NOT NULL DEFAULT 60 CHECK (grace_period_s >= 0),
    reclaim_deadline_s integer NOT NULL DEFAULT 300 CHECK (reclaim_deadline_s > 0),
    heartbeat_timeout_s integer NOT NULL DEFAULT 30 CHECK (heartbeat_timeout_s > 0),
    updated_by text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO policy_defaults DEFAULT VALUES;

CREATE TABLE nodes (
    name allot_name PRIMARY KEY,
    pool text NOT NULL REFERENCES pools (name),
    block text,
    state node_state NOT NULL DEFAULT 'ready',
    state_reason text,
    -- Set by the agent when it registers; a node whose agent never reported takes no work.
    agent_url text,
    -- The bearer token the scheduler presents to this node's agent (the agent chose it).
    callback_token text,
    cpu_milli integer NOT NULL DEFAULT 0 CHECK (cpu_milli >= 0),
    memory_mib bigint NOT NULL DEFAULT 0 CHECK (memory_mib >= 0),
    last_heartbeat timestamptz,
    added_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gpus (
    node text NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
    idx integer NOT NULL CHECK (idx >= 0),
    uuid text NOT NULL,
    model text NOT NULL,
    memory_mib integer NOT NULL DEFAULT 0,
    nvlink_domain integer,
    mig_mode text,
    health gpu_health NOT NULL DEFAULT 'healthy',
    health_detail text,
    -- False once the agent stops reporting it; kept so claims and history still point at it.
    present boolean NOT NULL DEFAULT true,
    -- Sum of live claims' milli, kept by the gpu_claims trigger. The CHECK is what makes over-booking impossible.
    claimed_milli integer NOT NULL DEFAULT 0,
    PRIMARY KEY (node, idx),
    CONSTRAINT gpu_claimed_within_capacity CHECK (claimed_milli BETWEEN 0 AND 1000)
);

-- Tokens are stored as SHA-256 hex; the secret itself is shown once, when it is made.
CREATE TABLE tokens (
    id bigserial PRIMARY KEY,
    hash text NOT NULL UNIQUE,
    name text NOT NULL,
    role token_role NOT NULL,
    org text REFERENCES organizations (name) ON DELETE CASCADE,
    node text REFERENCES nodes (name) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT agent_token_bound_to_node CHECK ((role = 'agent') = (node IS NOT NULL)),
    CONSTRAINT member_token_bound_to_org CHECK (role NOT IN ('member', 'org-admin') OR org IS NOT NULL)
);

CREATE TABLE jobs (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    org text NOT NULL REFERENCES organizations (name),
    project text,
    owner text NOT NULL,
    kind job_kind NOT NULL,
    pool text NOT NULL REFERENCES pools (name),
    gpu_models text[] NOT NULL DEFAULT '{}',
    nodes integer NOT NULL CONSTRAINT job_nodes_in_range CHECK (nodes BETWEEN 1 AND 4096),
    gpus_per_node integer NOT NULL CONSTRAINT job_gpus_in_range CHECK (gpus_per_node BETWEEN 0 AND 64),
    gpu_milli integer CONSTRAINT job_fraction_in_range CHECK (gpu_milli BETWEEN 1 AND 999),
    cpu_milli_per_node integer NOT NULL DEFAULT 0 CHECK (cpu_milli_per_node >= 0),
    memory_mib_per_node bigint NOT NULL DEFAULT 0 CHECK (memory_mib_per_node >= 0),
    priority_class text NOT NULL,
    priority integer NOT NULL,
    time_limit_s bigint CHECK (time_limit_s > 0),
    command text NOT NULL,
    env jsonb NOT NULL DEFAULT '{}',
    working_dir text,
    max_attempts integer NOT NULL CONSTRAINT job_max_attempts_in_range CHECK (max_attempts BETWEEN 1 AND 100),
    state job_state NOT NULL DEFAULT 'queued',
    -- Why it waits, or how it ended.
    reason text,
    exit_code integer,
    attempts integer NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    submitted_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    CONSTRAINT job_fraction_is_one_gpu CHECK (gpu_milli IS NULL OR gpus_per_node = 0),
    CONSTRAINT job_ended_iff_terminal CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (ended_at IS NOT NULL))
);
-- Mirrors the queue order the scheduler reads (priority, then submit time).
CREATE INDEX jobs_queue ON jobs (priority DESC, submitted_at, id) WHERE state = 'queued';
CREATE INDEX jobs_by_org_state ON jobs (org, state);

CREATE TABLE attempts (
    job_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number integer NOT NULL CHECK (number >= 1),
    state attempt_state NOT NULL DEFAULT 'placed',
    reason text,
    exit_code integer,
    placed_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    ended_at timestamptz,
    dispatch_tries integer NOT NULL DEFAULT 0,
    next_dispatch_at timestamptz NOT NULL DEFAULT now(),
    -- Set when the attempt is being stopped (cancel, a failed rank, a lost node); it ends as stop_state
    -- once every rank has ended.
    stop_requested_at timestamptz,
    stop_state attempt_state,
    last_stop_sent_at timestamptz,
    PRIMARY KEY (job_id, number),
    CONSTRAINT attempt_ended_iff_not_live CHECK ((state IN ('placed', 'starting', 'running')) = (ended_at IS NULL))
);
-- A job has at most one live attempt.
CREATE UNIQUE INDEX attempts_one_live_per_job ON attempts (job_id) WHERE state IN ('placed', 'starting', 'running');

CREATE TABLE attempt_ranks (
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    rank integer NOT NULL CHECK (rank >= 0),
    node text NOT NULL REFERENCES nodes (name),
    gpu_indices integer[] NOT NULL,
    milli_per_gpu integer NOT NULL CHECK (milli_per_gpu BETWEEN 1 AND 1000),
    state rank_state NOT NULL DEFAULT 'pending',
    dispatched_at timestamptz,
    exit_code integer,
    signal integer,
    started_at timestamptz,
    ended_at timestamptz,
    PRIMARY KEY (job_id, attempt, rank),
    FOREIGN KEY (job_id, attempt) REFERENCES attempts (job_id, number) ON DELETE CASCADE
);
CREATE INDEX attempt_ranks_by_node ON attempt_ranks (node) WHERE state IN ('pending', 'running');

-- One row per GPU an attempt's rank holds. Live while released_at IS NULL.
CREATE TABLE gpu_claims (
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    rank integer NOT NULL,
    node text NOT NULL,
    gpu_index integer NOT NULL,
    milli integer NOT NULL CONSTRAINT gpu_claim_milli_in_range CHECK (milli BETWEEN 1 AND 1000),
    claimed_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    PRIMARY KEY (job_id, attempt, node, gpu_index),
    FOREIGN KEY (job_id, attempt, rank) REFERENCES attempt_ranks (job_id, attempt, rank) ON DELETE CASCADE,
    FOREIGN KEY (node, gpu_index) REFERENCES gpus (node, idx)
);
-- No GPU held whole by two live attempts: a database fact, whatever the code does.
CREATE UNIQUE INDEX gpu_claims_whole_gpu_exclusive ON gpu_claims (node, gpu_index) WHERE released_at IS NULL AND milli = 1000;
CREATE INDEX gpu_claims_live ON gpu_claims (node, gpu_index) WHERE released_at IS NULL;

-- Shares: this trigger keeps gpus.claimed_milli equal to the sum of live claims, and the CHECK on gpus
-- refuses any sum over 1000. The row update also serialises concurrent claims on one GPU.
CREATE FUNCTION gpu_claims_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.released_at IS NULL THEN
            UPDATE gpus SET claimed_milli = claimed_milli + NEW.milli WHERE node = NEW.node AND idx = NEW.gpu_index;
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.milli <> OLD.milli OR NEW.node <> OLD.node OR NEW.gpu_index <> OLD.gpu_index THEN
            RAISE EXCEPTION 'a GPU claim cannot be moved or resized' USING ERRCODE = 'check_violation';
        END IF;
        IF OLD.released_at IS NULL AND NEW.released_at IS NOT NULL THEN
            UPDATE gpus SET claimed_milli = claimed_milli - OLD.milli WHERE node = OLD.node AND idx = OLD.gpu_index;
        ELSIF OLD.released_at IS NOT NULL AND NEW.released_at IS NULL THEN
            UPDATE gpus SET claimed_milli = claimed_milli + NEW.milli WHERE node = NEW.node AND idx = NEW.gpu_index;
        END IF;
        RETURN NEW;
    ELSE
        IF OLD.released_at IS NULL THEN
            UPDATE gpus SET claimed_milli = claimed_milli - OLD.milli WHERE node = OLD.node AND idx = OLD.gpu_index;
        END IF;
        RETURN OLD;
    END IF;
END $$;
CREATE TRIGGER gpu_claims_account AFTER INSERT OR UPDATE OR DELETE ON gpu_claims
    FOR EACH ROW EXECUTE FUNCTION gpu_claims_account();

-- The usage ledger: one row per attempt, charged to organisation × pool (× allocation, once one applies).
-- gpu_milli is the attempt's total GPU thousandths; GPU-seconds = gpu_milli / 1000 × (ended_at - started_at).
CREATE TABLE usage (
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    org text NOT NULL,
    pool text NOT NULL,
    allocation_id bigint REFERENCES allocations (id) ON DELETE SET NULL,
    gpu_milli integer NOT NULL CHECK (gpu_milli >= 0),
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    -- Time lost to the infrastructure (node lost, drain deadline, dispatch failure) is credited back.
    credited boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, attempt),
    FOREIGN KEY (job_id, attempt) REFERENCES attempts (job_id, number) ON DELETE CASCADE
);
CREATE INDEX usage_by_org_pool ON usage (org, pool, started_at);

-- Append-only, hash-chained record of every state change (SPEC §3).
CREATE TABLE audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    outcome text NOT NULL,
    detail jsonb,
    prev_hash text NOT NULL,
    hash text NOT NULL
);

CREATE FUNCTION audit_hash(prev text, at timestamptz, actor text, action text, target text, outcome text, detail jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(concat_ws(E'\x1f', prev, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        actor, action, target, outcome, coalesce(detail::text, '')), 'UTF8')), 'hex')
$$;

-- Appends one record, chained to the previous one. The advisory lock orders concurrent writers.
CREATE FUNCTION audit_append(p_actor text, p_action text, p_target text, p_outcome text, p_detail jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    prev text;
    ts timestamptz := clock_timestamp();
    new_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7321001);
    SELECT hash INTO prev FROM audit ORDER BY id DESC LIMIT 1;
    prev := coalesce(prev, repeat('0', 64));
    INSERT INTO audit (at, actor, action, target, outcome, detail, prev_hash, hash)
    VALUES (ts, p_actor, p_action, p_target, p_outcome, p_detail, prev,
            audit_hash(prev, ts, p_actor, p_action, p_target, p_outcome, p_detail))
    RETURNING id INTO new_id;
    RETURN new_id;
END $$;

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();

-- Which allotd schedules: a lease renewed by its holder. UNLOGGED: a crash simply lets the lease expire.
CREATE UNLOGGED TABLE leader (
    only_row boolean PRIMARY KEY DEFAULT true CONSTRAINT leader_single_row CHECK (only_row),
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
);
