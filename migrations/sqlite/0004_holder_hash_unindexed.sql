-- Holder tokens now name their key (`kmh_<id hex>.<secret>`): the key is found by its id and
-- the token checked against holder_hash, which therefore loses its UNIQUE index, whose entries
-- land on a random B-tree page at every deposit (and take ~45 bytes per key). Tokens made before
-- still work through a partial index over the keys made before this migration
-- (legacy_holder = 1); it empties as those keys are purged. SQLite cannot drop a column's
-- UNIQUE constraint in place, so the table is rebuilt (https://sqlite.org/lang_altertable.html,
-- "other kinds of table schema changes"), in the migration's one transaction.
CREATE TABLE keys_v4 (
    id                       TEXT PRIMARY KEY,
    tenant_id                TEXT NOT NULL,
    holder_hash              BLOB NOT NULL,
    legacy_holder            INTEGER,        -- 1: made before tokens named their key
    code_hash                BLOB UNIQUE,    -- kept after the key ends: its tombstone
    code_format              TEXT NOT NULL,
    label                    TEXT,
    kind                     TEXT NOT NULL,
    algorithm                TEXT NOT NULL,
    spki                     BLOB,
    secret_sealed            BLOB,
    fingerprint              TEXT,
    ssh_fingerprint          TEXT,
    jwk_thumbprint           TEXT,
    proven                   INTEGER NOT NULL,
    policy                   TEXT NOT NULL,  -- JSON of keymaster_core::policy::Policy
    password_hash            TEXT,
    notify                   TEXT,           -- JSON of Notify
    state                    TEXT NOT NULL,
    created_at               INTEGER NOT NULL,
    expires_at               INTEGER NOT NULL,
    ended_at                 INTEGER,
    retrievals               INTEGER NOT NULL DEFAULT 0,
    max_retrievals           INTEGER NOT NULL,
    failed_password_attempts INTEGER NOT NULL DEFAULT 0,
    pending_retrieval_id     TEXT UNIQUE,
    pending_service_id       TEXT,
    confirm_by               INTEGER
) STRICT;
INSERT INTO keys_v4 (id, tenant_id, holder_hash, legacy_holder, code_hash, code_format, label,
        kind, algorithm, spki, secret_sealed, fingerprint, ssh_fingerprint, jwk_thumbprint,
        proven, policy, password_hash, notify, state, created_at, expires_at, ended_at,
        retrievals, max_retrievals, failed_password_attempts, pending_retrieval_id,
        pending_service_id, confirm_by)
    SELECT id, tenant_id, holder_hash, 1, code_hash, code_format, label,
        kind, algorithm, spki, secret_sealed, fingerprint, ssh_fingerprint, jwk_thumbprint,
        proven, policy, password_hash, notify, state, created_at, expires_at, ended_at,
        retrievals, max_retrievals, failed_password_attempts, pending_retrieval_id,
        pending_service_id, confirm_by
    FROM keys ORDER BY rowid;
DROP TABLE keys;
ALTER TABLE keys_v4 RENAME TO keys;
CREATE INDEX keys_holder_legacy ON keys(holder_hash) WHERE legacy_holder = 1;
CREATE INDEX keys_live_expiry ON keys(expires_at) WHERE ended_at IS NULL;
CREATE INDEX keys_grace ON keys(confirm_by) WHERE confirm_by IS NOT NULL;
CREATE INDEX keys_ended ON keys(ended_at) WHERE ended_at IS NOT NULL;
