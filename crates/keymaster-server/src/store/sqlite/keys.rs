//! SQLite: deposits and the holder's operations on one key (status, expiry, revoke, re-code).

use jiff::Timestamp;
use keymaster_core::wire::{CodeFormat, Event, Notify};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::rows::{
    emit, end_key, event_json, insert_audit, insert_coalesced_audit, insert_event_json, opt_ts,
};
use super::writer::db;
use super::{ms, ts};
use crate::store::events::{new_event, EventType, KeyRef};
use crate::store::limits;
use crate::store::{AuditRecord, KeyRecord, KeyState, NewKey, RecodeOutcome, StoreError};

/// True when `e` is a UNIQUE violation: a code that is live, or kept in the row of a key that
/// ended (its tombstone); the caller draws another code.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

/// The JSON of a deposit (policy, notification targets, the `key.deposited` event), made by
/// the caller before the job is queued so that the single writer thread does not serialise.
pub struct DepositJson {
    policy: String,
    notify: Option<String>,
    event: Event,
    event_json: String,
}

impl DepositJson {
    pub fn new(k: &NewKey) -> Result<DepositJson, StoreError> {
        let json = |e: serde_json::Error| StoreError::Db(e.to_string());
        let key = KeyRef {
            key_id: &k.id,
            tenant_id: &k.tenant_id,
            label: k.label.as_deref(),
        };
        let event = new_event(EventType::Deposited, &key, None, None, k.created_at);
        Ok(DepositJson {
            policy: serde_json::to_string(&k.policy).map_err(json)?,
            notify: k
                .notify
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(json)?,
            event_json: event_json(&event)?,
            event,
        })
    }
}

pub fn deposit(
    c: &Connection,
    k: &NewKey,
    j: &DepositJson,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let (policy, notify) = (&j.policy, &j.notify);
    let inserted = c
        .prepare_cached(
            "INSERT INTO keys (id, tenant_id, holder_hash, code_hash, label, kind, algorithm, spki,
                 secret_sealed, fingerprint, ssh_fingerprint, jwk_thumbprint, proven, policy,
                 password_hash, notify, state, created_at, expires_at, max_retrievals, code_format,
                 origin_network, sas_commitment)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 'active', ?17, ?18, ?19, ?20, ?21, ?22)",
        )
        .and_then(|mut s| {
            s.execute(params![
                k.id,
                k.tenant_id,
                k.holder_hash,
                k.code_hash,
                k.label,
                k.kind,
                k.algorithm,
                k.spki,
                k.secret_sealed,
                k.fingerprint,
                // Not stored: a retrieval derives both from the key (`PublicForms`), and the
                // holder's view shows only `fingerprint`. About 95 bytes less per key.
                None::<String>,
                None::<String>,
                k.proven,
                policy,
                k.password_hash,
                notify,
                ms(k.created_at),
                ms(k.expires_at),
                k.policy.max_retrievals,
                format_name(k.code_format),
                k.origin_network.map(|n| n.to_string()),
                k.sas_commitment,
            ])
        });
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Ok(false),
        Err(e) => return Err(db(e)),
    }
    // A new live code supersedes a replaced code's tombstone of the same value.
    c.prepare_cached("DELETE FROM tombstones WHERE code_hash = ?1")
        .and_then(|mut s| s.execute(params![k.code_hash]))
        .map_err(db)?;
    insert_event_json(c, &j.event, &j.event_json, Some(notify.is_some()))?;
    insert_audit(c, a)?;
    Ok(true)
}

const RECORD_COLUMNS: &str = "id, tenant_id, label, algorithm, fingerprint, state, expires_at,
    confirm_by, retrievals, max_retrievals, notify, code_format";

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        label: r.get(2)?,
        algorithm: r.get(3)?,
        fingerprint: r.get(4)?,
        state: r.get(5)?,
        expires_at: r.get(6)?,
        confirm_by: r.get(7)?,
        retrievals: r.get(8)?,
        max_retrievals: r.get(9)?,
        notify: r.get(10)?,
        code_format: r.get(11)?,
    })
}

struct RawRecord {
    id: String,
    tenant_id: String,
    label: Option<String>,
    algorithm: String,
    fingerprint: Option<String>,
    state: String,
    expires_at: i64,
    confirm_by: Option<i64>,
    retrievals: u32,
    max_retrievals: u32,
    notify: Option<String>,
    code_format: String,
}

impl RawRecord {
    fn into_record(self) -> Result<KeyRecord, StoreError> {
        let notify: Option<Notify> = self
            .notify
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("notify: {e}")))?;
        Ok(KeyRecord {
            state: KeyState::parse(&self.state)
                .ok_or_else(|| StoreError::Corrupt(format!("state {:?}", self.state)))?,
            id: self.id,
            tenant_id: self.tenant_id,
            label: self.label,
            algorithm: self.algorithm,
            fingerprint: self.fingerprint,
            expires_at: ts(self.expires_at)?,
            confirm_by: opt_ts(self.confirm_by)?,
            retrievals: self.retrievals,
            max_retrievals: self.max_retrievals,
            notify,
            code_format: if self.code_format == "base32" {
                CodeFormat::Base32
            } else {
                CodeFormat::Digits
            },
        })
    }
}

