//! Rows shared by every SQLite operation: audit rows, events (the outbox), failure budgets.

use jiff::Timestamp;
use keymaster_core::wire::Event;
use rusqlite::{params, Connection, OptionalExtension};

use super::ms;
use super::tx::Tx;
use super::writer::db;
use crate::store::events::{event_json, read_event, EVENT_COLUMNS};
use crate::store::limits;
use crate::store::{AuditRecord, StoreError, StoredEvent};

/// Appends an audit row.
pub fn insert_audit(c: &Tx<'_>, a: &AuditRecord) -> Result<(), StoreError> {
    c.cached(
        "INSERT INTO audit (at, actor, action, outcome, key_id, ip, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        |s| {
            s.execute(params![
                ms(a.at),
                a.actor,
                a.action,
                a.outcome,
                a.key_id,
                a.ip.map(|ip| ip.to_string()),
                a.detail
            ])
        },
    )
    .map_err(db)?;
    Ok(())
}

/// Appends a refusal that changes nothing else, coalesced into the row of its actor, action,
/// outcome and minute (`limits::coalesce_key`): the first refusal inserts it, the others count.
pub fn insert_coalesced_audit(c: &Tx<'_>, a: &AuditRecord) -> Result<(), StoreError> {
    c.cached(
        "INSERT INTO audit (at, actor, action, outcome, key_id, ip, detail, repeats, coalesce_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8)
         ON CONFLICT (coalesce_key) WHERE coalesce_key IS NOT NULL DO UPDATE
         SET repeats = repeats + 1, detail = (repeats + 1) || ?9",
        |s| {
            s.execute(params![
                ms(a.at),
                a.actor,
                a.action,
                a.outcome,
                a.key_id,
                a.ip.map(|ip| ip.to_string()),
                limits::COALESCED_ONCE,
                limits::coalesce_key(a),
                limits::COALESCED_TIMES,
            ])
        },
    )
    .map_err(db)?;
    Ok(())
}

/// An event read back from its row (`EVENT_COLUMNS`, starting at column `first`), for the
/// closures of rusqlite's queries (see [`event_row_error`]).
pub fn event_from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Event> {
    read_event(r, first).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(first + 5, rusqlite::types::Type::Text, e.into())
    })
}

/// An event ready to be written, with its stored payload ([`event_json`]); made before a job
/// is queued where that matters, so that the single writer thread does not serialise.
pub struct EventRow {
    event: Event,
    payload: String,
}

impl EventRow {
    pub fn new(event: Event) -> Result<EventRow, StoreError> {
        let payload = event_json(&event)?;
        Ok(EventRow { event, payload })
    }
}

/// Writes an event into the events table and, unless it is for the event stream only, its
/// deliveries into the outbox: the one way every SQLite operation writes an event.
/// `key_notify` is whether the key has notification targets of its own, when the caller read
/// the key's row (it spares the outbox a second read of that row).
pub fn insert_event(c: &Tx<'_>, e: &EventRow, key_notify: Option<bool>) -> Result<(), StoreError> {
    let (e, payload) = (&e.event, &e.payload);
    c.cached(
        "INSERT INTO events (id, key_id, tenant_id, type, at, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        |s| {
            s.execute(params![
                e.id,
                e.data.key_id,
                e.data.tenant_id,
                e.event_type,
                ms(e.timestamp),
                payload
            ])
        },
    )
    .map_err(db)?;
    if crate::store::events::is_stream_only(&e.event_type) {
        return Ok(());
    }
    super::outbox::enqueue(
        c,
        &e.id,
        &e.data.key_id,
        &e.data.tenant_id,
        e.timestamp,
        key_notify,
    )
}

/// The key's events after `after_seq`, oldest first.
pub fn key_events(
    c: &Connection,
    key_id: &str,
    after_seq: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT seq, {EVENT_COLUMNS} FROM events
             WHERE key_id = ?1 AND seq > ?2 ORDER BY seq LIMIT 1000"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![key_id, after_seq], |r| {
            Ok(StoredEvent {
                seq: r.get(0)?,
                event: event_from_row(r, 1)?,
            })
        })
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(event_row_error)
}

