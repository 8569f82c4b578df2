-- `events.seq` without AUTOINCREMENT: every event written paid an update of `sqlite_sequence`
-- (its read at the INSERT's start and its write at the end), about 1.4 % of a retrieval's
-- instructions (docs/performance.md). SQLite now gives a new event the largest seq in the table
-- plus one (https://sqlite.org/autoinc.html), which is above every event in the table at that
-- moment, so events stay in the order they were written. What AUTOINCREMENT added is that a
-- seq is never given twice even after the newest events were deleted; keymaster does not need
-- that, because:
--   - seq never leaves the server: the event stream's ids, and so `Last-Event-ID`, are the
--     events' own `id` (UNIQUE), mapped to a seq when a stream starts (`event_seq`);
--   - every reader compares seqs of one key only (`key_events(key, after)`, `ORDER BY seq`
--     within a key), and `after` is the seq of an event of that key that it read;
--   - events are deleted only by the sweeper's purge of a key that ended more than the
--     retention period ago, all of the key's events with its row.
-- So a seq can be given again only after the event that had it was purged with its key, and no
-- reader holds a seq of a purged key: a stream of a key ends at its first look after the key
-- ended or was purged (routes/events.rs, `gone`), and a purged key's holder token no longer
-- opens one. Every other reader compares seqs of a key whose events all still exist, and a new
-- event is given a seq above all of them. SQLite cannot drop AUTOINCREMENT in place, so the
-- table is rebuilt in the migration's one transaction (as 0004 did for keys); dropping the table also drops its row of
-- `sqlite_sequence`. `audit` keeps AUTOINCREMENT: its id is the audit list's cursor and an id
-- that consumers outside the server may key on, so it must never be given twice.
CREATE TABLE events_v10 (
    seq       INTEGER PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    key_id    TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    type      TEXT NOT NULL,
    at        INTEGER NOT NULL,
    payload   TEXT NOT NULL
) STRICT;
INSERT INTO events_v10 (seq, id, key_id, tenant_id, type, at, payload)
    SELECT seq, id, key_id, tenant_id, type, at, payload FROM events ORDER BY seq;
DROP TABLE events;
ALTER TABLE events_v10 RENAME TO events;
CREATE INDEX events_key ON events(key_id, seq);
