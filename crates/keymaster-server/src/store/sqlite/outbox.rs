//! SQLite: the delivery outbox. Deliveries are added by `rows::insert_event` in the event's own
//! transaction; the dispatcher claims due ones with a lease and records each attempt.

use std::time::Duration;

use jiff::Timestamp;
use keymaster_core::wire::Event;
use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{event_from_row, event_row_error, insert_audit};
use super::writer::db;
use super::{ms, ts};
use crate::store::outbox::{AttemptResult, Channel, ClaimedDelivery, DeliveryInfo, OutboxStats};
use crate::store::{AuditRecord, StoreError};

/// Adds the deliveries of one event: the key's webhook and e-mail, the tenant's webhook (the
/// same target twice is delivered once). `key_notify` is whether the key has notification
/// targets of its own, when the caller already knows (it has just read or written the key's
/// row); `None` makes this look.
pub fn enqueue(
    c: &Connection,
    event_id: &str,
    key_id: &str,
    tenant_id: &str,
    at: Timestamp,
    key_notify: Option<bool>,
) -> Result<(), StoreError> {
    // Most keys have no notification target and most tenants no webhook: one cheap point read
    // of each then spares the three-way UNION below (and its temporary table) for every event.
    let any_target = match key_notify {
        Some(true) => true,
        Some(false) => c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?1 AND webhook_url IS NOT NULL)",
            )
            .and_then(|mut s| s.query_row(params![tenant_id], |r| r.get(0)))
            .map_err(db)?,
        None => c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM keys WHERE id = ?1 AND notify IS NOT NULL)
                     OR EXISTS (SELECT 1 FROM tenants WHERE id = ?2 AND webhook_url IS NOT NULL)",
            )
            .and_then(|mut s| s.query_row(params![key_id, tenant_id], |r| r.get(0)))
            .map_err(db)?,
    };
    if !any_target {
        return Ok(());
    }
    c.prepare_cached(
        "INSERT INTO deliveries (event_id, channel, target, tenant_id, status, next_attempt_at,
                                 created_at)
         SELECT ?1, channel, target, ?4, 'pending', ?2, ?2 FROM (
           SELECT 'webhook' AS channel, json_extract(notify, '$.webhook_url') AS target
             FROM keys WHERE id = ?3
           UNION
           SELECT 'email', json_extract(notify, '$.email') FROM keys WHERE id = ?3
           UNION
           SELECT 'webhook', webhook_url FROM tenants WHERE id = ?4
         ) WHERE target IS NOT NULL",
    )
    .and_then(|mut s| s.execute(params![event_id, ms(at), key_id, tenant_id]))
    .map_err(db)?;
    Ok(())
}

pub fn claim(
    c: &Connection,
    now: Timestamp,
    lease: Duration,
    limit: u32,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let now_ms = ms(now);
    let rows: Vec<(i64, String, String, String, u32, Event)> = {
        let mut stmt = c
            .prepare_cached(
                "SELECT d.id, d.channel, d.target, d.tenant_id, d.attempts,
                        e.id, e.type, e.at, e.key_id, e.tenant_id, e.payload
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE d.status = 'pending' AND d.next_attempt_at <= ?1
                   AND (d.claimed_until IS NULL OR d.claimed_until <= ?1)
                 ORDER BY d.next_attempt_at LIMIT ?2",
            )
            .map_err(db)?;
        let it = stmt
            .query_map(params![now_ms, limit], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    event_from_row(r, 5)?,
                ))
            })
            .map_err(db)?;
        it.collect::<Result<_, _>>().map_err(event_row_error)?
    };
    let until = now_ms + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
    let mut out = Vec::with_capacity(rows.len());
    for (id, channel, target, tenant_id, attempts, event) in rows {
        c.prepare_cached("UPDATE deliveries SET claimed_until = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, until]))
            .map_err(db)?;
        let channel = Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} channel {channel:?}")))?;
        out.push(ClaimedDelivery {
            id,
            channel,
            target,
            tenant_id,
            attempts,
            event,
        });
    }
    Ok(out)
}