/// An error reading events back: an unreadable stored event is `Corrupt`, anything else a
/// database error.
pub fn event_row_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..) => {
            StoreError::Corrupt(format!("stored event: {e}"))
        }
        e => db(e),
    }
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
    c: &Tx<'_>,
    subject: &str,
    now: Timestamp,
    per_minute: u32,
) -> Result<Option<u64>, StoreError> {
    let row: Option<(i64, i64)> = c
        .cached(
            "SELECT window_start, failures FROM failure_budget WHERE subject = ?1",
            |s| {
                s.query_row(params![subject], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            },
        )
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
pub fn record_failure(c: &Tx<'_>, subject: &str, now: Timestamp) -> Result<(), StoreError> {
    c.cached(
        "INSERT INTO failure_budget (subject, window_start, failures) VALUES (?1, ?2, 1)
         ON CONFLICT (subject) DO UPDATE SET
           failures = CASE WHEN ?2 - window_start >= 60000 THEN 1 ELSE failures + 1 END,
           window_start = CASE WHEN ?2 - window_start >= 60000 THEN ?2 ELSE window_start END",
        |s| s.execute(params![subject, ms(now)]),
    )
    .map_err(db)?;
    Ok(())
}

/// Gives back a failure counted in advance at `taken_at` (a `BudgetSlot`), unless the window
/// it was counted in is over and a later one started.
pub fn release_failure(c: &Tx<'_>, subject: &str, taken_at: Timestamp) -> Result<(), StoreError> {
    c.cached(
        "UPDATE failure_budget SET failures = failures - 1
         WHERE subject = ?1 AND window_start <= ?2 AND failures > 0",
        |s| s.execute(params![subject, ms(taken_at)]),
    )
    .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use rusqlite::{params, Connection};

    use super::{insert_event, key_events, EventRow};
    use crate::store::events::{event_json, new_event, EventType, KeyRef};
    use crate::store::sqlite::migrate;
    use crate::store::sqlite::tx::Tx;

    /// An event is stored as its columns and a payload of only the rest, and reads back equal;
    /// a row written before payloads were trimmed (the whole event as JSON) reads as it was.
    #[test]
    fn events_read_back_the_same_from_trimmed_and_from_whole_payloads() {
        let c = Connection::open_in_memory().unwrap();
        migrate(&c).unwrap();
        let key = KeyRef {
            key_id: "key_1",
            tenant_id: "ten_1",
            label: Some("laptop"),
        };
        let now = Timestamp::now();
        let plain = new_event(
            EventType::Deposited,
            &KeyRef {
                label: None,
                ..key.clone()
            },
            None,
            None,
            now,
        );
        let denied = new_event(
            EventType::Denied,
            &key,
            Some(("svc_1", "web")),
            Some("forbidden"),
            now,
        );
        insert_event(&Tx::new(&c), &EventRow::new(plain.clone()).unwrap(), None).unwrap();
        insert_event(&Tx::new(&c), &EventRow::new(denied.clone()).unwrap(), None).unwrap();
        // Written by an earlier version: the whole event, with an older timestamp precision.
        let mut old = new_event(
            EventType::Retrieved,
            &key,
            Some(("svc_1", "web")),
            None,
            now,
        );
        old.timestamp = "2026-01-02T03:04:05.123456789Z".parse().unwrap();
        c.execute(
            "INSERT INTO events (id, key_id, tenant_id, type, at, payload)
             VALUES (?1, 'key_1', 'ten_1', 'key.retrieved', 0, ?2)",
            params![old.id, serde_json::to_string(&old).unwrap()],
        )
        .unwrap();

        let read: Vec<_> = key_events(&c, "key_1", 0)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(read, [plain.clone(), denied.clone(), old]);
        assert_eq!(event_json(&plain).unwrap(), "{}");
        let stored: String = c
            .query_row(
                "SELECT payload FROM events WHERE id = ?1",
                [&denied.id],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            !stored.contains("key_1") && !stored.contains(&denied.id),
            "{stored}"
        );
    }
}
