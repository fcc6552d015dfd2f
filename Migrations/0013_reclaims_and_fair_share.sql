-- The reclaim deadline is a kept promise (issue 13): each reclaim records what was asked, by when, and when it
-- was met; the attempts it stops get a grace period that fits inside the deadline.
ALTER TABLE reclaims
    ADD COLUMN deadline_at timestamptz,
    ADD COLUMN requested_gpus double precision NOT NULL DEFAULT 0 CHECK (requested_gpus >= 0);
UPDATE reclaims r SET deadline_at = r.requested_at + make_interval(secs => d.reclaim_deadline_s) FROM policy_defaults d;
ALTER TABLE reclaims ALTER COLUMN deadline_at SET NOT NULL;
CREATE INDEX reclaims_by_org ON reclaims (org, requested_at);

-- A stop's own grace period (shorter than the policy's when a reclaim deadline bounds it); NULL: the policy's.
ALTER TABLE attempts ADD COLUMN stop_grace_s integer CHECK (stop_grace_s >= 0);

-- Fair share decays with a half-life (Slurm's PriorityDecayHalfLife, 7 days by default there too).
ALTER TABLE policy_defaults ADD COLUMN fair_share_half_life_s bigint NOT NULL DEFAULT 604800 CHECK (fair_share_half_life_s > 0);

-- Fair share's one formula: GPU-seconds of `gpus` held from `started` to `ended` (NULL: still held), as of now,
-- decayed with half-life `h` seconds: ∫ gpus × 2^(-age/h) over the interval = gpus × h/ln 2 × (2^(-age_end/h) − 2^(-age_start/h)).
-- Exponents are floored at -1000, where float8 would underflow (weights below 1e-300 count as nothing).
CREATE FUNCTION decayed_gpu_seconds(gpus float8, started timestamptz, ended timestamptz, h float8) RETURNS float8
LANGUAGE sql STABLE AS $$
    SELECT gpus * h / ln(2) *
           (power(2::float8, greatest(-1000, -greatest(0, extract(epoch FROM now() - coalesce(ended, now())))::float8 / h))
            - power(2::float8, greatest(-1000, -greatest(0, extract(epoch FROM now() - started))::float8 / h)))
$$;
