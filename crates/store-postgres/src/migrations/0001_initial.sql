-- muster's schema, version 1: the same tables as the SQLite store's.
--
-- Every text column compares as bytes (COLLATE "C"), as SQLite's do, so
-- ids order and compare the same whatever the database's own collation:
-- message ids are ULIDs, and `AckUpTo` and every listing order rely on
-- their byte order.
CREATE TABLE sessions (
    id TEXT COLLATE "C" PRIMARY KEY,
    nickname TEXT COLLATE "C" NOT NULL,
    harness TEXT COLLATE "C" NOT NULL,
    host TEXT COLLATE "C" NOT NULL,
    operator TEXT COLLATE "C" NOT NULL,
    pid BIGINT,
    cwd TEXT COLLATE "C" NOT NULL,
    project TEXT COLLATE "C" NOT NULL,
    branch TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    activity TEXT COLLATE "C" NOT NULL,
    last_tool TEXT COLLATE "C",
    can_push BOOLEAN NOT NULL,
    link TEXT COLLATE "C" NOT NULL,
    connected_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    left_at BIGINT
);

CREATE TABLE messages (
    id TEXT COLLATE "C" PRIMARY KEY,
    sender TEXT COLLATE "C" NOT NULL,
    sender_nickname TEXT COLLATE "C" NOT NULL,
    target_kind TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    reply_to TEXT COLLATE "C",
    body TEXT COLLATE "C" NOT NULL,
    sent_at BIGINT NOT NULL
);
CREATE INDEX messages_sent_at ON messages (sent_at);
CREATE INDEX messages_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL;

-- state: 0 queued, 1 pushed, 2 surfaced, 3 seen, 4 acked.
CREATE TABLE deliveries (
    recipient TEXT COLLATE "C" NOT NULL,
    message_id TEXT COLLATE "C" NOT NULL,
    state INTEGER NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (recipient, message_id)
);
CREATE INDEX deliveries_unread ON deliveries (message_id) WHERE state < 2;
CREATE INDEX deliveries_of_message ON deliveries (message_id);

CREATE TABLE rooms (
    name TEXT COLLATE "C" PRIMARY KEY,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    room TEXT COLLATE "C" NOT NULL,
    session_id TEXT COLLATE "C" NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (room, session_id)
);
CREATE INDEX memberships_session ON memberships (session_id);

CREATE TABLE reservations (
    id TEXT COLLATE "C" PRIMARY KEY,
    session_id TEXT COLLATE "C" NOT NULL,
    root TEXT COLLATE "C" NOT NULL,
    pattern TEXT COLLATE "C" NOT NULL,
    exclusive BOOLEAN NOT NULL,
    reason TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX reservations_session ON reservations (session_id);
