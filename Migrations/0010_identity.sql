-- 0010: identity and an audit log its database owner cannot forge (issue 19).
-- A role that reads /metrics and nothing else.
ALTER TYPE token_role ADD VALUE 'scraper';
-- Tokens expire, say when they were last used and who made them.
ALTER TABLE tokens ADD COLUMN expires_at timestamptz;
ALTER TABLE tokens ADD COLUMN last_used_at timestamptz;
ALTER TABLE tokens ADD COLUMN created_by text;
-- A live token's name is unique within its organisation (or among tokens of none): older duplicates are revoked.
UPDATE tokens t SET revoked_at = now()
WHERE revoked_at IS NULL AND EXISTS (
    SELECT 1 FROM tokens u WHERE u.revoked_at IS NULL AND coalesce(u.org, '') = coalesce(t.org, '') AND u.name = t.name AND u.id > t.id);
CREATE UNIQUE INDEX tokens_live_name_per_org ON tokens (coalesce(org, ''), name) WHERE revoked_at IS NULL;
-- Who may submit with a priority class (empty: anyone).
ALTER TABLE priority_classes ADD COLUMN organizations text[] NOT NULL DEFAULT '{}';
ALTER TABLE priority_classes ADD COLUMN roles text[] NOT NULL DEFAULT '{}';
-- How long tokens live by default and at most.
ALTER TABLE policy_defaults ADD COLUMN token_lifetime_s bigint NOT NULL DEFAULT 7776000 CHECK (token_lifetime_s > 0);
ALTER TABLE policy_defaults ADD COLUMN token_max_lifetime_s bigint NOT NULL DEFAULT 31536000 CHECK (token_max_lifetime_s > 0);
-- Each audit record's link is also an HMAC with a key outside the database (allotd's secret): a chain
-- rewritten by someone who can write the table does not verify without it.
ALTER TABLE audit ADD COLUMN mac text;
-- Records are appended by allotd, which computes each one's MAC; the old SQL-only append would write records
-- without one (they would not verify), so it now refuses.
CREATE OR REPLACE FUNCTION audit_append(p_actor text, p_action text, p_target text, p_outcome text, p_detail jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are appended by allotd, which signs them' USING ERRCODE = 'insufficient_privilege';
END $$;
