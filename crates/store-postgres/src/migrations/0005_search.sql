-- muster's schema, version 5: full-text search over message bodies (see
-- muster_store::search), and the indexes a reader's or a target's history
-- pages by.
--
-- A body's words are what SQLite's FTS5 `unicode61` tokenizer finds: runs
-- of letters and digits, lowercased, diacritics kept. PostgreSQL's own
-- parser would keep `crates/store/lib.rs`, `x@y.com` or `v1.2` whole, so
-- every run of other characters becomes a space first and the `simple`
-- configuration (no stemming, no stop words) takes the rest. The letters
-- are classified and lowercased by ICU where the server has it, so the
-- database's own locale (say, C) does not decide what a letter is; without
-- ICU, by the database's default collation. Searches put their words
-- through the same function, so the two sides always agree.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        CREATE FUNCTION muster_search_text(body TEXT) RETURNS TEXT
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            AS $f$ SELECT lower(regexp_replace(body COLLATE "und-x-icu", '[^[:alnum:]]+', ' ', 'g')) $f$;
    ELSE
        CREATE FUNCTION muster_search_text(body TEXT) RETURNS TEXT
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            AS $f$ SELECT lower(regexp_replace(body COLLATE "default", '[^[:alnum:]]+', ' ', 'g')) $f$;
    END IF;
END
$$;

-- Kept in step with the body by PostgreSQL itself, and filled for every
-- message already stored as the column is added.
ALTER TABLE messages ADD COLUMN body_words tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', muster_search_text(body))) STORED;
CREATE INDEX messages_body_words ON messages USING GIN (body_words);
CREATE INDEX messages_sender ON messages (sender, id);
CREATE INDEX messages_target ON messages (target_kind, target, id);
