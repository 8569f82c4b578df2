//! PostgreSQL: deposits and the holder's operations on one key (status, expiry, revoke,
//! re-code). Every change to a live key first locks its row (`FOR UPDATE`), so it serialises
//! with retrievals and the sweeper of every replica.

use jiff::Timestamp;
use sqlx::{PgConnection, Row};

use super::apply::apply;
use super::rows::{insert_audit, insert_event};
use super::{db, ms};
use crate::store::columns::format_name;
use crate::store::events::{new_event, EventType, KeyRef};
use crate::store::lifecycle::{self, read_record, Applied, LIVE_SQL, RECORD_COLUMNS};
use crate::store::limits;
use crate::store::{AuditRecord, KeyRecord, NewKey, RecodeOutcome, StoreError};

pub async fn deposit(
    c: &mut PgConnection,
    k: &NewKey,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    deposit_with_event(c, k, a, None, None).await
}

/// As [`deposit`], with the `key.deposited` event naming a service and a reason (a key that
/// answers an enrolment request).
pub async fn deposit_with_event(
    c: &mut PgConnection,
    k: &NewKey,
    a: &AuditRecord,
    service: Option<(&str, &str)>,
    reason: Option<&str>,
) -> Result<bool, StoreError> {
    let policy = serde_json::to_string(&k.policy).map_err(|e| StoreError::Db(e.to_string()))?;
    let notify = k
        .notify
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Db(e.to_string()))?;
    // ON CONFLICT DO NOTHING: a code that is already live (or any other unique value taken)
    // leaves the transaction usable and tells the caller to make another code.
    let inserted = sqlx::query(
        "INSERT INTO keys (id, tenant_id, holder_hash, code_hash, label, kind, algorithm, spki,
             secret_sealed, fingerprint, ssh_fingerprint, jwk_thumbprint, proven, policy,
             password_hash, notify, state, created_at, expires_at, max_retrievals, code_format,
             origin_network, sas_commitment)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
             'active', $17, $18, $19, $20, $21, $22)
         ON CONFLICT DO NOTHING",
    )
    .bind(&k.id)
    .bind(&k.tenant_id)
    .bind(&k.holder_hash)
    .bind(&k.code_hash)
    .bind(&k.label)
    .bind(k.kind)
    .bind(&k.algorithm)
    .bind(&k.spki)
    .bind(&k.secret_sealed)
    .bind(&k.fingerprint)
    // Not stored, as in every backend: a retrieval derives both from the key (`PublicForms`),
    // and the holder's view shows only `fingerprint`.
    .bind(None::<String>)
    .bind(None::<String>)
    .bind(k.proven)
    .bind(policy)
    .bind(&k.password_hash)
    .bind(notify)
    .bind(ms(k.created_at))
    .bind(ms(k.expires_at))
    .bind(i64::from(k.policy.max_retrievals))
    .bind(format_name(k.code_format))
    .bind(k.origin_network.map(|n| n.to_string()))
    .bind(&k.sas_commitment)
    .execute(&mut *c)
    .await
    .map_err(db)?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    // A new live code supersedes any tombstone of the same value.
    sqlx::query("DELETE FROM tombstones WHERE code_hash = $1")
        .bind(&k.code_hash)
        .execute(&mut *c)
        .await
        .map_err(db)?;
    let key = KeyRef {
        key_id: &k.id,
        tenant_id: &k.tenant_id,
        label: k.label.as_deref(),
    };
    let event = new_event(EventType::Deposited, &key, service, reason, k.created_at);
    insert_event(c, &event).await?;
    insert_audit(c, a).await?;
    Ok(true)
}

/// The key a holder token opens. PostgreSQL keeps its unique index of holder hashes, so the
/// hash finds the key; the id the token names, when it names one, must match too.
pub async fn key_by_holder(
    c: &mut PgConnection,
    key_id: Option<&str>,
    holder_hash: &[u8],
) -> Result<Option<KeyRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM keys WHERE holder_hash = $1 AND ($2::text IS NULL OR id = $2)"
    ))
    .bind(holder_hash)
    .bind(key_id)
    .fetch_optional(c)
    .await
    .map_err(db)?;
    row.as_ref().map(read_record).transpose()
}

/// Locks and loads a key that has not ended, with its code hash (`lifecycle` decides whether it
/// is live at the operation's time).
async fn unended_key(
    c: &mut PgConnection,
    key_id: &str,
) -> Result<Option<(KeyRecord, Vec<u8>)>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS}, code_hash FROM keys WHERE id = $1 AND {LIVE_SQL} FOR UPDATE"
    ))
    .bind(key_id)
    .fetch_optional(c)
    .await
    .map_err(db)?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((read_record(&row)?, row.try_get(12).map_err(db)?)))
}

pub async fn set_expiry(
    c: &mut PgConnection,
    key_id: &str,
    expires_at: Timestamp,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let rec = unended_key(c, key_id).await?.map(|(rec, _)| rec);
    match lifecycle::plan_set_expiry(rec.as_ref(), expires_at, a) {
        Some(plan) => apply(c, &plan).await.map(|_| true),
        None => Ok(false),
    }
}

pub async fn revoke(
    c: &mut PgConnection,
    key_id: &str,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let rec = unended_key(c, key_id).await?.map(|(rec, _)| rec);
    match lifecycle::plan_revoke(rec.as_ref(), a) {
        Some(plan) => apply(c, &plan).await.map(|_| true),
        None => Ok(false),
    }
}

pub async fn recode(
    c: &mut PgConnection,
    key_id: &str,
    new_code_hash: &[u8],
    per_hour: u32,
    a: &AuditRecord,
) -> Result<RecodeOutcome, StoreError> {
    let Some((rec, old_code_hash)) = unended_key(c, key_id).await? else {
        return Ok(RecodeOutcome::NotLive);
    };
    let retry = recodes_spent(c, key_id, per_hour, a.at).await?;
    let (plan, outcome) =
        lifecycle::plan_recode(Some(&rec), old_code_hash, new_code_hash, retry, a);
    match apply(c, &plan).await? {
        Applied::Done => Ok(outcome),
        Applied::CodeTaken => Ok(RecodeOutcome::CodeTaken),
    }
}

/// Seconds until the key may have a new code, when it had `per_hour` within the last hour
/// (counted from its `code.reissued` events, which live as long as the key's record). The
/// caller holds the key row's lock, so replicas count the same events.
async fn recodes_spent(
    c: &mut PgConnection,
    key_id: &str,
    per_hour: u32,
    now: Timestamp,
) -> Result<Option<u64>, StoreError> {
    let recent: Vec<i64> = sqlx::query_scalar(
        "SELECT at FROM events WHERE key_id = $1 AND type = 'code.reissued'
         ORDER BY seq DESC LIMIT $2",
    )
    .bind(key_id)
    .bind(i64::from(per_hour))
    .fetch_all(c)
    .await
    .map_err(db)?;
    Ok(limits::recode_retry_after(&recent, per_hour, now))
}
