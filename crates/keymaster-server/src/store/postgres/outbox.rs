//! PostgreSQL: the delivery outbox. Deliveries are added by `rows::insert_event` in the event's
//! own transaction; dispatchers on any replica claim due ones with `FOR UPDATE SKIP LOCKED`
//! and a lease, so no two deliver the same row at once.

use std::time::Duration;

use jiff::Timestamp;
use sqlx::{PgConnection, Row};

use super::rows::insert_audit;
use super::{count, db, ms, ts};
use crate::store::outbox::{AttemptResult, Channel, ClaimedDelivery, DeliveryInfo, OutboxStats};
use crate::store::{AuditRecord, StoreError};

/// Adds the deliveries of one event: the key's webhook and e-mail, the tenant's webhook (the
/// same target twice is delivered once).
pub async fn enqueue(
    c: &mut PgConnection,
    event_id: &str,
    key_id: &str,
    tenant_id: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO deliveries (event_id, channel, target, tenant_id, status, next_attempt_at,
                                 created_at)
         SELECT $1, channel, target, $4, 'pending', $2, $2 FROM (
           SELECT 'webhook' AS channel, (notify::jsonb)->>'webhook_url' AS target
             FROM keys WHERE id = $3
           UNION
           SELECT 'email', (notify::jsonb)->>'email' FROM keys WHERE id = $3
           UNION
           SELECT 'webhook', webhook_url FROM tenants WHERE id = $4
         ) t WHERE target IS NOT NULL",
    )
    .bind(event_id)
    .bind(ms(at))
    .bind(key_id)
    .bind(tenant_id)
    .execute(c)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn claim(
    c: &mut PgConnection,
    now: Timestamp,
    lease: Duration,
    limit: u32,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let now_ms = ms(now);
    let until = now_ms + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
    let rows = sqlx::query(
        "WITH due AS (
           SELECT id FROM deliveries
           WHERE status = 'pending' AND next_attempt_at <= $1
             AND (claimed_until IS NULL OR claimed_until <= $1)
           ORDER BY next_attempt_at LIMIT $2
           FOR UPDATE SKIP LOCKED
         )
         UPDATE deliveries d SET claimed_until = $3 FROM due, events e
         WHERE d.id = due.id AND e.id = d.event_id
         RETURNING d.id, d.channel, d.target, d.tenant_id, d.attempts, e.payload",
    )
    .bind(now_ms)
    .bind(i64::from(limit))
    .bind(until)
    .fetch_all(c)
    .await
    .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.try_get(0).map_err(db)?;
        let channel: String = row.try_get(1).map_err(db)?;
        let channel = Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} channel {channel:?}")))?;
        let payload: String = row.try_get(5).map_err(db)?;
        out.push(ClaimedDelivery {
            id,
            channel,
            target: row.try_get(2).map_err(db)?,
            tenant_id: row.try_get(3).map_err(db)?,
            attempts: count(row.try_get(4).map_err(db)?)?,
            event: serde_json::from_str(&payload)
                .map_err(|e| StoreError::Corrupt(format!("event of delivery {id}: {e}")))?,
        });
    }
    Ok(out)
}

pub async fn finish(
    c: &mut PgConnection,
    id: i64,
    result: &AttemptResult,
    now: Timestamp,
) -> Result<(), StoreError> {
    let q = match result {
        AttemptResult::Delivered => sqlx::query(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,
                 claimed_until = NULL, finished_at = $2, last_error = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(ms(now)),
        AttemptResult::Retry { at, error } => sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, claimed_until = NULL,
                 next_attempt_at = $2, last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(ms(*at))
        .bind(error.clone()),
        AttemptResult::Failed { error } => sqlx::query(
            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1,
                 claimed_until = NULL, finished_at = $2, last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(ms(now))
        .bind(error.clone()),
    };
    q.execute(c).await.map_err(db)?;
    Ok(())
}

pub async fn tenant_secrets(
    c: &mut PgConnection,
    tenant_id: &str,
    now: Timestamp,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let row = sqlx::query(
        "SELECT webhook_secret_sealed, previous_secret_sealed, previous_secret_until
         FROM tenants WHERE id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(c)
    .await
    .map_err(db)?;
    let Some(row) = row else {
        return Ok(Vec::new());
    };
    let mut out = vec![row.try_get::<Vec<u8>, _>(0).map_err(db)?];
    let previous: Option<Vec<u8>> = row.try_get(1).map_err(db)?;
    let until: Option<i64> = row.try_get(2).map_err(db)?;
    if let (Some(prev), Some(until)) = (previous, until) {
        if ms(now) < until {
            out.push(prev);
        }
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
) -> Result<Vec<DeliveryInfo>, StoreError> {
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
        out.push(DeliveryInfo {
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
