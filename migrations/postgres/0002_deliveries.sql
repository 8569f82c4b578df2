-- Deliveries of events to webhooks and e-mail: one row per event and target, written in the
-- transaction of the event (the outbox), claimed with FOR UPDATE SKIP LOCKED and a lease.
CREATE TABLE deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL,
    channel         TEXT NOT NULL,      -- 'webhook' or 'email'
    target          TEXT NOT NULL,      -- URL or address
    tenant_id       TEXT NOT NULL,
    status          TEXT NOT NULL,      -- 'pending', 'delivered' or 'failed'
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_status ON deliveries(status, id);

-- During a rotation of a tenant's webhook secret, the previous one still signs until this time.
ALTER TABLE tenants ADD COLUMN previous_secret_sealed BYTEA;
ALTER TABLE tenants ADD COLUMN previous_secret_until BIGINT;
