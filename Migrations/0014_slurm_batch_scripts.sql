-- Slurm's defaults and options for batch scripts (issue 15).

-- The pool a job that names none goes to (Slurm's default partition); NULL: the organisation's only pool.
ALTER TABLE policy_defaults ADD COLUMN default_pool text;

-- `--signal=[B:]SIG@SECONDS` in Slurm's form, `--time-min`, and what a batch script's ranks need of Slurm's
-- options (submit directory, tasks, output files), as the JSON of `SlurmOptions`.
ALTER TABLE jobs
    ADD COLUMN warn_signal text CHECK (length(warn_signal) <= 32),
    ADD COLUMN time_min_s bigint CHECK (time_min_s > 0),
    ADD COLUMN slurm jsonb;
