-- The nodes whose scheduling state changed, and in which transaction: the scheduler keeps the cluster it read and
-- re-reads only the nodes changed since (each cycle read every GPU of the cluster: at 1,000 nodes most of its
-- time). A change is logged by the transaction that makes it, so the two become visible together; a NULL node
-- stands for every node (a pool's silent hold, an organisation's accounts). The scheduler deletes what it has
-- read; the database still refuses a GPU booked twice, so a cache that fell behind costs a retry, never a GPU.
CREATE TABLE cluster_changes (
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    node text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cluster_changes_by_xid ON cluster_changes (xid);

-- gpus and attempt_ranks name their node in `node`.
CREATE FUNCTION cluster_changed_on_node() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO cluster_changes (node) VALUES (OLD.node);
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO cluster_changes (node) VALUES (NEW.node);
    ELSIF TG_OP = 'UPDATE' AND NEW.node IS DISTINCT FROM OLD.node THEN
        INSERT INTO cluster_changes (node) VALUES (NEW.node);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION cluster_changed_node() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO cluster_changes (node) VALUES (OLD.name);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.name IS DISTINCT FROM OLD.name) THEN
        INSERT INTO cluster_changes (node) VALUES (NEW.name);
    END IF;
    RETURN NULL;
END $$;

-- An attempt that starts or stops being live changes the CPU and memory its ranks hold on their nodes.
CREATE FUNCTION cluster_changed_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cluster_changes (node)
        SELECT DISTINCT node FROM attempt_ranks WHERE job_id = NEW.job_id AND attempt = NEW.number;
    RETURN NULL;
END $$;

CREATE FUNCTION cluster_changed_everywhere() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cluster_changes (node) VALUES (NULL);
    RETURN NULL;
END $$;

-- Only what the scheduler's snapshot reads (ClusterReader.nodeSnapshots): a heartbeat that changes nothing but
-- last_heartbeat logs nothing.
CREATE TRIGGER nodes_change_cluster AFTER INSERT OR DELETE ON nodes FOR EACH ROW EXECUTE FUNCTION cluster_changed_node();
CREATE TRIGGER nodes_change_cluster_update AFTER UPDATE ON nodes FOR EACH ROW
    WHEN ((OLD.name, OLD.pool, OLD.block, OLD.state, OLD.cpu_milli, OLD.memory_mib, OLD.gpu_sharing, OLD.last_heartbeat IS NULL)
          IS DISTINCT FROM (NEW.name, NEW.pool, NEW.block, NEW.state, NEW.cpu_milli, NEW.memory_mib, NEW.gpu_sharing, NEW.last_heartbeat IS NULL))
    EXECUTE FUNCTION cluster_changed_node();
CREATE TRIGGER gpus_change_cluster AFTER INSERT OR DELETE ON gpus FOR EACH ROW EXECUTE FUNCTION cluster_changed_on_node();
CREATE TRIGGER gpus_change_cluster_update AFTER UPDATE ON gpus FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION cluster_changed_on_node();
CREATE TRIGGER attempt_ranks_change_cluster AFTER INSERT OR DELETE ON attempt_ranks FOR EACH ROW EXECUTE FUNCTION cluster_changed_on_node();
CREATE TRIGGER attempt_ranks_change_cluster_update AFTER UPDATE ON attempt_ranks FOR EACH ROW
    WHEN ((OLD.node, rank_is_active(OLD.state), OLD.cpu_milli, OLD.memory_mib)
          IS DISTINCT FROM (NEW.node, rank_is_active(NEW.state), NEW.cpu_milli, NEW.memory_mib))
    EXECUTE FUNCTION cluster_changed_on_node();
CREATE TRIGGER attempts_change_cluster AFTER UPDATE OF state ON attempts FOR EACH ROW
    WHEN (attempt_is_live(OLD.state) IS DISTINCT FROM attempt_is_live(NEW.state))
    EXECUTE FUNCTION cluster_changed_attempt();
CREATE TRIGGER pool_holds_change_cluster AFTER INSERT OR UPDATE OR DELETE ON pool_holds
    FOR EACH STATEMENT EXECUTE FUNCTION cluster_changed_everywhere();
CREATE TRIGGER organizations_change_cluster AFTER UPDATE OR DELETE ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION cluster_changed_everywhere();
-- TRUNCATE fires no row trigger: it changes every node.
CREATE TRIGGER nodes_truncate_change_cluster AFTER TRUNCATE ON nodes FOR EACH STATEMENT EXECUTE FUNCTION cluster_changed_everywhere();
CREATE TRIGGER gpus_truncate_change_cluster AFTER TRUNCATE ON gpus FOR EACH STATEMENT EXECUTE FUNCTION cluster_changed_everywhere();
CREATE TRIGGER attempt_ranks_truncate_change_cluster AFTER TRUNCATE ON attempt_ranks
    FOR EACH STATEMENT EXECUTE FUNCTION cluster_changed_everywhere();
CREATE TRIGGER attempts_truncate_change_cluster AFTER TRUNCATE ON attempts FOR EACH STATEMENT EXECUTE FUNCTION cluster_changed_everywhere();

-- No JIT compilation in this database: allotd's statements are short, and the scheduler's read of every GPU crossed
-- the JIT cost threshold and compiled for about 40 ms each time. A database setting rather than a connection
-- parameter, so that connection poolers pass it through; only the database's owner may set it.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'jit left as it is: only the owner of database % may turn it off', current_database();
END $$;
