//! SQLite: the sweeper's work. Ends keys that reached their expiry (`key.expired`) and held
//! keys whose confirmation grace passed (`key.unconfirmed`), as lifecycle plans
//! (`lifecycle::plan_expire`), and purges finished records, their events and tombstones, and
//! finished deliveries after the retention period, audit rows after theirs (`store::retention`). It never decides a retrieval: expiry is enforced at the moment of each
//! request; this only tidies up and reports, in bounded batches so that the writer is never
//! held for long.

use jiff::Timestamp;
use rusqlite::params;

use super::apply::apply;
use super::ms;
use super::tx::Tx;
use super::writer::db;
use crate::store::lifecycle::{plan_expire, Ending, Expiry, ENDING_COLUMNS, LIVE_SQL};
use crate::store::retention::Retention;
use crate::store::{StoreError, SweepReport};

const BATCH: usize = SweepReport::BATCH;

/// Finished deliveries past the horizon `?1`, among the oldest `?2` of each finished status
/// (read through `deliveries_status`; see `store::retention`).
const PURGE_DELIVERIES: &str = "DELETE FROM deliveries WHERE id IN (
       SELECT id FROM (SELECT id, finished_at FROM deliveries WHERE status = 'delivered'
                       ORDER BY id LIMIT +?2) WHERE finished_at < ?1
       UNION ALL
       SELECT id FROM (SELECT id, finished_at FROM deliveries WHERE status = 'failed'
                       ORDER BY id LIMIT +?2) WHERE finished_at < ?1)";

/// Audit rows written before the horizon `?1`, among the oldest `?2`, but never the newest:
/// the largest id in the table must not go down, or SQLite would give it again (migration 11).
const PURGE_AUDIT: &str = "DELETE FROM audit WHERE id IN (
       SELECT id FROM (SELECT id, at FROM audit ORDER BY id LIMIT +?2) WHERE at < ?1)
     AND id < (SELECT max(id) FROM audit)";

/// The newest audit row, once it too was written before the horizon `?1`: blanked, all but
/// its id and time, instead of deleted (a blank row's `action` is empty; the list skips it).
const BLANK_NEWEST_AUDIT: &str = "UPDATE audit SET actor = '', action = '', outcome = '',
       key_id = NULL, ip = NULL, detail = NULL, repeats = NULL, coalesce_key = NULL
     WHERE id = (SELECT max(id) FROM audit) AND at < ?1 AND action != ''";

/// Ends the keys that `sql` selects (as `ENDING_COLUMNS`, bound to now and the batch size).
fn end(c: &Tx<'_>, sql: &str, why: Expiry, now: Timestamp) -> Result<usize, StoreError> {
    let endings: Vec<Ending> = {
        let mut stmt = c.prepare_cached(sql).map_err(db)?;
        let rows = stmt
            .query_map(params![ms(now), BATCH as i64], |r| Ok(Ending::read(r)))
            .map_err(db)?;
        rows.collect::<Result<Result<_, _>, _>>().map_err(db)??
    };
    let n = endings.len();
    for ending in endings {
        apply(c, &plan_expire(ending, why, now))?;
    }
    Ok(n)
}

pub fn sweep(c: &Tx<'_>, now: Timestamp, retention: Retention) -> Result<SweepReport, StoreError> {
    let grace_ended = end(
        c,
        &format!(
            "SELECT {ENDING_COLUMNS} FROM keys k LEFT JOIN services s ON s.id = k.pending_service_id
             WHERE k.state = 'awaiting_confirmation' AND k.confirm_by <= ?1
             LIMIT +?2"
        ),
        Expiry::Grace,
        now,
    )?;
    let expired = end(
        c,
        &format!(
            "SELECT id, tenant_id, label, NULL, NULL FROM keys
             WHERE {LIVE_SQL} AND expires_at <= ?1 AND state != 'awaiting_confirmation'
             LIMIT +?2"
        ),
        Expiry::Lifetime,
        now,
    )?;

    let mut report = SweepReport {
        grace_ended,
        expired,
        ..SweepReport::default()
    };
    let horizon = retention.records_horizon(now);
    let purged_events = c
        .execute(
            "DELETE FROM events WHERE key_id IN
               (SELECT id FROM keys WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT +?2)",
            params![horizon, BATCH as i64],
        )
        .map_err(db)?;
    c.execute(
        "DELETE FROM retrievals WHERE key_id IN
           (SELECT id FROM keys WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT +?2)",
        params![horizon, BATCH as i64],
    )
    .map_err(db)?;
    let purged_keys = c
        .execute(
            "DELETE FROM keys WHERE id IN
               (SELECT id FROM keys WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT +?2)",
            params![horizon, BATCH as i64],
        )
        .map_err(db)?;
    let purged_tombstones = c
        .execute(
            "DELETE FROM tombstones WHERE code_hash IN
               (SELECT code_hash FROM tombstones WHERE died_at < ?1 LIMIT +?2)",
            params![horizon, BATCH as i64],
        )
        .map_err(db)?;
    let purged_deliveries = c
        .execute(PURGE_DELIVERIES, params![horizon, BATCH as i64])
        .map_err(db)?;
    let purged_audit = match retention.audit_horizon(now) {
        Some(h) => {
            let deleted = c
                .execute(PURGE_AUDIT, params![h, BATCH as i64])
                .map_err(db)?;
            deleted + c.execute(BLANK_NEWEST_AUDIT, params![h]).map_err(db)?
        }
        None => 0,
    };
    report.purged = purged_keys + purged_tombstones + purged_deliveries + purged_audit;
    let purged = [
        purged_events,
        purged_keys,
        purged_tombstones,
        purged_deliveries,
        purged_audit,
    ];
    report.more = report.batch_full(&purged);
    Ok(report)
}
