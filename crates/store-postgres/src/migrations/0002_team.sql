-- muster's schema, version 2: what several daemons on one database share.

-- The log of every committed submit, in commit order: a writer takes the
-- advisory lock LOG_LOCK (see batch.rs) before it writes, so `seq` order is
-- commit order and a reader that has seen entry n has seen every entry
-- before it. `reserves` marks entries that change reservations, which a
-- reservation decision's guard checks.
CREATE TABLE changes (
    seq BIGINT PRIMARY KEY,
    origin TEXT COLLATE "C" NOT NULL,
    reserves BOOLEAN NOT NULL,
    body TEXT NOT NULL,
    logged_at BIGINT NOT NULL
);
CREATE INDEX changes_reserving ON changes (seq) WHERE reserves;
CREATE INDEX changes_logged_at ON changes (logged_at);

-- Each running daemon and when it last said it was alive (the database's
-- clock, ms since the epoch).
CREATE TABLE daemons (
    id TEXT COLLATE "C" PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Which sessions are linked to which daemon now.
CREATE TABLE links (
    daemon_id TEXT COLLATE "C" NOT NULL REFERENCES daemons (id) ON DELETE CASCADE,
    session_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (daemon_id, session_id)
);

-- A nickname is given out once, whichever daemon gives it.
CREATE UNIQUE INDEX sessions_nickname ON sessions (nickname);

-- What a guard raises when another daemon decided first.
CREATE FUNCTION muster_conflict(what TEXT) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'MU409', MESSAGE = what;
END
$$;
