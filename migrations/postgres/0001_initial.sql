-- keymaster schema, PostgreSQL. The same tables as migrations/sqlite/0001_initial.sql: times are
-- Unix milliseconds (UTC, BIGINT), codes and tokens are stored only as hashes (HMAC-SHA-256 for
-- codes, SHA-256 for tokens), secrets only sealed (AEAD). Applied once, under an advisory lock,
-- and recorded in schema_migrations (see crates/keymaster-server/src/store/postgres/mod.rs).

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE tenants (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    webhook_url           TEXT,
    webhook_secret_sealed BYTEA NOT NULL,
    created_at            BIGINT NOT NULL
);

CREATE TABLE app_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE services (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    domains       TEXT NOT NULL,   -- JSON array
    allowed_cidrs TEXT NOT NULL,   -- JSON array
    token_hash    BYTEA NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL
);

-- One row per deposit. While live, code_hash is set; when the key ends, the material and the
-- code hash are cleared and the row stays for the retention period so that the holder can see
-- the terminal status.
CREATE TABLE keys (
    id                       TEXT PRIMARY KEY,
    tenant_id                TEXT NOT NULL,
    holder_hash              BYTEA NOT NULL UNIQUE,
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
    policy                   TEXT NOT NULL,  -- JSON of keymaster_core::policy::Policy
    password_hash            TEXT,
    notify                   TEXT,           -- JSON of Notify
    state                    TEXT NOT NULL,
    created_at               BIGINT NOT NULL,
    expires_at               BIGINT NOT NULL,
    ended_at                 BIGINT,
    retrievals               BIGINT NOT NULL DEFAULT 0,
    max_retrievals           BIGINT NOT NULL,
    failed_password_attempts BIGINT NOT NULL DEFAULT 0,
    pending_retrieval_id     TEXT UNIQUE,
    pending_service_id       TEXT,
    confirm_by               BIGINT
);
CREATE INDEX keys_live_expiry ON keys(expires_at) WHERE code_hash IS NOT NULL;
CREATE INDEX keys_grace ON keys(confirm_by) WHERE confirm_by IS NOT NULL;
CREATE INDEX keys_ended ON keys(ended_at) WHERE ended_at IS NOT NULL;

-- Dead codes, kept for the retention period so that a later use can be reported.
CREATE TABLE tombstones (
    code_hash BYTEA PRIMARY KEY,
    key_id    TEXT NOT NULL,
    died_at   BIGINT NOT NULL
);
CREATE INDEX tombstones_died ON tombstones(died_at);

-- The outbox: every event, written in the transaction of its cause.
CREATE TABLE events (
    seq       BIGSERIAL PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    key_id    TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    type      TEXT NOT NULL,
    at        BIGINT NOT NULL,
    payload   TEXT NOT NULL
);
CREATE INDEX events_key ON events(key_id, seq);

CREATE TABLE audit (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    key_id  TEXT,
    ip      TEXT,
    detail  TEXT
);

-- Failed-attempt budgets (per service, per source address), one fixed window each. The row of
-- a subject is locked (SELECT … FOR UPDATE) by every retrieval of that subject, so the budget
-- is exact across replicas.
CREATE TABLE failure_budget (
    subject      TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    failures     BIGINT NOT NULL
);
