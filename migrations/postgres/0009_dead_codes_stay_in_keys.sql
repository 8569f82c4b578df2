-- The same as migrations/sqlite/0003_dead_codes_stay_in_keys.sql: a key's code hash now stays in
-- its row when the key ends; the ended row is the code's tombstone for the retention period, and
-- is purged with it. A retrieval that ends a key then writes its row only, instead of also
-- inserting into `tombstones` (a heap row, its two index entries and the ON CONFLICT check of
-- its primary key), and the read of a dead code finds it in `keys` like a live one. The
-- tombstones table keeps the codes replaced by `POST /v1/keys/{id}/code` and those of keys that
-- ended before this version (their rows hold no code).
--
-- "Live" is now `ended_at IS NULL`, so the index of live expiries says so. The unique index of
-- codes keeps its predicate (`code_hash IS NOT NULL`), which now holds for ended rows too: a
-- deposit or a new code that collides with a dead key's code is refused (the caller draws
-- another), as on SQLite. It is renamed for what it holds.
--
-- Built without CONCURRENTLY (migrations run in one transaction): writes to keys wait while the
-- index is built (under a second for a million rows).
DROP INDEX keys_live_expiry;
CREATE INDEX keys_live_expiry ON keys(expires_at) WHERE ended_at IS NULL;
ALTER INDEX keys_live_code RENAME TO keys_code;
