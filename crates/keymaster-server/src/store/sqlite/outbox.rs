//! SQLite: the delivery outbox. Deliveries are added by `rows::insert_event` in the event's own
//! transaction; the dispatcher claims due ones with a lease (a fair share per endpoint), renews
//! the lease while they are in flight, and records the attempts of a batch in one job.

use jiff::Timestamp;
use keymaster_core::wire::Event;
use rusqlite::{params, Connection};

use super::rows::{event_from_row, event_row_error, insert_audit};
use super::tx::Tx;
use super::writer::db;
use super::{ms, ts};
use crate::store::outbox::{
    AttemptResult, Channel, ClaimRequest, ClaimedDelivery, DeliveryRecord, EndpointBacklog,
    OutboxStats,
};
use crate::store::{AuditRecord, StoreError};

/// Adds the deliveries of one event: the key's webhook and e-mail, the tenant's webhook (the
/// same target twice is delivered once). `key_notify` is whether the key has notification
/// targets of its own, when the caller already knows (it has just read or written the key's
/// row); `None` makes this look.
pub fn enqueue(
    c: &Tx<'_>,
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
            .cached(
                "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?1 AND webhook_url IS NOT NULL)",
                |s| s.query_row(params![tenant_id], |r| r.get(0)),
            )
            .map_err(db)?,
        None => c
            .cached(
                "SELECT EXISTS (SELECT 1 FROM keys WHERE id = ?1 AND notify IS NOT NULL)
                     OR EXISTS (SELECT 1 FROM tenants WHERE id = ?2 AND webhook_url IS NOT NULL)",
                |s| s.query_row(params![key_id, tenant_id], |r| r.get(0)),
            )
            .map_err(db)?,
    };
    if !any_target {
        return Ok(());
    }
    // The endpoint: `smtp`, or the URL's scheme and authority, lower-cased (the same expression
    // as in migration 0007).
    c.cached(
        "INSERT INTO deliveries (event_id, channel, target, tenant_id, status, next_attempt_at,
                                 created_at, endpoint)
         SELECT ?1, channel, target, ?4, 'pending', ?2, ?2, CASE channel WHEN 'email' THEN 'smtp'
           ELSE lower(substr(target, 1, instr(target, '://') + 2) ||
                substr(substr(target, instr(target, '://') + 3), 1,
                  instr(replace(replace(substr(target, instr(target, '://') + 3), '?', '/'),
                                '#', '/') || '/', '/') - 1)) END
         FROM (
           SELECT 'webhook' AS channel, json_extract(notify, '$.webhook_url') AS target
             FROM keys WHERE id = ?3
           UNION
           SELECT 'email', json_extract(notify, '$.email') FROM keys WHERE id = ?3
           UNION
           SELECT 'webhook', webhook_url FROM tenants WHERE id = ?4
         ) WHERE target IS NOT NULL",
        |s| s.execute(params![event_id, ms(at), key_id, tenant_id]),
    )
    .map_err(db)?;
    Ok(())
}

