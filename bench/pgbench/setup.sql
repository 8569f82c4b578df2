-- bench/run's pgbench baseline (issue 19): two throw-away tables with the columns of `keys`
-- (migrations/postgres/*.sql) and, of its indexes, the primary key and the unique code_hash.
-- Created in a database (or schema) of their own, never in keymaster's, and dropped after the
-- run. psql variable: rows (how many rows update.sql chooses from).

SET client_min_messages = warning;
DROP TABLE IF EXISTS deposit_baseline, retrieve_baseline;

CREATE TABLE deposit_baseline (
    id                       TEXT PRIMARY KEY,
    tenant_id                TEXT NOT NULL,
    holder_hash              BYTEA NOT NULL,
    code_hash                BYTEA UNIQUE,
    code_format              TEXT NOT NULL,
    label                    TEXT,
    kind                     TEXT NOT NULL,
    algorithm                TEXT NOT NULL,
    spki                     BYTEA,
    secret_sealed            BYTEA,
    fingerprint              TEXT,
    ssh_fingerprint          TEXT,
    jwk_thumbprint           TEXT,
    proven                   BOOLEAN NOT NULL,
    policy                   TEXT NOT NULL,
    password_hash            TEXT,
    notify                   TEXT,
    state                    TEXT NOT NULL,
    created_at               BIGINT NOT NULL,
    expires_at               BIGINT NOT NULL,
    ended_at                 BIGINT,
    retrievals               BIGINT NOT NULL DEFAULT 0,
    max_retrievals           BIGINT NOT NULL,
    failed_password_attempts BIGINT NOT NULL DEFAULT 0,
    pending_retrieval_id     TEXT,
    pending_service_id       TEXT,
    confirm_by               BIGINT,
    origin_network           TEXT,
    sas_commitment           BYTEA
);

CREATE TABLE retrieve_baseline (LIKE deposit_baseline INCLUDING DEFAULTS);
ALTER TABLE retrieve_baseline ADD PRIMARY KEY (id), ADD UNIQUE (code_hash);

-- :rows live keys, ids 'key_' + 32 hex digits as keymaster makes them (update.sql rebuilds the
-- id from a number), the rest as insert.sql writes it.
INSERT INTO retrieve_baseline (id, tenant_id, holder_hash, code_hash, code_format, label, kind,
    algorithm, spki, fingerprint, proven, policy, state, created_at, expires_at, max_retrievals,
    origin_network)
SELECT 'key_' || lpad(to_hex(i), 32, '0'),
       'ten_0190a1b2c3d4e5f60718293a4b5c6d7e',
       sha256(('holder' || i)::bytea),
       sha256(('code' || i)::bytea),
       'words', 'bench', 'public', 'ed25519',
       decode('302a300506032b6570032100', 'hex') || sha256(('spki' || i)::bytea),
       'SHA256:' || encode(sha256(('fp' || i)::bytea), 'base64'),
       false, '{"max_retrievals":1}', 'active',
       1796000000000 + i, 1796000000000 + 86400000 + i, 1, '127.0.0.0/24'
FROM generate_series(1, :rows) AS i;

VACUUM ANALYZE deposit_baseline;
VACUUM ANALYZE retrieve_baseline;
