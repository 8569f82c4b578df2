-- The same as migrations/sqlite/0009_requests.sql.
-- Enrolment requests (the service asks, the device answers). The code is stored only as its
-- HMAC; the row stays for the retention period after the request ended (fulfilled or expired),
-- so that the code is a tombstone: a second answer is `409 request_fulfilled`, not a new key.
-- key_id: the key deposited in answer (its code hash is derived from the request id, never a
-- code anyone holds). retrieval_id: set once the requesting service has read the key.
CREATE TABLE requests (
    id           TEXT PRIMARY KEY,
    service_id   TEXT NOT NULL,
    code_hash    BYTEA NOT NULL UNIQUE,
    code_format  TEXT NOT NULL,
    label        TEXT,
    state        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    key_id       TEXT,
    retrieval_id TEXT
);
CREATE INDEX requests_pending ON requests(expires_at) WHERE state = 'pending';
CREATE INDEX requests_ended ON requests(ended_at) WHERE ended_at IS NOT NULL;