/// The key a holder token opens: found by the id the token names and checked against its hash
/// (`holder_hash` has no index of its own since migration 4), or, for a token made before
/// tokens named their key, by the partial index over the keys made before (`legacy_holder`).
pub fn key_by_holder(
    c: &Connection,
    key_id: Option<&str>,
    holder_hash: &[u8],
) -> Result<Option<KeyRecord>, StoreError> {
    let raw = match key_id {
        Some(id) => c
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM keys WHERE id = ?1 AND holder_hash = ?2"
            ))
            .and_then(|mut s| {
                s.query_row(params![id, holder_hash], record_from_row)
                    .optional()
            }),
        None => c
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM keys WHERE holder_hash = ?1 AND legacy_holder = 1"
            ))
            .and_then(|mut s| {
                s.query_row(params![holder_hash], record_from_row)
                    .optional()
            }),
    }
    .map_err(db)?;
    raw.map(RawRecord::into_record).transpose()
}

/// Loads a key that is live at `now` (not ended, not past its expiry).
fn live_key(c: &Connection, key_id: &str, now: Timestamp) -> Result<Option<KeyRecord>, StoreError> {
    let raw = c
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM keys WHERE id = ?1 AND ended_at IS NULL"
        ))
        .and_then(|mut s| s.query_row(params![key_id], record_from_row).optional())
        .map_err(db)?;
    let Some(rec) = raw.map(RawRecord::into_record).transpose()? else {
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

pub fn set_expiry(
    c: &Connection,
    key_id: &str,
    expires_at: Timestamp,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    if live_key(c, key_id, a.at)?.is_none() {
        return Ok(false);
    }
    c.execute(
        "UPDATE keys SET expires_at = ?2 WHERE id = ?1",
        params![key_id, ms(expires_at)],
    )
    .map_err(db)?;
    insert_audit(c, a)?;
    Ok(true)
}

pub fn revoke(c: &Connection, key_id: &str, a: &AuditRecord) -> Result<bool, StoreError> {
    let Some(rec) = live_key(c, key_id, a.at)? else {
        return Ok(false);
    };
    end_key(c, key_id, KeyState::Revoked, a.at)?;
    emit(c, EventType::Revoked, &key_ref(&rec), None, None, a.at)?;
    insert_audit(c, a)?;
    Ok(true)
}

pub fn recode(
    c: &Connection,
    key_id: &str,
    new_code_hash: &[u8],
    per_hour: u32,
    a: &AuditRecord,
) -> Result<RecodeOutcome, StoreError> {
    let Some(rec) = live_key(c, key_id, a.at)? else {
        return Ok(RecodeOutcome::NotLive);
    };
    if let Some(retry) = recodes_spent(c, key_id, per_hour, a.at)? {
        let mut refused = a.clone();
        refused.outcome = "rate_limited".into();
        insert_coalesced_audit(c, &refused)?;
        return Ok(RecodeOutcome::RateLimited(retry));
    }
    let old_hash: Vec<u8> = c
        .query_row(
            "SELECT code_hash FROM keys WHERE id = ?1",
            params![key_id],
            |r| r.get(0),
        )
        .map_err(db)?;
    match c.execute(
        "UPDATE keys SET code_hash = ?2 WHERE id = ?1",
        params![key_id, new_code_hash],
    ) {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Ok(RecodeOutcome::CodeTaken),
        Err(e) => return Err(db(e)),
    }
    c.execute(
        "DELETE FROM tombstones WHERE code_hash = ?1",
        params![new_code_hash],
    )
    .map_err(db)?;
    c.execute(
        "INSERT OR REPLACE INTO tombstones (code_hash, key_id, died_at) VALUES (?1, ?2, ?3)",
        params![old_hash, key_id, ms(a.at)],
    )
    .map_err(db)?;
    emit(c, EventType::CodeReissued, &key_ref(&rec), None, None, a.at)?;
    insert_audit(c, a)?;
    Ok(RecodeOutcome::Done(rec.expires_at))
}

/// Seconds until the key may have a new code, when it had `per_hour` within the last hour
/// (counted from its `code.reissued` events, which live as long as the key's record).
fn recodes_spent(
    c: &Connection,
    key_id: &str,
    per_hour: u32,
    now: Timestamp,
) -> Result<Option<u64>, StoreError> {
    let recent: Vec<i64> = c
        .prepare_cached(
            "SELECT at FROM events WHERE key_id = ?1 AND type = 'code.reissued'
             ORDER BY seq DESC LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![key_id, per_hour], |r| r.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(db)?;
    Ok(limits::recode_retry_after(&recent, per_hour, now))
}

fn format_name(f: CodeFormat) -> &'static str {
    match f {
        CodeFormat::Digits => "digits",
        CodeFormat::Base32 => "base32",
    }
}
