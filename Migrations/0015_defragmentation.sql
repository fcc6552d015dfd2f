-- Defragmentation (issue 18): work that may be moved, the policy's limits, and the plans the scheduler makes.

-- A job that checkpoints may say it may be moved: requeued elsewhere, keeping its submit time, to make room.
ALTER TABLE jobs ADD COLUMN movable boolean NOT NULL DEFAULT false;

-- How many attempts defragmentation may move per pool in an hour (0: never), and how long an attempt must have
-- run before it may be moved.
ALTER TABLE policy_defaults
    ADD COLUMN defragment_moves_per_hour integer NOT NULL DEFAULT 4 CHECK (defragment_moves_per_hour BETWEEN 0 AND 1000),
    ADD COLUMN defragment_min_runtime_s integer NOT NULL DEFAULT 600 CHECK (defragment_min_runtime_s BETWEEN 0 AND 31622400);

-- One row per plan (SchedulerStore is its one writer): the job it makes room for, the nodes set aside for it,
-- the attempts moved off them, and how it ended. At most one plan per pool is open at a time.
CREATE TABLE defragmentations (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    pool text NOT NULL,
    nodes text[] NOT NULL CHECK (cardinality(nodes) >= 1),
    -- [{"jobID": N, "attempt": N, "from": ["node", …]}], as the core's DefragmentationPlan.Move.
    moves jsonb NOT NULL,
    moved integer NOT NULL CHECK (moved >= 1),
    summary text NOT NULL CHECK (length(summary) <= 2000),
    planned_at timestamptz NOT NULL DEFAULT now(),
    deadline_at timestamptz NOT NULL,
    ended_at timestamptz,
    outcome text CHECK (outcome IN ('placed', 'expired', 'withdrawn')),
    CHECK ((ended_at IS NULL) = (outcome IS NULL))
);
CREATE UNIQUE INDEX defragmentations_open_per_pool ON defragmentations (pool) WHERE ended_at IS NULL;
CREATE INDEX defragmentations_recent ON defragmentations (pool, planned_at);
