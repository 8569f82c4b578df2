//! Rows shared by every PostgreSQL operation: audit rows, events (the outbox), the end of a
//! key's life (material cleared, code tombstoned), failure budgets.

use jiff::Timestamp;
use keymaster_core::wire::Event;
use sqlx::{PgConnection, Row};

use super::{db, ms};
use crate::store::events::{event_json, read_event, EVENT_COLUMNS};
use crate::store::limits;
use crate::store::{AuditRecord, KeyState, StoreError, StoredEvent};

/// Appends an audit row.
pub async fn insert_audit(c: &mut PgConnection, a: &AuditRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at, actor, action, outcome, key_id, ip, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(ms(a.at))
    .bind(&a.actor)
    .bind(a.action)
    .bind(&a.outcome)
    .bind(&a.key_id)
    .bind(a.ip.map(|ip| ip.to_string()))
    .bind(&a.detail)
    .execute(c)
    .await
    .map_err(db)?;
    Ok(())
}

/// Appends a refusal that changes nothing else, coalesced into the row of its actor, action,
/// outcome and minute (`limits::coalesce_key`): the first refusal inserts it, the others count.
/// The unique index on `coalesce_key` makes replicas that refuse at once meet in one row.
pub async fn insert_coalesced_audit(
    c: &mut PgConnection,
    a: &AuditRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at, actor, action, outcome, key_id, ip, detail, repeats, coalesce_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8)
         ON CONFLICT (coalesce_key) WHERE coalesce_key IS NOT NULL DO UPDATE
         SET repeats = audit.repeats + 1, detail = (audit.repeats + 1)::text || $9::text",
    )
    .bind(ms(a.at))
    .bind(&a.actor)
    .bind(a.action)
    .bind(&a.outcome)
    .bind(&a.key_id)
    .bind(a.ip.map(|ip| ip.to_string()))
    .bind(limits::COALESCED_ONCE)
    .bind(limits::coalesce_key(a))
    .bind(limits::COALESCED_TIMES)
    .execute(c)
    .await
    .map_err(db)?;
    Ok(())
}

/// Writes an event into the events table and, unless it is for the event stream only, its
/// deliveries into the outbox: the one way every PostgreSQL operation writes an event.
pub async fn insert_event(c: &mut PgConnection, e: &Event) -> Result<(), StoreError> {
    let payload = event_json(e)?;
    sqlx::query(
        "INSERT INTO events (id, key_id, tenant_id, type, at, payload)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&e.id)
    .bind(&e.data.key_id)
    .bind(&e.data.tenant_id)
    .bind(&e.event_type)
    .bind(ms(e.timestamp))
    .bind(payload)
    .execute(&mut *c)
    .await
    .map_err(db)?;
    if crate::store::events::is_stream_only(&e.event_type) {
        return Ok(());
    }
    super::outbox::enqueue(c, &e.id, &e.data.key_id, &e.data.tenant_id, e.timestamp).await
}

/// Ends the lives of keys (`lifecycle::KeyChange::End`): the state becomes `state`, the key
/// material and the hold are cleared, the retrieval count becomes `retrievals` if given. The
/// code hash stays: the ended row is the dead code's tombstone until it is purged, so that a
/// later use can be reported (migration 9). The caller holds the rows' locks.
pub async fn end_keys(
    c: &mut PgConnection,
    key_ids: &[String],
    state: KeyState,
    at: Timestamp,
    retrievals: Option<u32>,
) -> Result<(), StoreError> {
    if key_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE keys SET state = $2, ended_at = $3, spki = NULL,
                secret_sealed = NULL, password_hash = NULL, pending_retrieval_id = NULL,
                pending_service_id = NULL, confirm_by = NULL,
                retrievals = coalesce($4, retrievals)
         WHERE id = ANY($1)",
    )
    .bind(key_ids)
    .bind(state.as_str())
    .bind(ms(at))
    .bind(retrievals.map(i64::from))
    .execute(&mut *c)
    .await
    .map_err(db)?;
    Ok(())
}

/// The key's events after `after_seq`, oldest first.
pub async fn key_events(
    c: &mut PgConnection,
    key_id: &str,
    after_seq: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT seq, {EVENT_COLUMNS} FROM events
         WHERE key_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000"
    ))
    .bind(key_id)
    .bind(after_seq)
    .fetch_all(c)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(StoredEvent {
                seq: r.try_get(0).map_err(db)?,
                event: read_event(r, 1)?,
            })
        })
        .collect()
}

/// The sequence number of one event of a key.
pub async fn event_seq(
    c: &mut PgConnection,
    key_id: &str,
    event_id: &str,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar("SELECT seq FROM events WHERE key_id = $1 AND id = $2")
        .bind(key_id)
        .bind(event_id)
        .fetch_optional(c)
        .await
        .map_err(db)
}

