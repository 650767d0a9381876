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
