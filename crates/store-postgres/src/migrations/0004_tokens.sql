-- muster's schema, version 4: tokens (stored as the SHA-256 of their
-- secret), and which token registered each session (none: the daemon's
-- own user did). A live token's name is unique across every daemon: two
-- daemons making the same name at once, one is refused.
ALTER TABLE sessions ADD COLUMN owner TEXT COLLATE "C";
CREATE TABLE tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    scope TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX tokens_live_name ON tokens(name) WHERE revoked_at IS NULL;

-- A session's owner is decided once, in the database: two daemons
-- registering one new session id for different tokens at once, the second
-- upsert would turn the first's session into its own. Refused instead
-- (MU409, a conflict: that daemon catches up and finds the session taken).
CREATE FUNCTION muster_owner_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.owner IS DISTINCT FROM NEW.owner THEN
        PERFORM muster_conflict('session ' || OLD.id || ' was registered by another token');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER sessions_owner_kept BEFORE UPDATE OF owner ON sessions
    FOR EACH ROW EXECUTE FUNCTION muster_owner_kept();
