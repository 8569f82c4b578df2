//! PostgreSQL: enrolment requests (the service asks, the device answers): storing a request,
//! finding it by code against the app key's failure budget (its row locked, exact across
//! replicas), the deposit that answers it (the request's row locked, so that two answers
//! serialise and one of them is `request_fulfilled`), the service's reads, and the sweeper's
//! expiry and purge of requests.

use std::time::Duration;

use jiff::Timestamp;
use sqlx::PgConnection;

use super::keys::deposit_with_event;
use super::rows::{budget_spent, insert_audit, insert_coalesced_audit, record_failure};
use super::sweep::sweep_batch;
use super::{db, is_unique_violation, ms};
use crate::store::requests::{
    budget_subject, decide_lookup, AnswerOutcome, NewRequest, RawFound, RecordRow, RequestLookup,
    RequestRecord, ANSWER_REASON, RECORD_COLUMNS,
};
use crate::store::{AppKeyAuth, AuditRecord, NewKey, StoreError};

pub async fn create(
    c: &mut PgConnection,
    r: &NewRequest,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO requests (id, service_id, code_hash, code_format, label, state,
             created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)
         ON CONFLICT DO NOTHING",
    )
    .bind(&r.id)
    .bind(&r.service_id)
    .bind(&r.code_hash)
    .bind(crate::store::columns::format_name(r.code_format))
    .bind(&r.label)
    .bind(ms(r.created_at))
    .bind(ms(r.expires_at))
    .execute(&mut *c)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Db("unexpected unique violation".into())
        } else {
            db(e)
        }
    })?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    insert_audit(c, a).await?;
    Ok(true)
}

type FoundRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    Option<String>,
);

pub async fn lookup(
    c: &mut PgConnection,
    code_hashes: &[Vec<u8>],
    app: &AppKeyAuth,
    now: Timestamp,
    budget_per_minute: u32,
    fulfilled_is_failure: bool,
    audit: &AuditRecord,
) -> Result<RequestLookup, StoreError> {
    let subject = budget_subject(&app.id);
    if let Some(retry) = budget_spent(c, &subject, now, budget_per_minute).await? {
        let mut a = audit.clone();
        a.outcome = "rate_limited".into();
        insert_coalesced_audit(c, &a).await?;
        return Ok(RequestLookup::RateLimited(retry));
    }
    let mut row: Option<FoundRow> = None;
    for code_hash in code_hashes {
        row = sqlx::query_as(
            "SELECT r.id, r.service_id, s.name, s.domains, r.label, r.expires_at, r.state,
                    s.confined_tenant_id
             FROM requests r JOIN services s ON s.id = r.service_id
             WHERE r.code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        if row.is_some() {
            break;
        }
    }
    let raw = row.map(RawFound::read).transpose()?;
    let (outcome, failed) = decide_lookup(raw, &app.tenant_id, now, fulfilled_is_failure);
    if failed {
        record_failure(c, &subject, now).await?;
        let mut a = audit.clone();
        a.outcome = "not_found".into();
        insert_coalesced_audit(c, &a).await?;
    }
    Ok(outcome)
}

pub async fn answer(
    c: &mut PgConnection,
    request_id: &str,
    service: (&str, &str),
    key: &NewKey,
    a: &AuditRecord,
) -> Result<AnswerOutcome, StoreError> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT state, expires_at FROM requests WHERE id = $1 FOR UPDATE")
            .bind(request_id)
            .fetch_optional(&mut *c)
            .await
            .map_err(db)?;
    match row {
        Some((state, _)) if state == "fulfilled" => return Ok(AnswerOutcome::Fulfilled),
        Some((state, expires_at)) if state == "pending" && ms(key.created_at) < expires_at => {}
        _ => return Ok(AnswerOutcome::NotFound),
    }
    if !deposit_with_event(c, key, a, Some(service), Some(ANSWER_REASON)).await? {
        return Err(StoreError::Db(
            "the code hash of a request's key is taken".into(),
        ));
    }
    sqlx::query(
        "UPDATE requests SET state = 'fulfilled', ended_at = $2, key_id = $3 WHERE id = $1",
    )
    .bind(request_id)
    .bind(ms(key.created_at))
    .bind(&key.id)
    .execute(&mut *c)
    .await
    .map_err(db)?;
    Ok(AnswerOutcome::Done)
}

pub async fn for_service(
    c: &mut PgConnection,
    id: &str,
    service_id: &str,
) -> Result<Option<RequestRecord>, StoreError> {
    let row: Option<RecordRow> = sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM requests WHERE id = $1 AND service_id = $2"
    ))
    .bind(id)
    .bind(service_id)
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    row.map(RequestRecord::read).transpose()
}

pub async fn mark_read(
    c: &mut PgConnection,
    id: &str,
    retrieval_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE requests SET retrieval_id = $2 WHERE id = $1 AND retrieval_id IS NULL")
        .bind(id)
        .bind(retrieval_id)
        .execute(c)
        .await
        .map_err(db)?;
    Ok(())
}

/// Marks pending requests past their expiry `expired` and removes requests that ended before
/// the retention period. Batches are taken with `SKIP LOCKED`, as the key sweep's are. Returns
/// Pending requests past their expiry `$1`, at most `$2`, expired.
pub(super) const EXPIRE_REQUESTS: &str =
    "UPDATE requests SET state = 'expired', ended_at = expires_at WHERE id IN
       (SELECT id FROM requests WHERE state = 'pending' AND expires_at <= $1
        LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// Ended requests past the horizon `$1`, at most `$2`, deleted.
pub(super) const PURGE_REQUESTS: &str = "DELETE FROM requests WHERE id IN
       (SELECT id FROM requests WHERE ended_at IS NOT NULL AND ended_at < $1
        LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// (expired, purged).
pub async fn sweep(
    c: &mut PgConnection,
    now: Timestamp,
    retention: Duration,
) -> Result<(usize, usize), StoreError> {
    let now_ms = ms(now);
    let expired = sweep_batch(c, EXPIRE_REQUESTS, now_ms).await?;
    let horizon = now_ms - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let purged = sweep_batch(c, PURGE_REQUESTS, horizon).await?;
    Ok((expired, purged))
}
