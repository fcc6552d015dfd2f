-- allotd keeps the principals of the tokens it looked up lately (TokenCache: a request need not read the tokens
-- table each time) only while it listens on this channel: any change to what makes a token live or names its
-- principal notifies every allotd on commit, and each forgets everything it kept. Recording a token's last use
-- (last_used_at) notifies nothing. Per statement: a revocation of many tokens is one notice.
CREATE FUNCTION tokens_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('allot_tokens', '');
    RETURN NULL;
END $$;

CREATE TRIGGER tokens_changed AFTER UPDATE OF hash, name, role, org, node, revoked_at, expires_at OR DELETE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION tokens_changed();
CREATE TRIGGER tokens_truncated AFTER TRUNCATE ON tokens FOR EACH STATEMENT EXECUTE FUNCTION tokens_changed();