/// Claims due deliveries, oldest first, at most `req.room_for(endpoint)` of each endpoint, and
/// skipping endpoints without room: one endpoint's backlog cannot fill the claim.
pub fn claim(c: &Connection, req: &ClaimRequest) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let now_ms = ms(req.now);
    let skipped = serde_json::to_string(&req.skipped())
        .map_err(|e| StoreError::Db(format!("skipped endpoints: {e}")))?;
    // First the ids and endpoints alone (from the index `deliveries_due`): rows beyond an
    // endpoint's room are passed over, and reading a few times the limit lets the other
    // endpoints' rows in the same window be taken.
    let due: Vec<(i64, String)> = {
        let mut stmt = c
            .prepare_cached(
                "SELECT id, endpoint FROM deliveries
                 WHERE status = 'pending' AND next_attempt_at <= ?1
                   AND (claimed_until IS NULL OR claimed_until <= ?1)
                   AND endpoint NOT IN (SELECT value FROM json_each(?3))
                 ORDER BY next_attempt_at LIMIT +?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![now_ms, req.limit.saturating_mul(4), skipped], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    let until = now_ms + i64::try_from(req.lease.as_millis()).unwrap_or(i64::MAX / 2);
    let mut taken: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (id, endpoint) in due {
        if out.len() >= req.limit as usize {
            break;
        }
        let n = taken.entry(endpoint.clone()).or_default();
        if *n >= req.room_for(&endpoint) {
            continue;
        }
        *n += 1;
        c.prepare_cached("UPDATE deliveries SET claimed_until = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, until]))
            .map_err(db)?;
        let (channel, target, tenant_id, attempts, event, secrets): (
            String,
            String,
            String,
            u32,
            Event,
            Option<Secrets>,
        ) = c
            .prepare_cached(
                "SELECT d.channel, d.target, d.tenant_id, d.attempts,
                        e.id, e.type, e.at, e.key_id, e.tenant_id, e.payload,
                        t.webhook_secret_sealed, t.previous_secret_sealed, t.previous_secret_until
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                      LEFT JOIN tenants t ON t.id = d.tenant_id
                 WHERE d.id = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![id], |r| {
                    let current: Option<Vec<u8>> = r.get(10)?;
                    let (previous, until) = (r.get(11)?, r.get(12)?);
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        event_from_row(r, 4)?,
                        current.map(|cur| (cur, previous, until)),
                    ))
                })
            })
            .map_err(event_row_error)?;
        let channel = Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} channel {channel:?}")))?;
        out.push(ClaimedDelivery {
            id,
            channel,
            target,
            endpoint,
            tenant_id,
            attempts,
            event,
            secrets: secrets
                .map(|s| signing_secrets(s, req.now))
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// A tenant's sealed secrets: current, previous, until when the previous one signs.
type Secrets = (Vec<u8>, Option<Vec<u8>>, Option<i64>);

/// The secrets of `s` that sign at `now`.
fn signing_secrets((current, previous, until): Secrets, now: Timestamp) -> Vec<Vec<u8>> {
    let mut out = vec![current];
    if let (Some(prev), Some(until)) = (previous, until) {
        if ms(now) < until {
            out.push(prev);
        }
    }
    out
}

/// Records how the attempts of a batch ended (one writer job, so one commit for all of them).
/// A delivery already finished stays as it is (its lease ran out and another attempt ended
/// first).
pub fn finish(
    c: &Connection,
    results: &[(i64, AttemptResult)],
    now: Timestamp,
) -> Result<(), StoreError> {
    let now_ms = ms(now);
    for (id, result) in results {
        let (sql, at, error): (&str, i64, Option<&str>) = match result {
            AttemptResult::Delivered => (
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,
                     claimed_until = NULL, finished_at = ?2, last_error = ?3
                 WHERE id = ?1 AND status = 'pending'",
                now_ms,
                None,
            ),
            AttemptResult::Retry { at, error } => (
                "UPDATE deliveries SET attempts = attempts + 1, claimed_until = NULL,
                     next_attempt_at = ?2, last_error = ?3
                 WHERE id = ?1 AND status = 'pending'",
                ms(*at),
                Some(error),
            ),
            AttemptResult::Failed { error } => (
                "UPDATE deliveries SET status = 'failed', attempts = attempts + 1,
                     claimed_until = NULL, finished_at = ?2, last_error = ?3
                 WHERE id = ?1 AND status = 'pending'",
                now_ms,
                Some(error),
            ),
            AttemptResult::Postponed { at } => (
                "UPDATE deliveries SET claimed_until = NULL, next_attempt_at = ?2,
                     last_error = coalesce(?3, last_error)
                 WHERE id = ?1 AND status = 'pending'",
                ms(*at),
                None,
            ),
        };
        c.prepare_cached(sql)
            .and_then(|mut s| s.execute(params![id, at, error]))
            .map_err(db)?;
    }
    Ok(())
}

/// Extends the lease of deliveries still in flight (not those already recorded).
pub fn renew(c: &Connection, ids: &[i64], until: Timestamp) -> Result<(), StoreError> {
    let mut stmt = c
        .prepare_cached(
            "UPDATE deliveries SET claimed_until = ?2
             WHERE id = ?1 AND status = 'pending' AND claimed_until IS NOT NULL",
        )
        .map_err(db)?;
    for id in ids {
        stmt.execute(params![id, ms(until)]).map_err(db)?;
    }
    Ok(())
}

/// Drops every lease. Only at start: one process owns a SQLite database (`lock_owner`), so a
/// lease that exists then was held by a process that is gone.
pub fn release_all(c: &Connection) -> Result<usize, StoreError> {
    c.execute(
        "UPDATE deliveries SET claimed_until = NULL
         WHERE status = 'pending' AND claimed_until IS NOT NULL",
        [],
    )
    .map_err(db)
}

/// Pauses an endpoint: its unclaimed pending deliveries are due at `until` at the earliest.
pub fn pause(
    c: &Connection,
    endpoint: &str,
    until: Timestamp,
    now: Timestamp,
) -> Result<usize, StoreError> {
    c.prepare_cached(
        "UPDATE deliveries SET next_attempt_at = ?2
         WHERE status = 'pending' AND next_attempt_at < ?2 AND endpoint = ?1
           AND (claimed_until IS NULL OR claimed_until <= ?3)",
    )
    .and_then(|mut s| s.execute(params![endpoint, ms(until), ms(now)]))
    .map_err(db)
}

/// The endpoints with the most pending deliveries.
pub fn backlog(c: &Connection, limit: u32) -> Result<Vec<EndpointBacklog>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT endpoint, count(*), min(created_at) FROM deliveries
             WHERE status = 'pending' GROUP BY endpoint ORDER BY count(*) DESC LIMIT +?1",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (endpoint, pending, oldest) = row.map_err(db)?;
        out.push(EndpointBacklog {
            endpoint,
            pending: pending.max(0) as u64,
            oldest: ts(oldest)?,
        });
    }
    Ok(out)
}

pub fn rotate(
    c: &Tx<'_>,
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

pub fn list(c: &Connection, status: &str, limit: u32) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT d.id, d.event_id, e.type, e.key_id, d.tenant_id, d.channel, d.target,
                    d.status, d.attempts, d.last_error, d.created_at
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.status = ?1 ORDER BY d.id DESC LIMIT +?2",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![status, limit], |r| {
            Ok((
                DeliveryRecord {
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
