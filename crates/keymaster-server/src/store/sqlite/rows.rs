//! Rows shared by every SQLite operation: audit rows, events (the outbox), the end of a key's
//! life (material cleared, the row kept as the code's tombstone), failure budgets.

use jiff::Timestamp;
use keymaster_core::wire::Event;
use rusqlite::{params, Connection, OptionalExtension};

use super::writer::db;
use super::{ms, ts};
use crate::store::events::{new_event, EventType, KeyRef};
use crate::store::{AuditRecord, KeyState, StoreError, StoredEvent};

/// Appends an audit row.
pub fn insert_audit(c: &Connection, a: &AuditRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO audit (at, actor, action, outcome, key_id, ip, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            ms(a.at),
            a.actor,
            a.action,
            a.outcome,
            a.key_id,
            a.ip.map(|ip| ip.to_string()),
            a.detail
        ])
    })
    .map_err(db)?;
    Ok(())
}

/// Writes an event into the outbox.
pub fn insert_event(c: &Connection, e: &Event) -> Result<(), StoreError> {
    insert_event_json(c, e, &event_json(e)?)
}

/// The stored JSON payload of an event.
pub fn event_json(e: &Event) -> Result<String, StoreError> {
    serde_json::to_string(e).map_err(|e| StoreError::Db(e.to_string()))
}

/// Writes an event whose payload (`event_json(e)`) was serialised before the job was queued,
/// off the writer thread.
pub fn insert_event_json(c: &Connection, e: &Event, payload: &str) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO events (id, key_id, tenant_id, type, at, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            e.id,
            e.data.key_id,
            e.data.tenant_id,
            e.event_type,
            ms(e.timestamp),
            payload
        ])
    })
    .map_err(db)?;
    super::outbox::enqueue(c, &e.id, &e.data.key_id, &e.data.tenant_id, e.timestamp)
}

/// Makes and writes an event of `ty` for a key.
pub fn emit(
    c: &Connection,
    ty: EventType,
    key: &KeyRef<'_>,
    service: Option<(&str, &str)>,
    reason: Option<&str>,
    at: Timestamp,
) -> Result<(), StoreError> {
    insert_event(c, &new_event(ty, key, service, reason, at))
}

/// Ends a key's life: the state becomes `state` and the key material is cleared. The code
/// hash stays in the row, which is the code's tombstone until the row is purged, so that a
/// later use can be reported (`retrieve`); no index entry of the code moves.
pub fn end_key(
    c: &Connection,
    key_id: &str,
    state: KeyState,
    at: Timestamp,
) -> Result<(), StoreError> {
    end_key_counting(c, key_id, state, at, None)
}

/// [`end_key`], also setting the retrieval count when `retrievals` is given: the last
/// retrieval of a key without confirmation counts and ends it in one `UPDATE`. Such a key never
/// has a pending retrieval, so that `UPDATE` leaves the pending columns alone: naming a column
/// in `SET` makes SQLite rewrite its index entry even when the value stays NULL, and the
/// `pending_retrieval_id` entry of an old key sits on a page of its own.
pub fn end_key_counting(
    c: &Connection,
    key_id: &str,
    state: KeyState,
    at: Timestamp,
    retrievals: Option<u32>,
) -> Result<(), StoreError> {
    let ended = match retrievals {
        None => c
            .prepare_cached(
                "UPDATE keys SET state = ?2, ended_at = ?3, spki = NULL, secret_sealed = NULL,
                        password_hash = NULL, pending_retrieval_id = NULL,
                        pending_service_id = NULL, confirm_by = NULL
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![key_id, state.as_str(), ms(at)])),
        Some(n) => c
            .prepare_cached(
                "UPDATE keys SET state = ?2, ended_at = ?3, spki = NULL, secret_sealed = NULL,
                        password_hash = NULL, retrievals = ?4
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![key_id, state.as_str(), ms(at), n])),
    };
    ended.map_err(db)?;
    Ok(())
}

/// The key's events after `after_seq`, oldest first.
pub fn key_events(
    c: &Connection,
    key_id: &str,
    after_seq: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT seq, payload FROM events WHERE key_id = ?1 AND seq > ?2 ORDER BY seq LIMIT 1000",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![key_id, after_seq], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, payload) = row.map_err(db)?;
        let event = serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?;
        out.push(StoredEvent { seq, event });
    }
    Ok(out)
}

/// The sequence number of one event of a key.
pub fn event_seq(c: &Connection, key_id: &str, event_id: &str) -> Result<Option<i64>, StoreError> {
    c.query_row(
        "SELECT seq FROM events WHERE key_id = ?1 AND id = ?2",
        params![key_id, event_id],
        |r| r.get(0),
    )
    .optional()
    .map_err(db)
}

/// Seconds until `subject` may try again, when its failure budget is spent.
pub fn budget_spent(
    c: &Connection,
    subject: &str,
    now: Timestamp,
    per_minute: u32,
) -> Result<Option<u64>, StoreError> {
    let row: Option<(i64, i64)> = c
        .prepare_cached("SELECT window_start, failures FROM failure_budget WHERE subject = ?1")
        .and_then(|mut s| {
            s.query_row(params![subject], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db)?;
    let now = ms(now);
    Ok(match row {
        Some((start, failures)) if now - start < 60_000 && failures >= i64::from(per_minute) => {
            Some(((start + 60_000 - now + 999) / 1000).max(1) as u64)
        }
        _ => None,
    })
}

/// Counts one failure against `subject`'s budget (a fixed one-minute window).
pub fn record_failure(c: &Connection, subject: &str, now: Timestamp) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO failure_budget (subject, window_start, failures) VALUES (?1, ?2, 1)
         ON CONFLICT (subject) DO UPDATE SET
           failures = CASE WHEN ?2 - window_start >= 60000 THEN 1 ELSE failures + 1 END,
           window_start = CASE WHEN ?2 - window_start >= 60000 THEN ?2 ELSE window_start END",
    )
    .and_then(|mut s| s.execute(params![subject, ms(now)]))
    .map_err(db)?;
    Ok(())
}

/// Reads a timestamp column that may be null.
pub fn opt_ts(v: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    v.map(ts).transpose()
}
