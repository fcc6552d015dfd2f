-- GPUs by UUID (issue 14). gpus.idx is the node's slot for one physical GPU: given once to a UUID, never to
-- another. Claims, health events and XIDs name the slot, so they keep pointing at the same GPU when nvidia-smi's
-- numbering shifts (a GPU that falls off the bus renumbers every GPU after it). The agent's current index travels
-- in its reports only; launches carry the UUIDs and the agent finds each one's device where it is now.
-- Before this, a GPU that renumbered left its UUID on a stale slot as well as on its new one. The slot that keeps
-- a UUID is the present one, else the lowest; the others forget it (they keep their history and are given anew).
UPDATE gpus g SET uuid = '' WHERE uuid <> '' AND EXISTS (
    SELECT 1 FROM gpus o WHERE o.node = g.node AND o.uuid = g.uuid AND o.idx <> g.idx
        AND (o.present AND NOT g.present OR o.present = g.present AND o.idx < g.idx));
CREATE UNIQUE INDEX gpus_uuid_per_node ON gpus (node, uuid) WHERE uuid <> '';

CREATE FUNCTION gpus_uuid_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.uuid <> '' AND NEW.uuid IS DISTINCT FROM OLD.uuid THEN
        RAISE EXCEPTION 'GPU slot % of node % belongs to %, not to %', OLD.idx, OLD.node, OLD.uuid, NEW.uuid
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER gpus_uuid_fixed BEFORE UPDATE OF uuid ON gpus FOR EACH ROW EXECUTE FUNCTION gpus_uuid_fixed();

-- When a GPU the node had dropped out of its agent's list while the others stayed: it is quarantined, the work on
-- it requeued and credited; the slot keeps its history. Cleared when the GPU is listed again.
ALTER TABLE gpus ADD COLUMN missing_since timestamptz;
