-- 0002: whole-node jobs (Slurm's --exclusive and --mem=0), and the CPU and memory each rank actually reserves,
-- so that an exclusive rank's "everything" is recorded as the node's capacity at placement time.
ALTER TABLE jobs ADD COLUMN exclusive boolean NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN whole_node_memory boolean NOT NULL DEFAULT false;

ALTER TABLE attempt_ranks ADD COLUMN cpu_milli integer NOT NULL DEFAULT 0 CONSTRAINT rank_cpu_not_negative CHECK (cpu_milli >= 0);
ALTER TABLE attempt_ranks ADD COLUMN memory_mib bigint NOT NULL DEFAULT 0 CONSTRAINT rank_memory_not_negative CHECK (memory_mib >= 0);
-- Ranks placed before this migration reserved what their job asked.
UPDATE attempt_ranks r SET cpu_milli = j.cpu_milli_per_node, memory_mib = j.memory_mib_per_node FROM jobs j WHERE j.id = r.job_id;
