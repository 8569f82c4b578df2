//! SQLite: the sweeper's work. Reports keys that reached their expiry (`key.expired`), ends
//! held keys whose confirmation grace passed (`key.unconfirmed`), and purges finished records, their events and
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

/// A held key whose confirmation grace ended, and the service that held it.
struct Held {
    id: String,
    tenant_id: String,
    label: Option<String>,
    service_id: Option<String>,
    /// `None` once the service is deleted.
    service_name: Option<String>,
}

impl Held {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            key_id: &self.id,
            tenant_id: &self.tenant_id,
            label: self.label.as_deref(),
        }
    }

    fn service(&self) -> Option<(&str, &str)> {
        Some((self.service_id.as_deref()?, self.service_name.as_deref()?))
    }
}

/// Most keys ended per sweep call; the sweeper calls again while a batch comes back full.
pub const BATCH: usize = 1000;

pub fn sweep(
    c: &Connection,
    now: Timestamp,
    retention: Duration,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let now_ms = ms(now);

    // A held key ends with its grace, not with its lifetime: once the grace is over it is
    // `retrieved` (`KeyRecord::status_at`) and reported as not confirmed, never as expired.
    let graces: Vec<Held> = {
        let mut stmt = c
            .prepare_cached(
                "SELECT k.id, k.tenant_id, k.label, k.pending_service_id, s.name
                 FROM keys k LEFT JOIN services s ON s.id = k.pending_service_id
                 WHERE k.state = 'awaiting_confirmation' AND k.confirm_by <= ?1
                 LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![now_ms, BATCH as i64], |r| {
                Ok(Held {
                    id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    label: r.get(2)?,
                    service_id: r.get(3)?,
                    service_name: r.get(4)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    for held in &graces {
        end_key(c, &held.id, KeyState::Retrieved, now)?;
        emit(
            c,
            EventType::Unconfirmed,
            &held.key_ref(),
            held.service(),
            None,
            now,
        )?;
    }
    report.grace_ended = graces.len();

    let expired: Vec<(String, String, Option<String>)> = {
        let mut stmt = c
            .prepare_cached(
                "SELECT id, tenant_id, label FROM keys
                 WHERE ended_at IS NULL AND expires_at <= ?1
                   AND state != 'awaiting_confirmation'
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
