//! PostgreSQL: the sweeper's work. Ends keys that reached their expiry (`key.expired`) and held
//! keys whose confirmation grace passed (`key.unconfirmed`), as lifecycle plans
//! (`lifecycle::plan_expire`), and purges finished records (each ended row with its dead code),
//! their events, the tombstones of replaced codes, and finished deliveries after the retention
//! period, audit rows after theirs (`store::retention`). It never decides a retrieval: expiry is
//! enforced at the moment of each request; this only tidies up and reports.
//!
//! Every batch is selected with `FOR UPDATE SKIP LOCKED` and changed in the same transaction,
//! so replicas sweeping at once take disjoint batches and each expiry is reported once; a key
//! locked by a retrieval in flight is simply left for the next sweep.
//!
//! The sweep's transaction begins with [`NO_SEQ_SCANS`]. PostgreSQL keeps the generic plan of a
//! statement that it makes after five runs on a connection, from the tables' sizes at that
//! moment (`docs/scaling.md`, "Plans made once per connection"); made while the tables are
//! small, the purges' plans scanned `keys`, `events`, `retrievals`, `tombstones` and `audit`
//! from end to end, and could keep doing so at every sweep, on tables grown to millions of rows,
//! until an `ANALYZE` made PostgreSQL plan again.
//! With sequential scans priced out, every plan the sweeper makes reaches each table by one of
//! its indexes whatever its size then (tested below on empty tables). The setting is `LOCAL`: it
//! ends with the transaction, and the hot paths on the same pooled connection plan as before.

use std::sync::LazyLock;

use jiff::Timestamp;
use sqlx::PgConnection;

use super::apply::apply_all;
use super::{db, ms};
use crate::store::lifecycle::{plan_expire, Ending, Expiry, ENDING_COLUMNS, LIVE_SQL};
use crate::store::retention::Retention;
use crate::store::{StoreError, SweepReport};

const BATCH: usize = SweepReport::BATCH;

/// The first statement of the sweep's transaction (see the module's header), and of the
/// look-up of old holder tokens (`keys::key_by_legacy_holder`).
pub(super) const NO_SEQ_SCANS: &str = "SET LOCAL enable_seqscan = off";

/// Held keys whose confirmation grace ended by `$1`, at most `$2`.
static GRACE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ENDING_COLUMNS} FROM keys k LEFT JOIN services s ON s.id = k.pending_service_id
         WHERE k.state = 'awaiting_confirmation' AND k.confirm_by <= $1
         LIMIT $2 FOR UPDATE OF k SKIP LOCKED"
    )
});

/// Finished deliveries past the horizon `$1`, among the oldest `$2` of each finished status
/// (read through `deliveries_status`; see `store::retention`). Not locked: a replica sweeping
/// the same rows at once waits for this delete and then finds them gone.
const PURGE_DELIVERIES: &str = "DELETE FROM deliveries WHERE id IN (
       SELECT id FROM (SELECT id, finished_at FROM deliveries WHERE status = 'delivered'
                       ORDER BY id LIMIT $2) d WHERE finished_at < $1
       UNION ALL
       SELECT id FROM (SELECT id, finished_at FROM deliveries WHERE status = 'failed'
                       ORDER BY id LIMIT $2) f WHERE finished_at < $1)";

/// Audit rows written before the horizon `$1`, among the oldest `$2`.
const PURGE_AUDIT: &str = "DELETE FROM audit WHERE id IN (
       SELECT id FROM (SELECT id, at FROM audit ORDER BY id LIMIT $2) a WHERE at < $1)";

/// Live keys past their expiry `$1`, at most `$2`, by `keys_live_expiry` (whose predicate is
/// `LIVE_SQL`, migration 9); those held for a confirmation are ended by their grace instead.
static EXPIRED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, tenant_id, label, NULL::text, NULL::text FROM keys
         WHERE {LIVE_SQL} AND expires_at <= $1 AND state != 'awaiting_confirmation'
         LIMIT $2 FOR UPDATE SKIP LOCKED"
    )
});

/// Ended keys past the horizon `$1`, at most `$2` (by `keys_ended`), with their events and
/// retrieval records; an ended row holds its dead code, which goes with it.
const PURGE_KEYS: &str = "WITH doomed AS (
       SELECT id FROM keys WHERE ended_at IS NOT NULL AND ended_at < $1
       LIMIT $2 FOR UPDATE SKIP LOCKED
   ), ev AS (
       DELETE FROM events WHERE key_id IN (SELECT id FROM doomed) RETURNING 1
   ), rt AS (
       DELETE FROM retrievals WHERE key_id IN (SELECT id FROM doomed) RETURNING 1
   ), k AS (
       DELETE FROM keys WHERE id IN (SELECT id FROM doomed) RETURNING 1
   )
   SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM k)";