/// Seconds until `subject` may try again, when its failure budget is spent.
///
/// Locks the subject's budget row (creating it if needed) until the transaction ends, so that
/// checking and counting are one step across every replica: the budget is exact.
pub async fn budget_spent(
    c: &mut PgConnection,
    subject: &str,
    now: Timestamp,
    per_minute: u32,
) -> Result<Option<u64>, StoreError> {
    sqlx::query(
        "INSERT INTO failure_budget (subject, window_start, failures) VALUES ($1, $2, 0)
         ON CONFLICT (subject) DO NOTHING",
    )
    .bind(subject)
    .bind(ms(now))
    .execute(&mut *c)
    .await
    .map_err(db)?;
    let row: (i64, i64) = sqlx::query_as(
        "SELECT window_start, failures FROM failure_budget WHERE subject = $1 FOR UPDATE",
    )
    .bind(subject)
    .fetch_one(&mut *c)
    .await
    .map_err(db)?;
    Ok(spent(Some(row), now, per_minute))
}

/// Seconds until a subject may try again, when its budget row (`window_start`, `failures`)
/// says that its failures of the window that holds `now` reached `per_minute`.
pub fn spent(row: Option<(i64, i64)>, now: Timestamp, per_minute: u32) -> Option<u64> {
    let (start, failures) = row?;
    let now = ms(now);
    (now - start < 60_000 && failures >= i64::from(per_minute))
        .then(|| ((start + 60_000 - now + 999) / 1000).max(1) as u64)
}

/// Counts one failure against `subject`'s budget (a fixed one-minute window that starts at
/// the first failure, as in the SQLite backend: the row [`budget_spent`] made with no failure
/// does not start a window).
pub async fn record_failure(
    c: &mut PgConnection,
    subject: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO failure_budget (subject, window_start, failures) VALUES ($1, $2, 1)
         ON CONFLICT (subject) DO UPDATE SET
           failures = CASE WHEN $2 - failure_budget.window_start >= 60000
                                  OR failure_budget.failures = 0 THEN 1
                           ELSE failure_budget.failures + 1 END,
           window_start = CASE WHEN $2 - failure_budget.window_start >= 60000
                                   OR failure_budget.failures = 0 THEN $2
                               ELSE failure_budget.window_start END",
    )
    .bind(subject)
    .bind(ms(now))
    .execute(c)
    .await
    .map_err(db)?;
    Ok(())
}

/// Against a real server, when `KEYMASTER_TEST_DATABASE_URL` names one (a maintenance URL, as
/// for the store contract; a database is made for the test and dropped); without it they pass.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::test_db::{self, drop_db};

    /// Migration 11 keeps every event's seq and its order within its key, leaves events two
    /// indexes (the unique one of ids and the key's), gives a new event a seq above the old
    /// ones, and the readers of events reach them by index in their generic plans.
    #[tokio::test]
    async fn events_keep_their_seqs_and_are_read_by_key_or_id_after_the_seq_index_is_gone() {
        let insert = |id: &str, key: &str| {
            format!(
                "INSERT INTO events (id, key_id, tenant_id, type, at, payload)
                 VALUES ('{id}', '{key}', 'ten_1', 'key.deposited', 0, '{{}}');"
            )
        };
        let setup = [("evt_1", "key_a"), ("evt_2", "key_b"), ("evt_3", "key_a")]
            .map(|(id, key)| insert(id, key))
            .concat();
        let Some((store, url, name)) = test_db::store_after("km_events_", 10, &setup).await else {
            return;
        };
        let mut c = store.pool.acquire().await.unwrap();
        sqlx::raw_sql(&insert("evt_4", "key_a"))
            .execute(&mut *c)
            .await
            .unwrap();
        let events = key_events(&mut c, "key_a", 0).await.unwrap();
        let ids: Vec<(i64, &str)> = events
            .iter()
            .map(|e| (e.seq, e.event.id.as_str()))
            .collect();
        assert_eq!(ids, [(1, "evt_1"), (3, "evt_3"), (4, "evt_4")]);
        assert_eq!(event_seq(&mut c, "key_b", "evt_2").await.unwrap(), Some(2));
        let after = key_events(&mut c, "key_a", 3).await.unwrap();
        assert_eq!(after.len(), 1);
        let duplicate = sqlx::raw_sql(&insert("evt_4", "key_b"))
            .execute(&mut *c)
            .await;
        assert!(duplicate.is_err_and(|e| crate::store::postgres::is_unique_violation(&e)));
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'events' ORDER BY 1",
        )
        .fetch_all(&mut *c)
        .await
        .unwrap();
        assert_eq!(indexes, ["events_id_key", "events_key"]);
        drop(c);

        for (sql, params, index) in [
            ("SELECT seq FROM events WHERE key_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000", 2, "events_key"),
            ("SELECT seq FROM events WHERE key_id = $1 AND id = $2", 2, "events_"),
            ("SELECT e.type FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = $1", 1, "events_id_key"),
        ] {
            let plan = test_db::generic_plan(&store, sql, params).await;
            assert!(plan.contains(index) && !plan.contains("Seq Scan on events"), "{plan}");
        }
        drop_db(store, &url, &name).await;
    }
}
