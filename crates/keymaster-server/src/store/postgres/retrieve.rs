//! PostgreSQL: the retrieval transaction and confirmation.
//!
//! One READ COMMITTED transaction: lock the service's failure-budget row and check it, lock the
//! live key row by code hash (`FOR UPDATE`), ask the pure policy
//! (`keymaster_core::policy::decide`), apply what it decided (count, hold, remove, lock), write
//! the event and the audit row. Locks are always taken budget first, then key, so racing
//! replicas queue rather than deadlock; a request that waited for the key's lock re-reads the
//! row and finds the code gone if the winner used it up. So a single-use code is handed out
//! exactly once and `max_retrievals` is exact across processes.
//!
//! A request with a password for a key that every other rule would hand out takes a slot of
//! the budget in a first transaction and writes nothing else (`VerifyPassword`); the caller
//! checks the password and retrieves again with the verdict and the slot, which is then the
//! attempt's failure, or is given back if it succeeds. The slot is checked and taken under the
//! budget row's lock, so across replicas no more passwords are checked per window than the
//! budget allows (given clocks that agree on the minute). The second transaction does not
//! touch the budget (its failure is already counted), so it does not queue behind the
//! service's other retrievals; a success gives the slot back afterwards, in a transaction of
//! its own ([`give_back`]), since taking the budget row's lock after the key's would invert
//! the lock order.

use jiff::Timestamp;
use keymaster_core::policy::{Decision, Denial};
use sqlx::{PgConnection, Row};

use super::rows::{
    budget_spent, emit, end_key, insert_audit, insert_coalesced_audit, opt_ts, record_failure,
    release_failure,
};
use super::{count, db, ms};
use crate::store::decision::{confirm_deadline, evaluate, Evaluated, StoredFacts};
use crate::store::events::{EventType, KeyRef};
use crate::store::{
    AuditRecord, BudgetSlot, KeyState, PreviewedKey, RetrieveCommand, RetrieveOutcome,
    RetrievedKey, ServiceAuth, StoreError,
};

struct KeyRow {
    id: String,
    tenant_id: String,
    label: Option<String>,
    kind: String,
    algorithm: String,
    spki: Option<Vec<u8>>,
    secret_sealed: Option<Vec<u8>>,
    fingerprint: Option<String>,
    ssh_fingerprint: Option<String>,
    jwk_thumbprint: Option<String>,
    proven: bool,
    policy: String,
    state: String,
    expires_at: i64,
    retrievals: u32,
    failed_password_attempts: u32,
    pending_retrieval_id: Option<String>,
    pending_service_id: Option<String>,
    confirm_by: Option<i64>,
    /// argon2id PHC string of the policy password.
    password_hash: Option<String>,
    /// Verified handoff: deposit time (ms) and network (for a preview), SAS commitment.
    created_at: i64,
    origin_network: Option<String>,
    sas_commitment: Option<Vec<u8>>,
}

/// Locks and loads the live key with this code, of `tenant` if the service is confined to one
/// (`ServiceAuth::confined_tenant_id`): another tenant's key is then neither found nor locked.
async fn load(
    c: &mut PgConnection,
    code_hash: &[u8],
    tenant: Option<&str>,
) -> Result<Option<KeyRow>, StoreError> {
    let row = sqlx::query(
        "SELECT id, tenant_id, label, kind, algorithm, spki, secret_sealed, fingerprint,
                ssh_fingerprint, jwk_thumbprint, proven, policy, state, expires_at, retrievals,
                failed_password_attempts, pending_retrieval_id, pending_service_id, confirm_by,
                password_hash, created_at, origin_network, sas_commitment
         FROM keys WHERE code_hash = $1 AND ($2::text IS NULL OR tenant_id = $2) FOR UPDATE",
    )
    .bind(code_hash)
    .bind(tenant)
    .fetch_optional(c)
    .await
    .map_err(db)?;
    let Some(r) = row else {
        return Ok(None);
    };
    Ok(Some(KeyRow {
        id: r.try_get(0).map_err(db)?,
        tenant_id: r.try_get(1).map_err(db)?,
        label: r.try_get(2).map_err(db)?,
        kind: r.try_get(3).map_err(db)?,
        algorithm: r.try_get(4).map_err(db)?,
        spki: r.try_get(5).map_err(db)?,
        secret_sealed: r.try_get(6).map_err(db)?,
        fingerprint: r.try_get(7).map_err(db)?,
        ssh_fingerprint: r.try_get(8).map_err(db)?,
        jwk_thumbprint: r.try_get(9).map_err(db)?,
        proven: r.try_get(10).map_err(db)?,
        policy: r.try_get(11).map_err(db)?,
        state: r.try_get(12).map_err(db)?,
        expires_at: r.try_get(13).map_err(db)?,
        retrievals: count(r.try_get(14).map_err(db)?)?,
        failed_password_attempts: count(r.try_get(15).map_err(db)?)?,
        pending_retrieval_id: r.try_get(16).map_err(db)?,
        pending_service_id: r.try_get(17).map_err(db)?,
        confirm_by: r.try_get(18).map_err(db)?,
        password_hash: r.try_get(19).map_err(db)?,
        created_at: r.try_get(20).map_err(db)?,
        origin_network: r.try_get(21).map_err(db)?,
        sas_commitment: r.try_get(22).map_err(db)?,
    }))
}

