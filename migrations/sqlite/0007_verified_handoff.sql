-- Verified handoff (docs/security.md, "Verified handoff").
-- origin_network: the depositor's address cut to its /24 (IPv4) or /48 (IPv6), as text
-- ("203.0.113.0/24"); the full address is never stored. NULL for keys deposited before.
-- sas_commitment: SHA-256 of the device's SAS nonce (32 bytes), when the deposit gave one.
ALTER TABLE keys ADD COLUMN origin_network TEXT;
ALTER TABLE keys ADD COLUMN sas_commitment BLOB;

-- One row per retrieval that handed out a key (a repeat within a confirmation grace keeps its
-- row): the retrieving service may run the SAS exchange on it and dispute it for 7 days. Rows
-- go with their key's record when the sweeper purges it.
CREATE TABLE retrievals (
    id             TEXT PRIMARY KEY,
    key_id         TEXT NOT NULL,
    service_id     TEXT NOT NULL,
    at             INTEGER NOT NULL,
    service_nonce  BLOB,            -- 32 bytes, once the service asked for the SAS
    device_nonce   BLOB,            -- 32 bytes, once the device revealed its nonce
    disputed_at    INTEGER,
    dispute_reason TEXT
) STRICT;
CREATE INDEX retrievals_key ON retrievals(key_id);
