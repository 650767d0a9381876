-- muster's schema, version 6: a message's search words are computed by
-- the INSERT that stores it (`writes::PUT_MESSAGE`) instead of by a
-- generated column. The values are the same (the same expression over the
-- same body); what changes is the cost. A generated column's expression
-- is set up again by every INSERT that runs, and with it the body of
-- `muster_search_text` is parsed and planned once per message; in the
-- INSERT's own prepared statement it is planned with the statement
-- (PostgreSQL keeps a generic plan after its first few runs). Measured
-- with `muster-bench team` (three daemons): see BENCHMARKS.md "team".
ALTER TABLE messages ALTER COLUMN body_words DROP EXPRESSION;