/// [`load`] by the code's hash under the current secret and, only when that finds nothing during
/// a rotation, under each previous one; a key found so is rehashed to the current secret in
/// this transaction (`rotation::rehash_code`).
async fn load_any_secret(
    c: &mut PgConnection,
    cmd: &RetrieveCommand,
    tenant: Option<&str>,
) -> Result<Option<KeyRow>, StoreError> {
    let found = load(c, &cmd.code_hash, tenant).await?;
    if found.is_some() || cmd.previous_code_hashes.is_empty() {
        return Ok(found);
    }
    for old in &cmd.previous_code_hashes {
        if let Some(row) = load(c, old, tenant).await? {
            super::rotation::rehash_code(c, &row.id, old, &cmd.code_hash).await?;
            return Ok(Some(row));
        }
    }
    Ok(None)
}

fn audit(cmd: &RetrieveCommand, outcome: &str, key_id: Option<&str>) -> AuditRecord {
    AuditRecord {
        at: cmd.now,
        actor: format!("service:{}", cmd.service.id),
        action: if cmd.preview {
            "key.preview"
        } else {
            "key.retrieve"
        },
        outcome: outcome.to_owned(),
        key_id: key_id.map(str::to_owned),
        ip: Some(cmd.source_ip),
        detail: None,
    }
}

/// The budget subject of a service.
fn subject(service: &ServiceAuth) -> String {
    format!("service:{}", service.id)
}

