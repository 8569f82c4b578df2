//! PostgreSQL: the sweeper's work. Reports keys that reached their expiry (`key.expired`), ends
//! held keys whose confirmation grace passed (`key.unconfirmed`), and purges finished records, their events and
//! tombstones after the retention period. It never decides a retrieval: expiry is enforced at
//! the moment of each request; this only tidies up and reports.
//!
//! Every batch is selected with `FOR UPDATE SKIP LOCKED` and changed in the same transaction,
//! so replicas sweeping at once take disjoint batches and each expiry is reported once; a key
//! locked by a retrieval in flight is simply left for the next sweep.

use std::time::Duration;

use jiff::Timestamp;
use sqlx::PgConnection;

use super::rows::{emit, end_keys};
use super::{db, ms};
use crate::store::events::{EventType, KeyRef};
use crate::store::{KeyState, StoreError, SweepReport};

/// Most keys ended per sweep call; the sweeper calls again while a batch comes back full.
pub const BATCH: usize = 1000;

pub async fn sweep(
    c: &mut PgConnection,
    now: Timestamp,
    retention: Duration,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let now_ms = ms(now);
    let batch = BATCH as i64;

    // A held key ends with its grace, not with its lifetime: once the grace is over it is
    // `retrieved` (`KeyRecord::status_at`) and reported as not confirmed, never as expired.
    type Held = (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let graces: Vec<Held> = sqlx::query_as(
        "SELECT k.id, k.tenant_id, k.label, k.pending_service_id, s.name
         FROM keys k LEFT JOIN services s ON s.id = k.pending_service_id
         WHERE k.state = 'awaiting_confirmation' AND k.confirm_by <= $1
         LIMIT $2 FOR UPDATE OF k SKIP LOCKED",
    )
    .bind(now_ms)
    .bind(batch)
    .fetch_all(&mut *c)
    .await
    .map_err(db)?;
    let ids: Vec<String> = graces.iter().map(|(id, ..)| id.clone()).collect();
    end_keys(c, &ids, KeyState::Retrieved, now).await?;
    for (id, tenant_id, label, service_id, service_name) in &graces {
        let key = KeyRef {
            key_id: id,
            tenant_id,
            label: label.as_deref(),
        };
        // `None` once the service is deleted.
        let service = service_id.as_deref().zip(service_name.as_deref());
        emit(c, EventType::Unconfirmed, &key, service, None, now).await?;
    }
    report.grace_ended = graces.len();

    let expired: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, tenant_id, label FROM keys
         WHERE code_hash IS NOT NULL AND expires_at <= $1
           AND state != 'awaiting_confirmation'
         LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(now_ms)
    .bind(batch)
    .fetch_all(&mut *c)
    .await
    .map_err(db)?;
    let ids: Vec<String> = expired.iter().map(|(id, _, _)| id.clone()).collect();
    end_keys(c, &ids, KeyState::Expired, now).await?;
    for (id, tenant_id, label) in &expired {
        let key = KeyRef {
            key_id: id,
            tenant_id,
            label: label.as_deref(),
        };
        emit(c, EventType::Expired, &key, None, None, now).await?;
    }
    report.expired = expired.len();

    let horizon = now_ms - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let (purged_events, purged_keys): (i64, i64) = sqlx::query_as(
        "WITH doomed AS (
             SELECT id FROM keys WHERE ended_at IS NOT NULL AND ended_at < $1
             LIMIT $2 FOR UPDATE SKIP LOCKED
         ), ev AS (
             DELETE FROM events WHERE key_id IN (SELECT id FROM doomed) RETURNING 1
         ), rt AS (
             DELETE FROM retrievals WHERE key_id IN (SELECT id FROM doomed) RETURNING 1
         ), k AS (
             DELETE FROM keys WHERE id IN (SELECT id FROM doomed) RETURNING 1
         )
         SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM k)",
    )
    .bind(horizon)
    .bind(batch)
    .fetch_one(&mut *c)
    .await
    .map_err(db)?;
    let purged_tombstones = sqlx::query(
        "DELETE FROM tombstones WHERE code_hash IN
           (SELECT code_hash FROM tombstones WHERE died_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(horizon)
    .bind(batch)
    .execute(&mut *c)
    .await
    .map_err(db)?
    .rows_affected();
    let purged_events = usize::try_from(purged_events).unwrap_or(usize::MAX);
    let purged_keys = usize::try_from(purged_keys).unwrap_or(usize::MAX);
    let purged_tombstones = usize::try_from(purged_tombstones).unwrap_or(usize::MAX);
    report.purged = purged_keys + purged_tombstones;
    report.more = [
        report.expired,
        report.grace_ended,
        purged_events,
        purged_keys,
        purged_tombstones,
    ]
    .iter()
    .any(|n| *n >= BATCH);
    Ok(report)
}
