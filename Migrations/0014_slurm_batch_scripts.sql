-- Slurm's defaults and options for batch scripts (issue 15).

-- The pool a job that names none goes to (Slurm's default partition); NULL: the organisation's only pool.
ALTER TABLE policy_defaults ADD COLUMN default_pool text;

-- `--signal=[B:]SIG@SECONDS` in Slurm's form, `--time-min`, and what a batch script's ranks need of Slurm's
-- options (submit directory, tasks, output files), as the JSON of `SlurmOptions`.
ALTER TABLE jobs
    ADD COLUMN warn_signal text CHECK (length(warn_signal) <= 32),
    ADD COLUMN time_min_s bigint CHECK (time_min_s > 0),
    ADD COLUMN slurm jsonb;

-- A batch job's srun steps, as the agent of its first node reports them (AttemptsTable is their one writer).
CREATE TABLE job_steps (
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    step integer NOT NULL CHECK (step >= 0),
    command text NOT NULL CHECK (length(command) <= 200),
    nodes integer NOT NULL CHECK (nodes >= 1),
    tasks integer NOT NULL CHECK (tasks >= 1),
    state text NOT NULL CHECK (state IN ('running', 'exited')),
    exit_code integer,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    PRIMARY KEY (job_id, attempt, step),
    FOREIGN KEY (job_id, attempt) REFERENCES attempts (job_id, number) ON DELETE CASCADE
);

-- Job arrays (each task a job; array_job_id is the first task's id, as Slurm's ArrayJobID), dependencies in
-- Slurm's form until they are met (then NULL), and holds (by a user, or an operator, whose hold only an
-- operator releases).
ALTER TABLE jobs
    ADD COLUMN array_job_id bigint REFERENCES jobs (id) ON DELETE CASCADE,
    ADD COLUMN array_task_id integer CHECK (array_task_id >= 0),
    ADD COLUMN array_limit integer CHECK (array_limit >= 1),
    ADD COLUMN dependency text CHECK (length(dependency) <= 20000),
    ADD COLUMN held_by text,
    ADD COLUMN hold_kind text CHECK (hold_kind IN ('user', 'admin')),
    ADD CONSTRAINT job_array_task_has_array CHECK ((array_job_id IS NULL) = (array_task_id IS NULL)),
    ADD CONSTRAINT job_hold_has_kind CHECK ((held_by IS NULL) = (hold_kind IS NULL));
CREATE INDEX jobs_by_array ON jobs (array_job_id) WHERE array_job_id IS NOT NULL;

-- `--begin`: it may not start before then.
ALTER TABLE jobs ADD COLUMN begin_at timestamptz;