pub async fn retrieve(
    c: &mut PgConnection,
    cmd: &RetrieveCommand,
) -> Result<RetrieveOutcome, StoreError> {
    let subject = subject(&cmd.service);
    // With a slot taken in advance, this attempt is already in the budget.
    if cmd.budget_slot.is_none() {
        if let Some(retry) = budget_spent(c, &subject, cmd.now, cmd.budget_per_minute).await? {
            insert_coalesced_audit(c, &audit(cmd, "rate_limited", None)).await?;
            return Ok(RetrieveOutcome::RateLimited(retry));
        }
    }
    let service = Some((cmd.service.id.as_str(), cmd.service.name.as_str()));
    let confined = cmd.service.confined_tenant_id.as_deref();
    let Some(row) = load_any_secret(c, cmd, confined).await? else {
        report_stale_use(c, cmd).await?;
        return not_found(c, cmd, &subject, None).await;
    };
    let Evaluated {
        policy,
        decision,
        held_until,
    } = evaluate(
        cmd,
        &StoredFacts {
            key_id: &row.id,
            policy_json: &row.policy,
            state: &row.state,
            expires_at_ms: row.expires_at,
            retrievals: row.retrievals,
            failed_password_attempts: row.failed_password_attempts,
            pending_retrieval_id: row.pending_retrieval_id.as_deref(),
            pending_service_id: row.pending_service_id.as_deref(),
            confirm_by_ms: row.confirm_by,
            origin_network: row.origin_network.as_deref(),
        },
    )?;
    let key = KeyRef {
        key_id: &row.id,
        tenant_id: &row.tenant_id,
        label: row.label.as_deref(),
    };
    if cmd.preview && matches!(decision, Decision::Allow | Decision::AllowAgain { .. }) {
        emit(c, EventType::Previewed, &key, service, None, cmd.now).await?;
        insert_audit(c, &audit(cmd, "success", Some(&row.id))).await?;
        let tenant = super::handoff::tenant_name(c, &row.tenant_id).await?;
        return Ok(RetrieveOutcome::Previewed(Box::new(previewed(
            row, tenant,
        )?)));
    }
    match decision {
        Decision::Deny(Denial::Gone) => not_found(c, cmd, &subject, Some(&row.id)).await,
        Decision::Deny(denial) => {
            if let Denial::PasswordIncorrect { now_locked } = denial {
                sqlx::query(
                    "UPDATE keys SET failed_password_attempts = failed_password_attempts + 1
                     WHERE id = $1",
                )
                .bind(&row.id)
                .execute(&mut *c)
                .await
                .map_err(db)?;
                if now_locked {
                    sqlx::query("UPDATE keys SET state = 'locked' WHERE id = $1")
                        .bind(&row.id)
                        .execute(&mut *c)
                        .await
                        .map_err(db)?;
                    emit(c, EventType::Locked, &key, service, None, cmd.now).await?;
                }
            }
            let code = denial.code();
            charge(c, cmd, &subject).await?;
            emit(c, EventType::Denied, &key, service, Some(code), cmd.now).await?;
            insert_audit(c, &audit(cmd, code, Some(&row.id))).await?;
            Ok(RetrieveOutcome::Denied(denial))
        }
        Decision::VerifyPassword => take_slot(c, cmd, &subject, row.password_hash).await,
        Decision::AllowAgain { retrieval_id } => {
            let mut a = audit(cmd, "success", Some(&row.id));
            a.detail = Some("repeated within the confirmation grace".into());
            insert_audit(c, &a).await?;
            let confirm_by = held_until;
            Ok(RetrieveOutcome::Allowed(Box::new(handed_out(
                row,
                retrieval_id,
                confirm_by,
            ))))
        }
        Decision::Allow => {
            let retrievals = row.retrievals + 1;
            let retrieval_id = cmd.new_retrieval_id.clone();
            let mut confirm_by = None;
            if policy.require_confirmation {
                let by = confirm_deadline(cmd.now, &policy)?;
                confirm_by = Some(by);
                sqlx::query(
                    "UPDATE keys SET retrievals = $2, state = 'awaiting_confirmation',
                         pending_retrieval_id = $3, pending_service_id = $4, confirm_by = $5
                     WHERE id = $1",
                )
                .bind(&row.id)
                .bind(i64::from(retrievals))
                .bind(&retrieval_id)
                .bind(&cmd.service.id)
                .bind(ms(by))
                .execute(&mut *c)
                .await
                .map_err(db)?;
            } else {
                sqlx::query("UPDATE keys SET retrievals = $2 WHERE id = $1")
                    .bind(&row.id)
                    .bind(i64::from(retrievals))
                    .execute(&mut *c)
                    .await
                    .map_err(db)?;
            }
            if row.failed_password_attempts > 0 {
                // The count of wrong passwords is "in a row": an allowed retrieval resets it.
                sqlx::query("UPDATE keys SET failed_password_attempts = 0 WHERE id = $1")
                    .bind(&row.id)
                    .execute(&mut *c)
                    .await
                    .map_err(db)?;
            }
            super::handoff::insert_retrieval(c, &retrieval_id, &row.id, &cmd.service, cmd.now)
                .await?;
            emit(c, EventType::Retrieved, &key, service, None, cmd.now).await?;
            if !policy.require_confirmation && retrievals >= policy.max_retrievals {
                end_key(c, &row.id, KeyState::Retrieved, cmd.now).await?;
            }
            insert_audit(c, &audit(cmd, "success", Some(&row.id))).await?;
            Ok(RetrieveOutcome::Allowed(Box::new(handed_out(
                row,
                retrieval_id,
                confirm_by,
            ))))
        }
    }
}

fn handed_out(row: KeyRow, retrieval_id: String, confirm_by: Option<Timestamp>) -> RetrievedKey {
    RetrievedKey {
        retrieval_id,
        key_id: row.id,
        kind: row.kind,
        algorithm: row.algorithm,
        spki: row.spki,
        secret_sealed: row.secret_sealed,
        fingerprint: row.fingerprint,
        ssh_fingerprint: row.ssh_fingerprint,
        jwk_thumbprint: row.jwk_thumbprint,
        label: row.label,
        proven: row.proven,
        confirm_by,
        sas_commitment: row.sas_commitment,
    }
}

fn previewed(row: KeyRow, tenant_name: String) -> Result<PreviewedKey, StoreError> {
    Ok(PreviewedKey {
        key_id: row.id,
        label: row.label,
        kind: row.kind,
        algorithm: row.algorithm,
        fingerprint: row.fingerprint,
        proven: row.proven,
        tenant_id: row.tenant_id,
        tenant_name,
        deposited_at: super::ts(row.created_at)?,
        origin_network: row.origin_network,
    })
}

async fn not_found(
    c: &mut PgConnection,
    cmd: &RetrieveCommand,
    subject: &str,
    key_id: Option<&str>,
) -> Result<RetrieveOutcome, StoreError> {
    charge(c, cmd, subject).await?;
    insert_audit(c, &audit(cmd, "not_found", key_id)).await?;
    Ok(RetrieveOutcome::NotFound)
}