pub fn finish(
    c: &Connection,
    id: i64,
    result: &AttemptResult,
    now: Timestamp,
) -> Result<(), StoreError> {
    let now_ms = ms(now);
    match result {
        AttemptResult::Delivered => c.execute(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,
                 claimed_until = NULL, finished_at = ?2, last_error = NULL WHERE id = ?1",
            params![id, now_ms],
        ),
        AttemptResult::Retry { at, error } => c.execute(
            "UPDATE deliveries SET attempts = attempts + 1, claimed_until = NULL,
                 next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
            params![id, ms(*at), error],
        ),
        AttemptResult::Failed { error } => c.execute(
            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1,
                 claimed_until = NULL, finished_at = ?2, last_error = ?3 WHERE id = ?1",
            params![id, now_ms, error],
        ),
    }
    .map_err(db)?;
    Ok(())
}

pub fn tenant_secrets(
    c: &Connection,
    tenant_id: &str,
    now: Timestamp,
) -> Result<Vec<Vec<u8>>, StoreError> {
    type Secrets = (Vec<u8>, Option<Vec<u8>>, Option<i64>);
    let row: Option<Secrets> = c
        .prepare_cached(
            "SELECT webhook_secret_sealed, previous_secret_sealed, previous_secret_until
             FROM tenants WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row(params![tenant_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(db)?;
    let Some((current, previous, until)) = row else {
        return Ok(Vec::new());
    };
    let mut out = vec![current];
    if let (Some(prev), Some(until)) = (previous, until) {
        if ms(now) < until {
            out.push(prev);
        }
    }
    Ok(out)
}

pub fn rotate(
    c: &Connection,
    tenant_id: &str,
    new_sealed: &[u8],
    previous_until: Timestamp,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let n = c
        .execute(
            "UPDATE tenants SET previous_secret_sealed = webhook_secret_sealed,
                 previous_secret_until = ?3, webhook_secret_sealed = ?2 WHERE id = ?1",
            params![tenant_id, new_sealed, ms(previous_until)],
        )
        .map_err(db)?;
    if n == 1 {
        insert_audit(c, a)?;
    }
    Ok(n == 1)
}

pub fn list(c: &Connection, status: &str, limit: u32) -> Result<Vec<DeliveryInfo>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT d.id, d.event_id, e.type, e.key_id, d.tenant_id, d.channel, d.target,
                    d.status, d.attempts, d.last_error, d.created_at
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.status = ?1 ORDER BY d.id DESC LIMIT ?2",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![status, limit], |r| {
            Ok((
                DeliveryInfo {
                    id: r.get(0)?,
                    event_id: r.get(1)?,
                    event_type: r.get(2)?,
                    key_id: r.get(3)?,
                    tenant_id: r.get(4)?,
                    channel: r.get(5)?,
                    target: r.get(6)?,
                    status: r.get(7)?,
                    attempts: r.get(8)?,
                    last_error: r.get(9)?,
                    created_at: Timestamp::UNIX_EPOCH,
                },
                r.get::<_, i64>(10)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut info, created) = row.map_err(db)?;
        info.created_at = ts(created)?;
        out.push(info);
    }
    Ok(out)
}

pub fn stats(c: &Connection, now: Timestamp) -> Result<OutboxStats, StoreError> {
    let (pending, oldest): (i64, Option<i64>) = c
        .query_row(
            "SELECT count(*), min(created_at) FROM deliveries WHERE status = 'pending'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db)?;
    Ok(OutboxStats {
        pending: pending.max(0) as u64,
        oldest_age_seconds: oldest
            .map(|o| ((ms(now) - o).max(0) as f64) / 1000.0)
            .unwrap_or(0.0),
    })
}
