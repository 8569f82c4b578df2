-- keymaster schema, SQLite. Times are Unix milliseconds (UTC). Codes and tokens are stored only
-- as hashes (HMAC-SHA-256 for codes, SHA-256 for tokens); secrets only sealed (AEAD).

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE tenants (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    webhook_url           TEXT,
    webhook_secret_sealed BLOB NOT NULL,
    created_at            INTEGER NOT NULL
) STRICT;

CREATE TABLE app_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE services (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    domains       TEXT NOT NULL,   -- JSON array
    allowed_cidrs TEXT NOT NULL,   -- JSON array
    token_hash    BLOB NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL
) STRICT;

-- One row per deposit. While live, code_hash is set; when the key ends, the material and the
-- code hash are cleared and the row stays for the retention period so that the holder can see
-- the terminal status.
CREATE TABLE keys (
    id                       TEXT PRIMARY KEY,
    tenant_id                TEXT NOT NULL,
    holder_hash              BLOB NOT NULL UNIQUE,
    code_hash                BLOB UNIQUE,
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
CREATE INDEX keys_live_expiry ON keys(expires_at) WHERE code_hash IS NOT NULL;
CREATE INDEX keys_grace ON keys(confirm_by) WHERE confirm_by IS NOT NULL;
CREATE INDEX keys_ended ON keys(ended_at) WHERE ended_at IS NOT NULL;

-- Dead codes, kept for the retention period so that a later use can be reported.
CREATE TABLE tombstones (
    code_hash BLOB PRIMARY KEY,
    key_id    TEXT NOT NULL,
    died_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX tombstones_died ON tombstones(died_at);

-- The outbox: every event, written in the transaction of its cause.
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT NOT NULL UNIQUE,
    key_id    TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    type      TEXT NOT NULL,
    at        INTEGER NOT NULL,
    payload   TEXT NOT NULL
) STRICT;
CREATE INDEX events_key ON events(key_id, seq);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    key_id  TEXT,
    ip      TEXT,
    detail  TEXT
) STRICT;

-- Failed-attempt budgets (per service, per source address), one fixed window each.
CREATE TABLE failure_budget (
    subject      TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL,
    failures     INTEGER NOT NULL
) STRICT;
