//! PostgreSQL: deposits and the holder's operations on one key (status, expiry, revoke,
//! re-code). Every change to a live key first locks its row (`FOR UPDATE`), so it serialises
//! with retrievals and the sweeper of every replica.

use jiff::Timestamp;
use keymaster_core::wire::{CodeFormat, Notify};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::rows::{emit, end_key, insert_audit, insert_coalesced_audit, opt_ts};
use super::{count, db, is_unique_violation, ms, ts};
use crate::store::events::{EventType, KeyRef};
use crate::store::limits;
use crate::store::{AuditRecord, KeyRecord, KeyState, NewKey, RecodeOutcome, StoreError};

pub async fn deposit(
    c: &mut PgConnection,
    k: &NewKey,
    a: &AuditRecord,
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
    .bind(&k.ssh_fingerprint)
    .bind(&k.jwk_thumbprint)
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
    emit(c, EventType::Deposited, &key, None, None, k.created_at).await?;
    insert_audit(c, a).await?;
    Ok(true)
}

const RECORD_COLUMNS: &str = "id, tenant_id, label, algorithm, fingerprint, state, expires_at,
    confirm_by, retrievals, max_retrievals, notify, code_format";

fn record_from_row(r: &PgRow) -> Result<KeyRecord, StoreError> {
    let state: String = r.try_get(5).map_err(db)?;
    let notify: Option<String> = r.try_get(10).map_err(db)?;
    let notify: Option<Notify> = notify
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("notify: {e}")))?;
    let code_format: String = r.try_get(11).map_err(db)?;
    Ok(KeyRecord {
        state: KeyState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?,
        id: r.try_get(0).map_err(db)?,
        tenant_id: r.try_get(1).map_err(db)?,
        label: r.try_get(2).map_err(db)?,
        algorithm: r.try_get(3).map_err(db)?,
        fingerprint: r.try_get(4).map_err(db)?,
        expires_at: ts(r.try_get(6).map_err(db)?)?,
        confirm_by: opt_ts(r.try_get(7).map_err(db)?)?,
        retrievals: count(r.try_get(8).map_err(db)?)?,
        max_retrievals: count(r.try_get(9).map_err(db)?)?,
        notify,
        code_format: if code_format == "base32" {
            CodeFormat::Base32
        } else {
            CodeFormat::Digits
        },
    })
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
    row.as_ref().map(record_from_row).transpose()
}

/// Locks and loads a key that is live at `now` (not ended, not past its expiry).
async fn live_key(
    c: &mut PgConnection,
    key_id: &str,
    now: Timestamp,
) -> Result<Option<KeyRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM keys WHERE id = $1 AND code_hash IS NOT NULL FOR UPDATE"
    ))
    .bind(key_id)
    .fetch_optional(c)
    .await
    .map_err(db)?;
    let Some(rec) = row.as_ref().map(record_from_row).transpose()? else {
        return Ok(None);
    };
    Ok(rec.status_at(now).is_live().then_some(rec))
}

fn key_ref(rec: &KeyRecord) -> KeyRef<'_> {
    KeyRef {
        key_id: &rec.id,
        tenant_id: &rec.tenant_id,
        label: rec.label.as_deref(),
    }
}

pub async fn set_expiry(
    c: &mut PgConnection,
    key_id: &str,
    expires_at: Timestamp,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    if live_key(c, key_id, a.at).await?.is_none() {
        return Ok(false);
    }
    sqlx::query("UPDATE keys SET expires_at = $2 WHERE id = $1")
        .bind(key_id)
        .bind(ms(expires_at))
        .execute(&mut *c)
        .await
        .map_err(db)?;
    insert_audit(c, a).await?;
    Ok(true)
}

pub async fn revoke(
    c: &mut PgConnection,
    key_id: &str,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let Some(rec) = live_key(c, key_id, a.at).await? else {
        return Ok(false);
    };
    end_key(c, key_id, KeyState::Revoked, a.at).await?;
    emit(c, EventType::Revoked, &key_ref(&rec), None, None, a.at).await?;
    insert_audit(c, a).await?;
    Ok(true)
}

pub async fn recode(
    c: &mut PgConnection,
    key_id: &str,
    new_code_hash: &[u8],
    per_hour: u32,
    a: &AuditRecord,
) -> Result<RecodeOutcome, StoreError> {
    let Some(rec) = live_key(c, key_id, a.at).await? else {
        return Ok(RecodeOutcome::NotLive);
    };
    if let Some(retry) = recodes_spent(c, key_id, per_hour, a.at).await? {
        let mut refused = a.clone();
        refused.outcome = "rate_limited".into();
        insert_coalesced_audit(c, &refused).await?;
        return Ok(RecodeOutcome::RateLimited(retry));
    }
    let old_hash: Vec<u8> = sqlx::query_scalar("SELECT code_hash FROM keys WHERE id = $1")
        .bind(key_id)
        .fetch_one(&mut *c)
        .await
        .map_err(db)?;
    // A collision aborts the statement; the savepoint keeps the transaction usable.
    sqlx::query("SAVEPOINT recode")
        .execute(&mut *c)
        .await
        .map_err(db)?;
    let updated = sqlx::query("UPDATE keys SET code_hash = $2 WHERE id = $1")
        .bind(key_id)
        .bind(new_code_hash)
        .execute(&mut *c)
        .await;
    match updated {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT recode")
                .execute(&mut *c)
                .await
                .map_err(db)?;
        }
        Err(e) if is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT recode")
                .execute(&mut *c)
                .await
                .map_err(db)?;
            sqlx::query("RELEASE SAVEPOINT recode")
                .execute(&mut *c)
                .await
                .map_err(db)?;
            return Ok(RecodeOutcome::CodeTaken);
        }
        Err(e) => return Err(db(e)),
    }
    sqlx::query("DELETE FROM tombstones WHERE code_hash = $1")
        .bind(new_code_hash)
        .execute(&mut *c)
        .await
        .map_err(db)?;
    sqlx::query(
        "INSERT INTO tombstones (code_hash, key_id, died_at) VALUES ($1, $2, $3)
         ON CONFLICT (code_hash) DO UPDATE SET key_id = EXCLUDED.key_id,
             died_at = EXCLUDED.died_at",
    )
    .bind(old_hash)
    .bind(key_id)
    .bind(ms(a.at))
    .execute(&mut *c)
    .await
    .map_err(db)?;
    emit(c, EventType::CodeReissued, &key_ref(&rec), None, None, a.at).await?;
    insert_audit(c, a).await?;
    Ok(RecodeOutcome::Done(rec.expires_at))
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

fn format_name(f: CodeFormat) -> &'static str {
    match f {
        CodeFormat::Digits => "digits",
        CodeFormat::Base32 => "base32",
    }
}
