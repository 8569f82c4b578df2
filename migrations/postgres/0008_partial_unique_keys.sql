-- A key's code_hash is NULL once the key has ended, and pending_retrieval_id is NULL unless a
-- retrieval awaits confirmation, so most rows of keys hold NULL in both. A full unique index
-- stores those NULLs too: one entry more per deposit and two more per retrieval that ends a key,
-- written and never read (every lookup compares with = or = ANY, which the planner takes as
-- implying NOT NULL, so it uses the partial index; ON CONFLICT DO NOTHING counts partial unique
-- indexes as well). The partial indexes hold the live rows only.
--
-- Built without CONCURRENTLY (migrations run in one transaction): writes to keys wait while the
-- two indexes are built (1.6 s for a million rows on a 2-core test machine).
CREATE UNIQUE INDEX keys_live_code ON keys(code_hash) WHERE code_hash IS NOT NULL;
ALTER TABLE keys DROP CONSTRAINT keys_code_hash_key;
CREATE UNIQUE INDEX keys_held_retrieval ON keys(pending_retrieval_id)
    WHERE pending_retrieval_id IS NOT NULL;
ALTER TABLE keys DROP CONSTRAINT keys_pending_retrieval_id_key;
