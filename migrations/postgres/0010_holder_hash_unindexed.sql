-- The same as migrations/sqlite/0004_holder_hash_unindexed.sql. Holder tokens name their key
-- (`kmh_<id hex>.<secret>`), so the key is found by its id and the token checked against
-- holder_hash, which therefore loses its unique index. That index cost one entry per deposit
-- and one per retrieval that ends a key (the key's update is not HOT), each on a random page of
-- a B-tree of ~45 bytes a key, and so a full-page image in the WAL at the first write of each of
-- those pages after every checkpoint (docs/scaling.md, "Where a PostgreSQL request's CPU goes").
-- Tokens made before tokens named their key still work through a partial index over the keys
-- that exist now (legacy_holder); it empties as those keys are purged.
--
-- legacy_holder is added with the default true, and the default then dropped: PostgreSQL (11
-- and later) keeps the constant default of an added column in its catalogue and does not rewrite
-- the table, so every row that exists now reads true, and rows inserted after hold NULL, which
-- the partial index leaves out. No row is written and the index is built from the rows read.
--
-- Replicas of an earlier version still running after this migration look holder tokens up by
-- holder_hash alone, which no index serves now: upgrade all replicas together.
ALTER TABLE keys ADD COLUMN legacy_holder BOOLEAN DEFAULT true;
ALTER TABLE keys ALTER COLUMN legacy_holder DROP DEFAULT;
CREATE INDEX keys_holder_legacy ON keys(holder_hash) WHERE legacy_holder;
ALTER TABLE keys DROP CONSTRAINT keys_holder_hash_key;
