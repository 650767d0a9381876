-- muster's schema, version 3: how each message's sender was authenticated
-- (`SentVia`); older messages did not record it.
ALTER TABLE messages ADD COLUMN via TEXT COLLATE "C" NOT NULL DEFAULT 'unrecorded';