/// Counts this failed retrieval against the service's budget, unless it took its slot in
/// advance (that slot is its failure).
async fn charge(
    c: &mut PgConnection,
    cmd: &RetrieveCommand,
    subject: &str,
) -> Result<(), StoreError> {
    match cmd.budget_slot {
        Some(_) => Ok(()),
        None => record_failure(c, subject, cmd.now).await,
    }
}

/// Gives back the slot of a retrieval that succeeded: its own transaction, after the
/// retrieval's commit, which locked the key without the budget.
pub async fn give_back(
    c: &mut PgConnection,
    service: &ServiceAuth,
    slot: BudgetSlot,
) -> Result<(), StoreError> {
    release_failure(c, &subject(service), slot.taken_at).await
}

/// Every rule but the password allows: take a slot of the budget for the password check (the
/// budget had room: checked above, under its row's lock) and hand back the hash to check
/// against.
async fn take_slot(
    c: &mut PgConnection,
    cmd: &RetrieveCommand,
    subject: &str,
    hash: Option<String>,
) -> Result<RetrieveOutcome, StoreError> {
    if cmd.budget_slot.is_some() {
        return Err(StoreError::Db(
            "a retrieval with a budget slot must carry the password's verdict".into(),
        ));
    }
    let hash = hash.ok_or_else(|| StoreError::Corrupt("a password without its hash".into()))?;
    record_failure(c, subject, cmd.now).await?;
    Ok(RetrieveOutcome::VerifyPassword {
        hash,
        slot: BudgetSlot { taken_at: cmd.now },
    })
}

/// A dead code presented again: tell the holder (`code.stale_used`) while the record exists,
/// unless the key is another tenant's than the service is confined to. The key row is locked so
/// that this event takes its place in the key's stream in commit order with the key's other
/// events.
async fn report_stale_use(c: &mut PgConnection, cmd: &RetrieveCommand) -> Result<(), StoreError> {
    let hit = super::rotation::tombstone(
        c,
        &cmd.code_hash,
        &cmd.previous_code_hashes,
        cmd.service.confined_tenant_id.as_deref(),
    )
    .await?;
    if let Some((key_id, tenant_id, label)) = hit {
        let key = KeyRef {
            key_id: &key_id,
            tenant_id: &tenant_id,
            label: label.as_deref(),
        };
        let service = Some((cmd.service.id.as_str(), cmd.service.name.as_str()));
        emit(c, EventType::CodeStaleUsed, &key, service, None, cmd.now).await?;
    }
    Ok(())
}

pub async fn refuse(
    c: &mut PgConnection,
    service: &ServiceAuth,
    budget_per_minute: u32,
    a: &AuditRecord,
) -> Result<Option<u64>, StoreError> {
    let subject = subject(service);
    if let Some(retry) = budget_spent(c, &subject, a.at, budget_per_minute).await? {
        let mut limited = a.clone();
        limited.outcome = "rate_limited".into();
        insert_coalesced_audit(c, &limited).await?;
        return Ok(Some(retry));
    }
    record_failure(c, &subject, a.at).await?;
    insert_audit(c, a).await?;
    Ok(None)
}

type Held = (String, String, Option<String>, i64, i64, Option<i64>);

pub async fn confirm(
    c: &mut PgConnection,
    retrieval_id: &str,
    service: &ServiceAuth,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let row: Option<Held> = sqlx::query_as(
        "SELECT id, tenant_id, label, retrievals, max_retrievals, confirm_by FROM keys
         WHERE pending_retrieval_id = $1 AND pending_service_id = $2 FOR UPDATE",
    )
    .bind(retrieval_id)
    .bind(&service.id)
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    let Some((key_id, tenant_id, label, retrievals, max, confirm_by)) = row else {
        return Ok(false);
    };
    if opt_ts(confirm_by)?.is_some_and(|by| now >= by) {
        return Ok(false);
    }
    if retrievals >= max {
        end_key(c, &key_id, KeyState::Retrieved, now).await?;
    } else {
        sqlx::query(
            "UPDATE keys SET state = 'active', pending_retrieval_id = NULL,
                 pending_service_id = NULL, confirm_by = NULL WHERE id = $1",
        )
        .bind(&key_id)
        .execute(&mut *c)
        .await
        .map_err(db)?;
    }
    let key = KeyRef {
        key_id: &key_id,
        tenant_id: &tenant_id,
        label: label.as_deref(),
    };
    let svc = Some((service.id.as_str(), service.name.as_str()));
    emit(c, EventType::Confirmed, &key, svc, None, now).await?;
    insert_audit(
        c,
        &AuditRecord {
            at: now,
            actor: format!("service:{}", service.id),
            action: "retrieval.confirm",
            outcome: "success".into(),
            key_id: Some(key_id.clone()),
            ip: None,
            detail: None,
        },
    )
    .await?;
    Ok(true)
}
