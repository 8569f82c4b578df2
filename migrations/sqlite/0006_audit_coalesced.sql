-- Refusals that change nothing else (a mistyped code, a 429) are coalesced in the audit log:
-- one row per actor, action, outcome and minute, found through `coalesce_key`, with the number
-- of refusals it stands for in `repeats` (and, for the reader, in `detail`). Other rows leave
-- both NULL and are not in the index.
ALTER TABLE audit ADD COLUMN repeats INTEGER;
ALTER TABLE audit ADD COLUMN coalesce_key TEXT;
CREATE UNIQUE INDEX audit_coalesce ON audit(coalesce_key) WHERE coalesce_key IS NOT NULL;
