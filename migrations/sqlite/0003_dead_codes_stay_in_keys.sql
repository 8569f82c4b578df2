-- A key's code hash now stays in its row when the key ends: the ended row is the code's
-- tombstone for the retention period, and is purged with it. Ending a key then rewrites only
-- its row, instead of deleting a random entry of the code_hash index and inserting another into
-- tombstones (two random pages per retrieval and per expiry). The tombstones table keeps the
-- codes replaced by `POST /v1/keys/{id}/code` and those of keys that ended before this version.
-- "Live" is now `ended_at IS NULL`, so the index of live expiries says so.
DROP INDEX keys_live_expiry;
CREATE INDEX keys_live_expiry ON keys(expires_at) WHERE ended_at IS NULL;
