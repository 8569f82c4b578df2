//! SQLite: enrolment requests (the service asks, the device answers): storing a request,
//! finding it by code against the app key's failure budget, the deposit that answers it, the
//! service's reads, and the sweeper's expiry and purge of requests.

use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::keys::{self, DepositJson};
use super::rows::{budget_spent, insert_audit, insert_coalesced_audit, record_failure};
use crate::store::SweepReport;

const BATCH: usize = SweepReport::BATCH;
use super::ms;
use super::tx::Tx;
use super::writer::db;
use crate::store::requests::{
    budget_subject, decide_lookup, AnswerOutcome, NewRequest, RawFound, RecordRow, RequestLookup,
    RequestRecord, RECORD_COLUMNS,
};
use crate::store::{AppKeyAuth, AuditRecord, NewKey, StoreError};

pub fn create(c: &Tx<'_>, r: &NewRequest, a: &AuditRecord) -> Result<bool, StoreError> {
    let inserted = c
        .prepare_cached(
            "INSERT INTO requests (id, service_id, code_hash, code_format, label, state,
                 created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                r.id,
                r.service_id,
                r.code_hash,
                crate::store::columns::format_name(r.code_format),
                r.label,
                ms(r.created_at),
                ms(r.expires_at),
            ])
        });
    match inserted {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::ConstraintViolation => {
            return Ok(false)
        }
        Err(e) => return Err(db(e)),
    }
    insert_audit(c, a)?;
    Ok(true)
}

pub fn lookup(
    c: &Tx<'_>,
    code_hashes: &[Vec<u8>],
    app: &AppKeyAuth,
    now: Timestamp,
    budget_per_minute: u32,
    fulfilled_is_failure: bool,
    audit: &AuditRecord,
) -> Result<RequestLookup, StoreError> {
    let subject = budget_subject(&app.id);
    if let Some(retry) = budget_spent(c, &subject, now, budget_per_minute)? {
        let mut a = audit.clone();
        a.outcome = "rate_limited".into();
        insert_coalesced_audit(c, &a)?;
        return Ok(RequestLookup::RateLimited(retry));
    }
    type Row = (
        String,
        String,
        String,
        String,
        Option<String>,
        i64,
        String,
        Option<String>,
    );
    let mut row: Option<Row> = None;
    for code_hash in code_hashes {
        let found: Option<Row> = c
            .prepare_cached(
                "SELECT r.id, r.service_id, s.name, s.domains, r.label, r.expires_at, r.state,
                    s.confined_tenant_id
                 FROM requests r JOIN services s ON s.id = r.service_id
                 WHERE r.code_hash = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![code_hash], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                })
                .optional()
            })
            .map_err(db)?;
        if found.is_some() {
            row = found;
            break;
        }
    }
    let raw = row.map(RawFound::read).transpose()?;
    let (outcome, failed) = decide_lookup(raw, &app.tenant_id, now, fulfilled_is_failure);
    if failed {
        record_failure(c, &subject, now)?;
        let mut a = audit.clone();
        a.outcome = "not_found".into();
        insert_coalesced_audit(c, &a)?;
    }
    Ok(outcome)
}

pub fn answer(
    c: &Tx<'_>,
    request_id: &str,
    key: &NewKey,
    json: &DepositJson,
    a: &AuditRecord,
) -> Result<AnswerOutcome, StoreError> {
    let row: Option<(String, i64)> = c
        .prepare_cached("SELECT state, expires_at FROM requests WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row(params![request_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db)?;
    match row {
        Some((state, _)) if state == "fulfilled" => return Ok(AnswerOutcome::Fulfilled),
        Some((state, expires_at)) if state == "pending" && ms(key.created_at) < expires_at => {}
        _ => return Ok(AnswerOutcome::NotFound),
    }
    if !keys::deposit(c, key, json, a)? {
        return Err(StoreError::Db(
            "the code hash of a request's key is taken".into(),
        ));
    }
    c.prepare_cached(
        "UPDATE requests SET state = 'fulfilled', ended_at = ?2, key_id = ?3 WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![request_id, ms(key.created_at), key.id]))
    .map_err(db)?;
    Ok(AnswerOutcome::Done)
}

pub fn for_service(
    c: &Connection,
    id: &str,
    service_id: &str,
) -> Result<Option<RequestRecord>, StoreError> {
    let row: Option<RecordRow> = c
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM requests WHERE id = ?1 AND service_id = ?2"
        ))
        .and_then(|mut s| {
            s.query_row(params![id, service_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()
        })
        .map_err(db)?;
    row.map(RequestRecord::read).transpose()
}

pub fn mark_read(c: &Connection, id: &str, retrieval_id: &str) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE requests SET retrieval_id = ?2 WHERE id = ?1 AND retrieval_id IS NULL",
    )
    .and_then(|mut s| s.execute(params![id, retrieval_id]))
    .map_err(db)?;
    Ok(())
}

/// Marks pending requests past their expiry `expired` and removes requests that ended before
/// the retention period (their codes' tombstones with them). Returns (expired, purged).
pub fn sweep(
    c: &Connection,
    now: Timestamp,
    retention: Duration,
) -> Result<(usize, usize), StoreError> {
    let now_ms = ms(now);
    let expired = c
        .execute(
            "UPDATE requests SET state = 'expired', ended_at = expires_at WHERE id IN
               (SELECT id FROM requests WHERE state = 'pending' AND expires_at <= ?1 LIMIT +?2)",
            params![now_ms, BATCH as i64],
        )
        .map_err(db)?;
    let horizon = now_ms - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let purged = c
        .execute(
            "DELETE FROM requests WHERE id IN
               (SELECT id FROM requests WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT +?2)",
            params![horizon, BATCH as i64],
        )
        .map_err(db)?;
    Ok((expired, purged))
}
