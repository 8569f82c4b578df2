//! PostgreSQL: the sweeper's work. Ends keys that reached their expiry (`key.expired`) and
//! held keys whose confirmation grace passed (`key.unconfirmed`), as lifecycle plans
//! (`lifecycle::plan_expire`), and purges finished records, their events and
//! tombstones after the retention period. It never decides a retrieval: expiry is enforced at
//! the moment of each request; this only tidies up and reports.
//!
//! Every batch is selected with `FOR UPDATE SKIP LOCKED` and changed in the same transaction,
//! so replicas sweeping at once take disjoint batches and each expiry is reported once; a key
//! locked by a retrieval in flight is simply left for the next sweep.

use std::time::Duration;

use jiff::Timestamp;
use sqlx::PgConnection;

use super::apply::apply_all;
use super::{db, ms};
use crate::store::lifecycle::{plan_expire, Ending, Expiry, ENDING_COLUMNS, LIVE_SQL};
use crate::store::{StoreError, SweepReport};

const BATCH: usize = SweepReport::BATCH;

/// Locks and ends the keys that `sql` selects (as `ENDING_COLUMNS`, bound to now and the batch
/// size), skipping those locked by a retrieval in flight.
async fn end(
    c: &mut PgConnection,
    sql: &str,
    why: Expiry,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let rows = sqlx::query(sql)
        .bind(ms(now))
        .bind(BATCH as i64)
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
    let plans = rows
        .iter()
        .map(|r| Ok(plan_expire(Ending::read(r)?, why, now)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    apply_all(c, &plans).await?;
    Ok(plans.len())
}

pub async fn sweep(
    c: &mut PgConnection,
    now: Timestamp,
    retention: Duration,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let now_ms = ms(now);
    let batch = BATCH as i64;

    report.grace_ended = end(
        c,
        &format!(
            "SELECT {ENDING_COLUMNS} FROM keys k LEFT JOIN services s ON s.id = k.pending_service_id
             WHERE k.state = 'awaiting_confirmation' AND k.confirm_by <= $1
             LIMIT $2 FOR UPDATE OF k SKIP LOCKED"
        ),
        Expiry::Grace,
        now,
    )
    .await?;
    // `code_hash IS NOT NULL` says the same as `LIVE_SQL` here (this backend clears the code
    // of a key that ends) and is the predicate of the partial index of live expiries.
    report.expired = end(
        c,
        &format!(
            "SELECT id, tenant_id, label, NULL::text, NULL::text FROM keys
             WHERE {LIVE_SQL} AND code_hash IS NOT NULL AND expires_at <= $1
               AND state != 'awaiting_confirmation'
             LIMIT $2 FOR UPDATE SKIP LOCKED"
        ),
        Expiry::Lifetime,
        now,
    )
    .await?;

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
    let count = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
    let (purged_events, purged_keys) = (count(purged_events), count(purged_keys));
    let purged_tombstones = usize::try_from(purged_tombstones).unwrap_or(usize::MAX);
    report.purged = purged_keys + purged_tombstones;
    report.more = report.batch_full(&[purged_events, purged_keys, purged_tombstones]);
    Ok(report)
}
