//! PostgreSQL: the delivery outbox. Deliveries are added with their event, in the event's own
//! transaction (`rows::insert_event`) or statement (`cte::events_ctes`); dispatchers on any
//! replica claim due ones with `FOR UPDATE SKIP LOCKED` and a short lease that they renew while
//! the delivery is in flight, so no two deliver the same row at once and a replica that dies
//! holds its rows for seconds only. The attempts of a batch are recorded with one statement.

use jiff::Timestamp;
use sqlx::{PgConnection, Row};

use super::rows::insert_audit;
use super::{count, db, ms, ts};
use crate::store::events::read_event;
use crate::store::outbox::{
    AttemptResult, Channel, ClaimRequest, ClaimedDelivery, DeliveryRecord, EndpointBacklog,
    OutboxStats,
};
use crate::store::{AuditRecord, StoreError};

/// The targets of a key's events, from a row `k` with the key's `notify` and `tenant_id`: the
/// key's webhook and e-mail, the tenant's webhook (the same target twice is delivered once).
pub const TARGETS_SQL: &str = "SELECT DISTINCT channel, target FROM (VALUES
       ('webhook', (k.notify::jsonb)->>'webhook_url'),
       ('email', (k.notify::jsonb)->>'email'),
       ('webhook', (SELECT webhook_url FROM tenants WHERE id = k.tenant_id))
     ) AS v(channel, target) WHERE target IS NOT NULL";

/// The endpoint of a target `t` (`channel`, `target`): `smtp` for e-mail, else the URL's
/// scheme and authority, lower-cased (`store::outbox` queues and pauses per endpoint).
pub const ENDPOINT_SQL: &str = "CASE t.channel WHEN 'email' THEN 'smtp'
       ELSE lower(coalesce(substring(t.target from '^[^:/?#]+://[^/?#]*'), t.target)) END";

/// Adds the deliveries of one event of the key `key_id` ([`TARGETS_SQL`]).
pub async fn enqueue(
    c: &mut PgConnection,
    event_id: &str,
    key_id: &str,
    tenant_id: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO deliveries (event_id, channel, target, tenant_id, status, next_attempt_at,
                                 created_at, endpoint)
         SELECT $1, t.channel, t.target, $4, 'pending', $2, $2, {ENDPOINT_SQL}
         FROM keys k, LATERAL ({TARGETS_SQL}) t WHERE k.id = $3"
    ))
    .bind(event_id)
    .bind(ms(at))
    .bind(key_id)
    .bind(tenant_id)
    .execute(c)
    .await
    .map_err(db)?;
    Ok(())
}

