-- GPUs as they really are (issue 16): full product names; MIG devices as slots of their own; what holding a slot
-- charges; whether a node enforces GPU shares; jobs that ask a MIG profile or GPU memory; pools that keep
-- organisations off each other's GPUs.
ALTER TABLE gpus
    ADD COLUMN product_name text,
    -- A MIG device: its profile, the slot of the GPU it is cut from, its GPU and compute instance ids.
    ADD COLUMN mig_profile text,
    ADD COLUMN mig_parent integer,
    ADD COLUMN mig_gpu_instance integer,
    ADD COLUMN mig_compute_instance integer,
    -- The GPU's MIG mode changes at its next reset: it takes no new work until then.
    ADD COLUMN mig_pending boolean NOT NULL DEFAULT false,
    -- Thousandths of a GPU that holding this slot charges: 1000 for a GPU, a MIG device's memory slices of its GPU's
    -- eight × 125 (a 1g.18gb of an H200: 125).
    ADD COLUMN charge_milli integer NOT NULL DEFAULT 1000 CONSTRAINT gpu_charge_in_range CHECK (charge_milli BETWEEN 1 AND 1000),
    -- A MIG device is held whole by one claim of exactly its charge: a second claim on it breaks this.
    ADD CONSTRAINT mig_device_held_whole CHECK (mig_profile IS NULL OR claimed_milli IN (0, charge_milli));

-- Never a MIG-enabled GPU as a whole one, nor a share of it: work takes its MIG devices.
CREATE FUNCTION gpu_claims_not_on_mig_gpu() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM gpus WHERE node = NEW.node AND idx = NEW.gpu_index AND mig_mode = 'Enabled' AND mig_profile IS NULL) THEN
        RAISE EXCEPTION 'GPU % of node % has MIG enabled: work takes its MIG devices, not the GPU', NEW.gpu_index, NEW.node
            USING ERRCODE = 'check_violation', CONSTRAINT = 'gpu_claim_not_on_mig_gpu';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER gpu_claims_not_on_mig_gpu BEFORE INSERT ON gpu_claims FOR EACH ROW EXECUTE FUNCTION gpu_claims_not_on_mig_gpu();

-- 'mps': the agent runs shared GPUs under NVIDIA MPS, each rank held to its share; 'soft': shares are bookkeeping.
ALTER TABLE nodes ADD COLUMN gpu_sharing text CONSTRAINT node_gpu_sharing_known CHECK (gpu_sharing IN ('mps', 'soft'));

-- Shares of one GPU only among the jobs of one organisation (on by default in restricted pools: Policies/).
ALTER TABLE pools ADD COLUMN isolate_shared_gpus boolean NOT NULL DEFAULT false;
UPDATE pools SET isolate_shared_gpus = cardinality(restricted_to) > 0;

ALTER TABLE jobs
    ADD COLUMN mig_profile text,
    ADD COLUMN gpu_memory_mib integer CONSTRAINT job_gpu_memory_positive CHECK (gpu_memory_mib > 0),
    ADD CONSTRAINT job_mig_is_whole_devices CHECK (mig_profile IS NULL OR (gpu_milli IS NULL AND gpus_per_node > 0));
