//! SQLite: deposits and the holder's operations on one key (status, expiry, revoke, re-code).

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use super::apply::{apply, is_unique_violation};
use super::ms;
use super::rows::{insert_audit, insert_event, EventRow};
use super::tx::Tx;
use super::writer::db;
use crate::store::columns::format_name;
use crate::store::events::{new_event, EventType, KeyRef};
use crate::store::lifecycle::{self, read_record, Applied, LIVE_SQL, RECORD_COLUMNS};
use crate::store::limits;
use crate::store::{AuditRecord, KeyRecord, NewKey, RecodeOutcome, StoreError};

/// The JSON of a deposit (policy, notification targets, the `key.deposited` event), made by
/// the caller before the job is queued so that the single writer thread does not serialise.
pub struct DepositJson {
    policy: String,
    notify: Option<String>,
    event: EventRow,
}

impl DepositJson {
    pub fn new(k: &NewKey) -> Result<DepositJson, StoreError> {
        DepositJson::with_event(k, None, None)
    }

    /// As [`DepositJson::new`], with the `key.deposited` event naming a service and a reason
    /// (a key that answers an enrolment request).
    pub fn with_event(
        k: &NewKey,
        service: Option<(&str, &str)>,
        reason: Option<&str>,
    ) -> Result<DepositJson, StoreError> {
        let json = |e: serde_json::Error| StoreError::Db(e.to_string());
        let key = KeyRef {
            key_id: &k.id,
            tenant_id: &k.tenant_id,
            label: k.label.as_deref(),
        };
        let event = new_event(EventType::Deposited, &key, service, reason, k.created_at);
        Ok(DepositJson {
            policy: serde_json::to_string(&k.policy).map_err(json)?,
            notify: k
                .notify
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(json)?,
            event: EventRow::new(event)?,
        })
    }
}

pub fn deposit(
    c: &Tx<'_>,
    k: &NewKey,
    j: &DepositJson,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let (policy, notify) = (&j.policy, &j.notify);
    let inserted = c.cached(
        "INSERT INTO keys (id, tenant_id, holder_hash, code_hash, label, kind, algorithm, spki,
                 secret_sealed, fingerprint, ssh_fingerprint, jwk_thumbprint, proven, policy,
                 password_hash, notify, state, created_at, expires_at, max_retrievals, code_format,
                 origin_network, sas_commitment)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 'active', ?17, ?18, ?19, ?20, ?21, ?22)",
        |s| {
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
        },
    );
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Ok(false),
        Err(e) => return Err(db(e)),
    }
    // A new live code supersedes a replaced code's tombstone of the same value.
    c.cached("DELETE FROM tombstones WHERE code_hash = ?1", |s| {
        s.execute(params![k.code_hash])
    })
    .map_err(db)?;
    insert_event(c, &j.event, Some(notify.is_some()))?;
    insert_audit(c, a)?;
    Ok(true)
}

/// The key a holder token opens: found by the id the token names and checked against its hash
/// (`holder_hash` has no index of its own since migration 4), or, for a token made before
/// tokens named their key, by the partial index over the keys made before (`legacy_holder`).
pub fn key_by_holder(
    c: &Connection,
    key_id: Option<&str>,
    holder_hash: &[u8],
) -> Result<Option<KeyRecord>, StoreError> {
    match key_id {
        Some(id) => c
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM keys WHERE id = ?1 AND holder_hash = ?2"
            ))
            .and_then(|mut s| {
                s.query_row(params![id, holder_hash], |r| Ok(read_record(r)))
                    .optional()
            }),
        None => c
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM keys WHERE holder_hash = ?1 AND legacy_holder = 1"
            ))
            .and_then(|mut s| {
                s.query_row(params![holder_hash], |r| Ok(read_record(r)))
                    .optional()
            }),
    }
    .map_err(db)?
    .transpose()
}

/// A key that has not ended, with its code hash (`lifecycle` decides whether it is live at
/// the operation's time).
fn unended_key(c: &Connection, key_id: &str) -> Result<Option<(KeyRecord, Vec<u8>)>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS}, code_hash FROM keys WHERE id = ?1 AND {LIVE_SQL}"
    ))
    .and_then(|mut s| {
        s.query_row(params![key_id], |r| {
            Ok(read_record(r).and_then(|rec| Ok((rec, r.get(12).map_err(db)?))))
        })
        .optional()
    })
    .map_err(db)?
    .transpose()
}

pub fn set_expiry(
    c: &Tx<'_>,
    key_id: &str,
    expires_at: Timestamp,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let rec = unended_key(c, key_id)?.map(|(rec, _)| rec);
    let Some(plan) = lifecycle::plan_set_expiry(rec.as_ref(), expires_at, a) else {
        return Ok(false);
    };
    apply(c, &plan)?;
    Ok(true)
}

pub fn revoke(c: &Tx<'_>, key_id: &str, a: &AuditRecord) -> Result<bool, StoreError> {
    let rec = unended_key(c, key_id)?.map(|(rec, _)| rec);
    let Some(plan) = lifecycle::plan_revoke(rec.as_ref(), a) else {
        return Ok(false);
    };
    apply(c, &plan)?;
    Ok(true)
}

pub fn recode(
    c: &Tx<'_>,
    key_id: &str,
    new_code_hash: &[u8],
    per_hour: u32,
    a: &AuditRecord,
) -> Result<RecodeOutcome, StoreError> {
    let Some((rec, old_code_hash)) = unended_key(c, key_id)? else {
        return Ok(RecodeOutcome::NotLive);
    };
    let retry = recodes_spent(c, key_id, per_hour, a.at)?;
    let (plan, outcome) =
        lifecycle::plan_recode(Some(&rec), old_code_hash, new_code_hash, retry, a);
    Ok(match apply(c, &plan)? {
        Applied::Done => outcome,
        Applied::CodeTaken => RecodeOutcome::CodeTaken,
    })
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
             ORDER BY seq DESC LIMIT +?2",
        )
        .and_then(|mut s| {
            s.query_map(params![key_id, per_hour], |r| r.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(db)?;
    Ok(limits::recode_retry_after(&recent, per_hour, now))
}