/// Claims due deliveries, oldest first, at most `req.room_for(endpoint)` of each endpoint, and
/// skipping endpoints without room: one endpoint's backlog cannot fill the claim.
pub async fn claim(
    c: &mut PgConnection,
    req: &ClaimRequest,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let now_ms = ms(req.now);
    let until = now_ms + i64::try_from(req.lease.as_millis()).unwrap_or(i64::MAX / 2);
    let (room_endpoints, room): (Vec<String>, Vec<i64>) = req
        .room
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(e, n)| (e.clone(), i64::from(*n)))
        .unzip();
    // The due rows are ranked per endpoint without locks; only those picked are then locked
    // (skipping rows another replica is claiming, and rechecking the lease on the row's latest
    // version) and leased.
    let rows = sqlx::query(
        "WITH due AS (
           SELECT id, endpoint, next_attempt_at FROM deliveries
           WHERE status = 'pending' AND next_attempt_at <= $1
             AND (claimed_until IS NULL OR claimed_until <= $1)
             AND endpoint <> ALL($4::text[])
           ORDER BY next_attempt_at LIMIT $2 * 4
         ), ranked AS (
           SELECT id, endpoint, next_attempt_at,
                  row_number() OVER (PARTITION BY endpoint ORDER BY next_attempt_at, id) AS n
           FROM due
         ), pick AS (
           SELECT r.id FROM ranked r
             LEFT JOIN unnest($5::text[], $6::bigint[]) AS room(endpoint, n)
               ON room.endpoint = r.endpoint
           WHERE r.n <= coalesce(room.n, $7)
           ORDER BY r.next_attempt_at LIMIT $2
         ), locked AS (
           SELECT d.id FROM deliveries d JOIN pick ON pick.id = d.id
           WHERE d.status = 'pending' AND (d.claimed_until IS NULL OR d.claimed_until <= $1)
           FOR UPDATE OF d SKIP LOCKED
         ), claimed AS (
           UPDATE deliveries d SET claimed_until = $3 FROM locked WHERE d.id = locked.id
           RETURNING d.id, d.channel, d.target, d.endpoint, d.tenant_id, d.attempts, d.event_id
         )
         SELECT claimed.id, claimed.channel, claimed.target, claimed.endpoint, claimed.tenant_id,
                claimed.attempts, t.webhook_secret_sealed, t.previous_secret_sealed,
                t.previous_secret_until, e.id, e.type, e.at, e.key_id, e.tenant_id, e.payload
         FROM claimed JOIN events e ON e.id = claimed.event_id
              LEFT JOIN tenants t ON t.id = claimed.tenant_id",
    )
    .bind(now_ms)
    .bind(i64::from(req.limit))
    .bind(until)
    .bind(req.skipped())
    .bind(room_endpoints)
    .bind(room)
    .bind(i64::from(req.per_endpoint))
    .fetch_all(c)
    .await
    .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.try_get(0).map_err(db)?;
        let channel: String = row.try_get(1).map_err(db)?;
        let channel = Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} channel {channel:?}")))?;
        let current: Option<Vec<u8>> = row.try_get(6).map_err(db)?;
        let previous: Option<Vec<u8>> = row.try_get(7).map_err(db)?;
        let previous_until: Option<i64> = row.try_get(8).map_err(db)?;
        let mut secrets: Vec<Vec<u8>> = current.into_iter().collect();
        if let (Some(prev), Some(until), false) = (previous, previous_until, secrets.is_empty()) {
            if now_ms < until {
                secrets.push(prev);
            }
        }
        out.push(ClaimedDelivery {
            id,
            channel,
            target: row.try_get(2).map_err(db)?,
            endpoint: row.try_get(3).map_err(db)?,
            tenant_id: row.try_get(4).map_err(db)?,
            attempts: count(row.try_get(5).map_err(db)?)?,
            // The columns of `EVENT_COLUMNS`, from 9 on.
            event: read_event(&row, 9)?,
            secrets,
        });
    }
    Ok(out)
}

/// Records how the attempts of a batch ended, in one statement. A delivery already finished
/// stays as it is (its lease ran out and another attempt ended first).
pub async fn finish(
    c: &mut PgConnection,
    results: &[(i64, AttemptResult)],
    now: Timestamp,
) -> Result<(), StoreError> {
    let n = results.len();
    let (mut ids, mut statuses, mut counted, mut next, mut errors, mut finished) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, result) in results {
        let (status, count, at, error, done): (&str, i64, Option<i64>, Option<String>, _) =
            match result {
                AttemptResult::Delivered => ("delivered", 1, None, None, Some(ms(now))),
                AttemptResult::Retry { at, error } => {
                    ("pending", 1, Some(ms(*at)), Some(error.clone()), None)
                }
                AttemptResult::Failed { error } => {
                    ("failed", 1, None, Some(error.clone()), Some(ms(now)))
                }
                AttemptResult::Postponed { at } => ("pending", 0, Some(ms(*at)), None, None),
            };
        ids.push(*id);
        statuses.push(status);
        counted.push(count);
        next.push(at);
        errors.push(error);
        finished.push(done);
    }
    // A postponed delivery was not attempted: its attempts and last error stay.
    sqlx::query(
        "UPDATE deliveries d SET status = u.status, attempts = d.attempts + u.counted,
             claimed_until = NULL, next_attempt_at = coalesce(u.next, d.next_attempt_at),
             last_error = CASE WHEN u.counted = 0 THEN d.last_error ELSE u.error END,
             finished_at = u.finished
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                     $6::bigint[]) AS u(id, status, counted, next, error, finished)
         WHERE d.id = u.id AND d.status = 'pending'",
    )
    .bind(ids)
    .bind(statuses)
    .bind(counted)
    .bind(next)
    .bind(errors)
    .bind(finished)
    .execute(c)
    .await
    .map_err(db)?;
    Ok(())
}

