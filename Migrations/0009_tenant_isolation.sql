-- 0009: tenants confined on their nodes (issue 12).
-- The Unix account each organisation's jobs run as (a name, or uid:gid), and per-user overrides by token name.
ALTER TABLE organizations ADD COLUMN account text;
ALTER TABLE organizations ADD COLUMN user_accounts jsonb NOT NULL DEFAULT '{}';
-- A job's image (its ranks' root filesystem).
ALTER TABLE jobs ADD COLUMN image text;
-- Why a rank ended, beyond its status (out of memory at its limit, its process limit reached).
ALTER TABLE attempt_ranks ADD COLUMN detail text;
-- Nothing here may command an agent: requests to agents are signed with a key derived from allotd's secret (a
-- file) and the node's enrolment, which is what changes when a node is enrolled again.
ALTER TABLE nodes DROP COLUMN callback_token;
ALTER TABLE nodes ADD COLUMN enrolment integer NOT NULL DEFAULT 1 CONSTRAINT node_enrolment_positive CHECK (enrolment >= 1);
