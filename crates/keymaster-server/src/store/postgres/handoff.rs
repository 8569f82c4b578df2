//! PostgreSQL: the verified handoff's rows, as in the SQLite backend. The retrieval record
//! that the SAS exchange and disputes work on (written by the retrieval transaction), the SAS
//! request and reveal, the dispute, and whether a gone key's event stream waits for a reveal.
//! Each change locks the retrieval row (`FOR UPDATE`) so that two replicas answering the same
//! request at once cannot both record a nonce or both send a dispute. The decisions are
//! `store::handoff`'s; this file only reads and writes.

use jiff::Timestamp;
use keymaster_core::handoff::Bytes32;
use sqlx::PgConnection;

use super::rows::{insert_audit, insert_event};
use super::{db, ms, ts};
use crate::store::events::KeyRef;
use crate::store::handoff::{
    decide_dispute, decide_request, decide_reveal_row, disputed_event, sas_requested_event,
    DisputeOutcome, RevealOutcome, RevealRow, SasNonceBytes, SasRequestOutcome, REVEAL_WINDOW,
};
use crate::store::{AuditRecord, ServiceAuth, StoreError};

/// The tenant's name, for a preview.
pub async fn tenant_name(c: &mut PgConnection, tenant_id: &str) -> Result<String, StoreError> {
    sqlx::query_scalar::<_, String>("SELECT name FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(c)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::Corrupt(format!("key of unknown tenant {tenant_id}")))
}

/// A key (id, tenant, label) and a retrieval's stored service nonce.
type KeyAndNonce = (String, String, Option<String>, Option<Vec<u8>>);
/// Both stored nonces of a retrieval.
type NoncePair = (Option<Vec<u8>>, Option<Vec<u8>>);

fn key_ref<'a>(key_id: &'a str, tenant_id: &'a str, label: Option<&'a str>) -> KeyRef<'a> {
    KeyRef {
        key_id,
        tenant_id,
        label,
    }
}

pub async fn request_sas(
    c: &mut PgConnection,
    retrieval_id: &str,
    service: &ServiceAuth,
    nonce: &Bytes32,
    a: &AuditRecord,
) -> Result<SasRequestOutcome, StoreError> {
    let row: Option<KeyAndNonce> = sqlx::query_as(
        "SELECT k.id, k.tenant_id, k.label, r.service_nonce
         FROM retrievals r JOIN keys k ON k.id = r.key_id
         WHERE r.id = $1 AND r.service_id = $2 FOR UPDATE OF r",
    )
    .bind(retrieval_id)
    .bind(&service.id)
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    let Some((key_id, tenant_id, label, stored)) = row else {
        return Ok(SasRequestOutcome::NotFound);
    };
    if let Err(outcome) = decide_request(stored.as_deref(), nonce) {
        return Ok(outcome);
    }
    sqlx::query("UPDATE retrievals SET service_nonce = $2 WHERE id = $1")
        .bind(retrieval_id)
        .bind(nonce.as_slice())
        .execute(&mut *c)
        .await
        .map_err(db)?;
    let key = key_ref(&key_id, &tenant_id, label.as_deref());
    let svc = (service.id.as_str(), service.name.as_str());
    insert_event(
        c,
        &sas_requested_event(&key, svc, retrieval_id, nonce, a.at),
    )
    .await?;
    let mut audit = a.clone();
    audit.key_id = Some(key_id.clone());
    insert_audit(c, &audit).await?;
    Ok(SasRequestOutcome::Requested)
}

pub async fn reveal_sas(
    c: &mut PgConnection,
    key_id: &str,
    retrieval_id: &str,
    nonce: &Bytes32,
    a: &AuditRecord,
) -> Result<RevealOutcome, StoreError> {
    let row: Option<RevealRow> = sqlx::query_as(
        "SELECT r.service_nonce, r.device_nonce, k.sas_commitment
         FROM retrievals r JOIN keys k ON k.id = r.key_id
         WHERE r.id = $1 AND r.key_id = $2 FOR UPDATE OF r",
    )
    .bind(retrieval_id)
    .bind(key_id)
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    if let Err(outcome) = decide_reveal_row(row.as_ref(), nonce) {
        return Ok(outcome);
    }
    sqlx::query("UPDATE retrievals SET device_nonce = $2 WHERE id = $1")
        .bind(retrieval_id)
        .bind(nonce.as_slice())
        .execute(&mut *c)
        .await
        .map_err(db)?;
    insert_audit(c, a).await?;
    Ok(RevealOutcome::Revealed)
}

pub async fn sas_nonces(
    c: &mut PgConnection,
    retrieval_id: &str,
    service: &ServiceAuth,
) -> Result<Option<SasNonceBytes>, StoreError> {
    let row: Option<NoncePair> = sqlx::query_as(
        "SELECT service_nonce, device_nonce FROM retrievals WHERE id = $1 AND service_id = $2",
    )
    .bind(retrieval_id)
    .bind(&service.id)
    .fetch_optional(c)
    .await
    .map_err(db)?;
    Ok(row.map(|(service, device)| SasNonceBytes { service, device }))
}

pub async fn dispute(
    c: &mut PgConnection,
    retrieval_id: &str,
    service: &ServiceAuth,
    reason: &str,
    a: &AuditRecord,
) -> Result<DisputeOutcome, StoreError> {
    let row: Option<(String, String, Option<String>, i64, bool)> = sqlx::query_as(
        "SELECT k.id, k.tenant_id, k.label, r.at, r.disputed_at IS NOT NULL
         FROM retrievals r JOIN keys k ON k.id = r.key_id
         WHERE r.id = $1 AND r.service_id = $2 FOR UPDATE OF r",
    )
    .bind(retrieval_id)
    .bind(&service.id)
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    let Some((key_id, tenant_id, label, at, disputed)) = row else {
        return Ok(DisputeOutcome::NotFound);
    };
    if let Err(outcome) = decide_dispute(ts(at)?, disputed, a.at) {
        return Ok(outcome);
    }
    sqlx::query("UPDATE retrievals SET disputed_at = $2, dispute_reason = $3 WHERE id = $1")
        .bind(retrieval_id)
        .bind(ms(a.at))
        .bind(reason)
        .execute(&mut *c)
        .await
        .map_err(db)?;
    let key = key_ref(&key_id, &tenant_id, label.as_deref());
    let svc = (service.id.as_str(), service.name.as_str());
    insert_event(c, &disputed_event(&key, svc, retrieval_id, reason, a.at)).await?;
    let mut audit = a.clone();
    audit.key_id = Some(key_id.clone());
    insert_audit(c, &audit).await?;
    Ok(DisputeOutcome::Disputed)
}

pub async fn awaiting_reveal(
    c: &mut PgConnection,
    key_id: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let since = ms(now) - REVEAL_WINDOW.as_millis() as i64;
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM retrievals r JOIN keys k ON k.id = r.key_id
             WHERE r.key_id = $1 AND k.sas_commitment IS NOT NULL
               AND r.device_nonce IS NULL AND r.at > $2)",
    )
    .bind(key_id)
    .bind(since)
    .fetch_one(c)
    .await
    .map_err(db)
}
