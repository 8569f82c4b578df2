-- `audit.id` without AUTOINCREMENT, as 0010 did for `events.seq`: every audit row written paid
-- a read of `sqlite_sequence` at the INSERT's start and a write of it at its end, once per
-- deposit and per retrieval on the single writer (issue 25, docs/performance.md). SQLite now
-- gives a new row the largest id in the table plus one (https://sqlite.org/autoinc.html).
-- Unlike an event's seq, an audit id must never be given twice: it is the audit list's cursor
-- (`GET /v1/admin/audit?before=`) and what a consumer shipping the log elsewhere may key on. So
-- the largest id in the table must never go down, and rows leave it only by the sweeper's purge
-- (`store/sqlite/sweep.rs`), which therefore never deletes the newest row: once that row too is
-- past `audit_retention`, the purge blanks it instead (every column but its id and time
-- emptied: nothing of what it recorded is kept), and the audit list does not show blank rows
-- (`action = ''`; every real row names its action). The blank row goes in a later purge, once a
-- newer row holds the largest id. A new id is therefore above every id given before.
-- (Keeping the mark elsewhere and computing the id in the INSERT cost as much as AUTOINCREMENT
-- did.) SQLite cannot drop AUTOINCREMENT in place, so the table is rebuilt in the migration's one
-- transaction; dropping it also drops its row of `sqlite_sequence`. If the newest rows were
-- purged before this migration (only `sqlite_sequence` remembers their ids), a blank row takes
-- the largest id AUTOINCREMENT gave.
CREATE TABLE audit_v11 (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    key_id       TEXT,
    ip           TEXT,
    detail       TEXT,
    repeats      INTEGER,
    coalesce_key TEXT
) STRICT;
INSERT INTO audit_v11 (id, at, actor, action, outcome, key_id, ip, detail, repeats, coalesce_key)
    SELECT id, at, actor, action, outcome, key_id, ip, detail, repeats, coalesce_key
    FROM audit ORDER BY id;
INSERT INTO audit_v11 (id, at, actor, action, outcome)
    SELECT seq, 0, '', '', '' FROM sqlite_sequence
    WHERE name = 'audit' AND seq > (SELECT coalesce(max(id), 0) FROM audit);
DROP TABLE audit;
ALTER TABLE audit_v11 RENAME TO audit;
CREATE UNIQUE INDEX audit_coalesce ON audit(coalesce_key) WHERE coalesce_key IS NOT NULL;
