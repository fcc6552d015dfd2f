-- 0003: drains as plans, maintenance windows, downtime records, GPU health history, silent-pool holds.

-- A drain: nodes, a reason, a start and an optional deadline after which running work is stopped (with its
-- grace period) and requeued. Made by an operator or by a maintenance window at its start.
CREATE TABLE drains (
    id bigserial PRIMARY KEY,
    nodes text[] NOT NULL,
    reason text NOT NULL,
    deadline timestamptz,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    maintenance_id bigint,
    finished_at timestamptz
);
ALTER TABLE nodes ADD COLUMN drain_id bigint REFERENCES drains (id);

CREATE TABLE maintenance_windows (
    id bigserial PRIMARY KEY,
    nodes text[] NOT NULL CONSTRAINT maintenance_names_nodes CHECK (cardinality(nodes) > 0),
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set when the window's drain began, and when the nodes were returned at its end.
    started_at timestamptz,
    ended_at timestamptz,
    CONSTRAINT maintenance_window_ordered CHECK (starts_at < ends_at)
);
ALTER TABLE drains ADD CONSTRAINT drains_maintenance_fk FOREIGN KEY (maintenance_id) REFERENCES maintenance_windows (id) ON DELETE SET NULL;
CREATE INDEX maintenance_windows_open ON maintenance_windows (starts_at) WHERE ended_at IS NULL;

-- Time a node could not take work: planned (drained, maintenance) is not lost capacity; lost is.
CREATE TYPE downtime_kind AS ENUM ('planned', 'lost');
CREATE TABLE node_downtime (
    id bigserial PRIMARY KEY,
    node text NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
    kind downtime_kind NOT NULL,
    reason text,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz
);
CREATE UNIQUE INDEX node_downtime_one_open ON node_downtime (node) WHERE ended_at IS NULL;

-- Every change of a GPU's health, with the job that was on it.
CREATE TABLE gpu_health_events (
    id bigserial PRIMARY KEY,
    node text NOT NULL,
    gpu_index integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    from_health gpu_health NOT NULL,
    to_health gpu_health NOT NULL,
    cause text NOT NULL,
    xid integer,
    job_id bigint,
    actor text NOT NULL,
    FOREIGN KEY (node, gpu_index) REFERENCES gpus (node, idx) ON DELETE CASCADE
);
CREATE INDEX gpu_health_events_by_gpu ON gpu_health_events (node, gpu_index, at);

-- XID events already graded, so a kernel log line read twice counts once.
CREATE TABLE gpu_xid_seen (
    node text NOT NULL,
    gpu_index integer NOT NULL,
    xid integer NOT NULL,
    at text NOT NULL,
    PRIMARY KEY (node, gpu_index, xid, at)
);

-- Pools whose nodes went silent together: held instead of mass-requeued until an operator decides.
CREATE TABLE pool_holds (
    pool text PRIMARY KEY REFERENCES pools (name) ON DELETE CASCADE,
    silent_nodes text[] NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