/// Tombstones (replaced codes, and those of keys that ended before migration 9) past the
/// horizon `$1`, at most `$2`.
const PURGE_TOMBSTONES: &str = "DELETE FROM tombstones WHERE code_hash IN
   (SELECT code_hash FROM tombstones WHERE died_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)";

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
    retention: Retention,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let batch = BATCH as i64;
    sqlx::query(NO_SEQ_SCANS)
        .execute(&mut *c)
        .await
        .map_err(db)?;

    report.grace_ended = end(c, &GRACE_SQL, Expiry::Grace, now).await?;
    report.expired = end(c, &EXPIRED_SQL, Expiry::Lifetime, now).await?;

    let horizon = retention.records_horizon(now);
    let (purged_events, purged_keys): (i64, i64) = sqlx::query_as(PURGE_KEYS)
        .bind(horizon)
        .bind(batch)
        .fetch_one(&mut *c)
        .await
        .map_err(db)?;
    let purged_tombstones = sweep_batch(c, PURGE_TOMBSTONES, horizon).await?;
    let purged_deliveries = sweep_batch(c, PURGE_DELIVERIES, horizon).await?;
    let purged_audit = match retention.audit_horizon(now) {
        Some(h) => sweep_batch(c, PURGE_AUDIT, h).await?,
        None => 0,
    };
    let count = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
    let (purged_events, purged_keys) = (count(purged_events), count(purged_keys));
    report.purged = purged_keys + purged_tombstones + purged_deliveries + purged_audit;
    report.more = report.batch_full(&[
        purged_events,
        purged_keys,
        purged_tombstones,
        purged_deliveries,
        purged_audit,
    ]);
    Ok(report)
}

/// Runs a statement of the sweep bound to its time `$1` (a horizon, or now) and the batch size
/// `$2`; the rows it changed.
pub(super) async fn sweep_batch(
    c: &mut PgConnection,
    sql: &str,
    at: i64,
) -> Result<usize, StoreError> {
    let done = sqlx::query(sql)
        .bind(at)
        .bind(BATCH as i64)
        .execute(&mut *c)
        .await
        .map_err(db)?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::test_db::{self, drop_db};

    /// The plan PostgreSQL keeps after five runs, made while every table is empty: the live
    /// expiries are reached by `keys_live_expiry` (`docs/scaling.md`, "Plans made once per
    /// connection"), whose predicate, `LIVE_SQL` since migration 9, an ended row does not meet.
    #[tokio::test]
    async fn the_generic_plan_of_expiries_on_empty_tables_scans_no_table() {
        let Some((store, url, name)) = test_db::store("km_sweep_").await else {
            return;
        };
        let plan = test_db::generic_plan(&store, &EXPIRED_SQL, 2).await;
        assert!(plan.contains("Index Scan using keys_live_expiry"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        drop_db(store, &url, &name).await;
    }

    /// Every statement of the sweep, planned as the sweep plans it (after [`NO_SEQ_SCANS`]) while
    /// every table is empty: each table is reached by an index. Without the setting the keys
    /// purge scanned `keys` twice, `events` and `retrievals`; the tombstones and audit purges
    /// their tables too.
    #[tokio::test]
    async fn the_generic_plans_of_the_sweep_on_empty_tables_scan_no_table() {
        let Some((store, url, name)) = test_db::store("km_sweep_").await else {
            return;
        };
        let statements: [(&str, &str); 8] = [
            ("grace", &GRACE_SQL),
            ("expired", &EXPIRED_SQL),
            ("keys", PURGE_KEYS),
            ("tombstones", PURGE_TOMBSTONES),
            ("deliveries", PURGE_DELIVERIES),
            ("audit", PURGE_AUDIT),
            ("requests expired", super::super::requests::EXPIRE_REQUESTS),
            ("requests purged", super::super::requests::PURGE_REQUESTS),
        ];
        for (what, sql) in statements {
            let plan = test_db::generic_plan_after(&store, NO_SEQ_SCANS, sql, 2).await;
            assert!(!plan.contains("Seq Scan"), "{what}:\n{plan}");
            assert!(plan.contains("Index"), "{what}:\n{plan}");
        }
        // What the setting changes: the keys purge without it.
        let plan = test_db::generic_plan(&store, PURGE_KEYS, 2).await;
        assert!(plan.contains("Seq Scan"), "{plan}");
        drop_db(store, &url, &name).await;
    }
}
