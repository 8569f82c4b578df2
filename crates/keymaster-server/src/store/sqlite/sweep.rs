//! SQLite: the sweeper's work. Ends keys that reached their expiry (`key.expired`) and held
//! keys whose confirmation grace passed (`key.unconfirmed`), as lifecycle plans
//! (`lifecycle::plan_expire`), and purges finished records, their events and tombstones after
//! the retention period. It never decides a retrieval: expiry is enforced at the moment of each
//! request; this only tidies up and reports, in bounded batches so that the writer is never
//! held for long.

use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection};

use super::apply::apply;
use super::ms;
use super::writer::db;
use crate::store::lifecycle::{plan_expire, Ending, Expiry, ENDING_COLUMNS, LIVE_SQL};
use crate::store::{StoreError, SweepReport};

const BATCH: usize = SweepReport::BATCH;

/// Ends the keys that `sql` selects (as `ENDING_COLUMNS`, bound to now and the batch size).
fn end(c: &Connection, sql: &str, why: Expiry, now: Timestamp) -> Result<usize, StoreError> {
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

pub fn sweep(
    c: &Connection,
    now: Timestamp,
    retention: Duration,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let now_ms = ms(now);

    report.grace_ended = end(
        c,
        &format!(
            "SELECT {ENDING_COLUMNS} FROM keys k LEFT JOIN services s ON s.id = k.pending_service_id
             WHERE k.state = 'awaiting_confirmation' AND k.confirm_by <= ?1
             LIMIT ?2"
        ),
        Expiry::Grace,
        now,
    )?;
    report.expired = end(
        c,
        &format!(
            "SELECT id, tenant_id, label, NULL, NULL FROM keys
             WHERE {LIVE_SQL} AND expires_at <= ?1 AND state != 'awaiting_confirmation'
             LIMIT ?2"
        ),
        Expiry::Lifetime,
        now,
    )?;

    let horizon = now_ms - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let purged_events = c
        .execute(
            "DELETE FROM events WHERE key_id IN
               (SELECT id FROM keys WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT ?2)",
            params![horizon, BATCH as i64],
        )
        .map_err(db)?;
    c.execute(
        "DELETE FROM retrievals WHERE key_id IN
           (SELECT id FROM keys WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT ?2)",
        params![horizon, BATCH as i64],
    )
    .map_err(db)?;
    let purged_keys = c
        .execute(
            "DELETE FROM keys WHERE id IN
               (SELECT id FROM keys WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT ?2)",
            params![horizon, BATCH as i64],
        )
        .map_err(db)?;
    let purged_tombstones = c
        .execute(
            "DELETE FROM tombstones WHERE code_hash IN
               (SELECT code_hash FROM tombstones WHERE died_at < ?1 LIMIT ?2)",
            params![horizon, BATCH as i64],
        )
        .map_err(db)?;
    let purged_deliveries = c
        .execute(
            "DELETE FROM deliveries WHERE id IN
               (SELECT id FROM deliveries WHERE status != 'pending' AND finished_at < ?1 LIMIT ?2)",
            params![horizon, BATCH as i64],
        )
        .map_err(db)?;
    report.purged = purged_keys + purged_tombstones + purged_deliveries;
    let purged = [
        purged_events,
        purged_keys,
        purged_tombstones,
        purged_deliveries,
    ];
    report.more = report.batch_full(&purged);
    Ok(report)
}
