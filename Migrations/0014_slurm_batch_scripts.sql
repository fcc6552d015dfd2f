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
