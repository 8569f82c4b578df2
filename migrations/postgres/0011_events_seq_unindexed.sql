-- `events.seq` loses its own index (the primary key); the unique index of event ids stays, and is
-- what identifies a row to logical replication (REPLICA IDENTITY). No
-- statement reads events by seq alone: the event stream reads a key's events after a seq
-- (`events_key`, on key_id and seq), `Last-Event-ID` is an event's id mapped to its seq within
-- its key, the outbox joins events by id, the sweeper deletes a key's events by key_id (the same
-- readers as in migrations/sqlite/0010_events_without_autoincrement.sql). The index of seqs was
-- one B-tree entry per event written, one per deposit and one per retrieval, read by nobody.
-- seq keeps its sequence as default, so it is still never given twice. Making the index of ids
-- the primary key instead would build it again (a UNIQUE constraint's index cannot be taken
-- over), with writes waiting: the events table is the largest.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events REPLICA IDENTITY USING INDEX events_id_key;
