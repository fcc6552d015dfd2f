-- 0006: an inference replica on a draining node is started elsewhere before it is stopped. For that overlap a
-- job has two live attempts: its current one, and one that `replaces` it; once the replacement runs, the old
-- one is stopped and the replacement becomes the current one.
ALTER TABLE attempts ADD COLUMN replaces integer;
DROP INDEX attempts_one_live_per_job;
CREATE UNIQUE INDEX attempts_one_live_per_job ON attempts (job_id)
    WHERE state IN ('placed', 'starting', 'running') AND replaces IS NULL;
CREATE UNIQUE INDEX attempts_one_live_replacement_per_job ON attempts (job_id)
    WHERE state IN ('placed', 'starting', 'running') AND replaces IS NOT NULL;
