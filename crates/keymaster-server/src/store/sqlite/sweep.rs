//! SQLite: the sweeper's work. Reports keys that reached their expiry (`key.expired`), ends
//! held keys whose confirmation grace passed, and purges finished records, their events and
//! tombstones after the retention period. It never decides a retrieval: expiry is enforced at
//! the moment of each request; this only tidies up and reports, in bounded batches so that
//! the writer is never held for long.

use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection};

use super::ms;
use super::rows::{emit, end_key};
use super::writer::db;
use crate::store::events::{EventType, KeyRef};
use crate::store::{KeyState, StoreError, SweepReport};

/// Most keys ended per sweep call; the sweeper calls again while a batch comes back full.
pub const BATCH: usize = 1000;

pub fn sweep(
    c: &Connection,
    now: Timestamp,
    retention: Duration,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let now_ms = ms(now);

    let expired: Vec<(String, String, Option<String>)> = {
        let mut stmt = c
            .prepare_cached(
                "SELECT id, tenant_id, label FROM keys
                 WHERE ended_at IS NULL AND expires_at <= ?1
                   AND NOT (state = 'awaiting_confirmation' AND confirm_by > ?1)
                 LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![now_ms, BATCH as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    for (id, tenant_id, label) in &expired {
        end_key(c, id, KeyState::Expired, now)?;
        let key = KeyRef {
            key_id: id,
            tenant_id,
            label: label.as_deref(),
        };
        emit(c, EventType::Expired, &key, None, None, now)?;
    }
    report.expired = expired.len();

    let graces: Vec<String> = {
        let mut stmt = c
            .prepare_cached(
                "SELECT id FROM keys WHERE state = 'awaiting_confirmation' AND confirm_by <= ?1
                 LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![now_ms, BATCH as i64], |r| r.get(0))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    for id in &graces {
        end_key(c, id, KeyState::Retrieved, now)?;
    }
    report.grace_ended = graces.len();

    let horizon = now_ms - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let purged_events = c
        .execute(
            "DELETE FROM events WHERE key_id IN
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
    report.more = [
        report.expired,
        report.grace_ended,
        purged_events,
        purged_keys,
        purged_tombstones,
        purged_deliveries,
    ]
    .iter()
    .any(|n| *n >= BATCH);
    Ok(report)
}