/// Extends the lease of deliveries still in flight (not those already recorded).
pub async fn renew(c: &mut PgConnection, ids: &[i64], until: Timestamp) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE deliveries SET claimed_until = $2
         WHERE id = ANY($1) AND status = 'pending' AND claimed_until IS NOT NULL",
    )
    .bind(ids)
    .bind(ms(until))
    .execute(c)
    .await
    .map_err(db)?;
    Ok(())
}

/// Pauses an endpoint: its unclaimed pending deliveries are due at `until` at the earliest.
pub async fn pause(
    c: &mut PgConnection,
    endpoint: &str,
    until: Timestamp,
    now: Timestamp,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE deliveries SET next_attempt_at = $2
         WHERE status = 'pending' AND next_attempt_at < $2 AND endpoint = $1
           AND (claimed_until IS NULL OR claimed_until <= $3)",
    )
    .bind(endpoint)
    .bind(ms(until))
    .bind(ms(now))
    .execute(c)
    .await
    .map_err(db)?
    .rows_affected())
}

/// The endpoints with the most pending deliveries.
pub async fn backlog(c: &mut PgConnection, limit: u32) -> Result<Vec<EndpointBacklog>, StoreError> {
    let rows = sqlx::query(
        "SELECT endpoint, count(*), min(created_at) FROM deliveries
         WHERE status = 'pending' GROUP BY endpoint ORDER BY count(*) DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(c)
    .await
    .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let pending: i64 = row.try_get(1).map_err(db)?;
        out.push(EndpointBacklog {
            endpoint: row.try_get(0).map_err(db)?,
            pending: pending.max(0) as u64,
            oldest: ts(row.try_get(2).map_err(db)?)?,
        });
    }
    Ok(out)
}

pub async fn rotate(
    c: &mut PgConnection,
    tenant_id: &str,
    new_sealed: &[u8],
    previous_until: Timestamp,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE tenants SET previous_secret_sealed = webhook_secret_sealed,
             previous_secret_until = $3, webhook_secret_sealed = $2 WHERE id = $1",
    )
    .bind(tenant_id)
    .bind(new_sealed)
    .bind(ms(previous_until))
    .execute(&mut *c)
    .await
    .map_err(db)?
    .rows_affected();
    if n == 1 {
        insert_audit(c, a).await?;
    }
    Ok(n == 1)
}

pub async fn list(
    c: &mut PgConnection,
    status: &str,
    limit: u32,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT d.id, d.event_id, e.type, e.key_id, d.tenant_id, d.channel, d.target,
                d.status, d.attempts, d.last_error, d.created_at
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.status = $1 ORDER BY d.id DESC LIMIT $2",
    )
    .bind(status)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await
    .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(DeliveryRecord {
            id: row.try_get(0).map_err(db)?,
            event_id: row.try_get(1).map_err(db)?,
            event_type: row.try_get(2).map_err(db)?,
            key_id: row.try_get(3).map_err(db)?,
            tenant_id: row.try_get(4).map_err(db)?,
            channel: row.try_get(5).map_err(db)?,
            target: row.try_get(6).map_err(db)?,
            status: row.try_get(7).map_err(db)?,
            attempts: count(row.try_get(8).map_err(db)?)?,
            last_error: row.try_get(9).map_err(db)?,
            created_at: ts(row.try_get(10).map_err(db)?)?,
        });
    }
    Ok(out)
}

pub async fn stats(c: &mut PgConnection, now: Timestamp) -> Result<OutboxStats, StoreError> {
    let row =
        sqlx::query("SELECT count(*), min(created_at) FROM deliveries WHERE status = 'pending'")
            .fetch_one(c)
            .await
            .map_err(db)?;
    let pending: i64 = row.try_get(0).map_err(db)?;
    let oldest: Option<i64> = row.try_get(1).map_err(db)?;
    Ok(OutboxStats {
        pending: pending.max(0) as u64,
        oldest_age_seconds: oldest
            .map(|o| ((ms(now) - o).max(0) as f64) / 1000.0)
            .unwrap_or(0.0),
    })
}
