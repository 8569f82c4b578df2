//! SQLite: the retrieval transaction and confirmation.
//!
//! One transaction: check the service's failure budget, find the live key by code hash, ask the
//! pure policy (`keymaster_core::policy::decide`), apply what it decided (count, hold, remove,
//! lock), write the event and the audit row. There is no check-then-act across transactions,
//! so a single-use code is handed out exactly once however many requests race for it.
//!
//! A request with a password for a key that every other rule would hand out takes a slot of
//! the budget in a first transaction and writes nothing else (`VerifyPassword`); the caller
//! checks the password and retrieves again with the verdict and the slot, which is then the
//! attempt's failure, or is given back if it succeeds. The writer runs one transaction at a
//! time, so no more passwords are checked at once than the budget has room for.

use jiff::Timestamp;
use keymaster_core::policy::{Decision, Denial};
use rusqlite::{params, Connection, OptionalExtension};

use super::ms;
use super::rows::{
    budget_spent, emit, emit_known, end_key, end_key_counting, insert_audit,
    insert_coalesced_audit, opt_ts, record_failure, release_failure,
};
use super::writer::db;
use crate::store::decision::{confirm_deadline, evaluate, Evaluated, StoredFacts};
use crate::store::events::{EventType, KeyRef};
use crate::store::{
    AuditRecord, BudgetSlot, KeyState, PreviewedKey, RetrieveCommand, RetrieveOutcome,
    RetrievedKey, ServiceAuth, StoreError,
};

struct Row {
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
    ended_at: Option<i64>,
    /// The key has notification targets of its own (`notify` is set).
    notify: bool,
    /// argon2id PHC string of the policy password.
    password_hash: Option<String>,
    /// Verified handoff: deposit time and network (for a preview), SAS commitment.
    handoff: super::handoff::KeyHandoff,
}

/// The key with this code, of `tenant` if the service is confined to one
/// (`ServiceAuth::confined_tenant_id`): another tenant's key is then not found at all.
fn load(c: &Connection, code_hash: &[u8], tenant: Option<&str>) -> Result<Option<Row>, StoreError> {
    c.prepare_cached(
        "SELECT id, tenant_id, label, kind, algorithm, spki, secret_sealed, fingerprint,
                ssh_fingerprint, jwk_thumbprint, proven, policy, state, expires_at, retrievals,
                failed_password_attempts, pending_retrieval_id, pending_service_id, confirm_by,
                ended_at, notify IS NOT NULL, password_hash, created_at, origin_network,
                sas_commitment
         FROM keys WHERE code_hash = ?1 AND (?2 IS NULL OR tenant_id = ?2)",
    )
    .and_then(|mut s| {
        s.query_row(params![code_hash, tenant], |r| {
            Ok(Row {
                id: r.get(0)?,
                tenant_id: r.get(1)?,
                label: r.get(2)?,
                kind: r.get(3)?,
                algorithm: r.get(4)?,
                spki: r.get(5)?,
                secret_sealed: r.get(6)?,
                fingerprint: r.get(7)?,
                ssh_fingerprint: r.get(8)?,
                jwk_thumbprint: r.get(9)?,
                proven: r.get(10)?,
                policy: r.get(11)?,
                state: r.get(12)?,
                expires_at: r.get(13)?,
                retrievals: r.get(14)?,
                failed_password_attempts: r.get(15)?,
                pending_retrieval_id: r.get(16)?,
                pending_service_id: r.get(17)?,
                confirm_by: r.get(18)?,
                ended_at: r.get(19)?,
                notify: r.get(20)?,
                password_hash: r.get(21)?,
                handoff: super::handoff::KeyHandoff::from_row(r, 22)?,
            })
        })
        .optional()
    })
    .map_err(db)
}

/// [`load`] by the code's hash under the current secret and, only when that finds nothing during
/// a rotation, under each previous one; a live key found so is rehashed to the current secret
/// in this transaction (`rotation::rehash_code`).
fn load_any_secret(
    c: &Connection,
    cmd: &RetrieveCommand,
    tenant: Option<&str>,
) -> Result<Option<Row>, StoreError> {
    let found = load(c, &cmd.code_hash, tenant)?;
    if found.is_some() || cmd.previous_code_hashes.is_empty() {
        return Ok(found);
    }
    for old in &cmd.previous_code_hashes {
        if let Some(row) = load(c, old, tenant)? {
            if row.ended_at.is_none() {
                super::rotation::rehash_code(c, &row.id, old, &cmd.code_hash)?;
            }
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

pub fn retrieve(c: &Connection, cmd: &RetrieveCommand) -> Result<RetrieveOutcome, StoreError> {
    let subject = subject(&cmd.service);
    // With a slot taken in advance, this attempt is already in the budget.
    if cmd.budget_slot.is_none() {
        if let Some(retry) = budget_spent(c, &subject, cmd.now, cmd.budget_per_minute)? {
            insert_coalesced_audit(c, &audit(cmd, "rate_limited", None))?;
            return Ok(RetrieveOutcome::RateLimited(retry));
        }
    }
    let service = Some((cmd.service.id.as_str(), cmd.service.name.as_str()));
    let confined = cmd.service.confined_tenant_id.as_deref();
    let row = match load_any_secret(c, cmd, confined)? {
        Some(row) if row.ended_at.is_none() => row,
        found => {
            report_stale_use(c, cmd, found.map(|r| (r.id, r.tenant_id, r.label)))?;
            return not_found(c, cmd, &subject, None);
        }
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
            origin_network: row.handoff.origin_network.as_deref(),
        },
    )?;
    let key = KeyRef {
        key_id: &row.id,
        tenant_id: &row.tenant_id,
        label: row.label.as_deref(),
    };
    // This key's events: the row read above says whether it has targets of its own.
    let event = |ty: EventType, reason: Option<&str>| {
        emit_known(c, ty, &key, row.notify, service, reason, cmd.now)
    };
    if cmd.preview && matches!(decision, Decision::Allow | Decision::AllowAgain { .. }) {
        give_back(c, cmd, &subject)?;
        event(EventType::Previewed, None)?;
        insert_audit(c, &audit(cmd, "success", Some(&row.id)))?;
        let tenant = super::handoff::tenant_name(c, &row.tenant_id)?;
        return Ok(RetrieveOutcome::Previewed(Box::new(previewed(
            row, tenant,
        )?)));
    }
    match decision {
        Decision::Deny(Denial::Gone) => not_found(c, cmd, &subject, Some(&row.id)),
        Decision::Deny(denial) => {
            if let Denial::PasswordIncorrect { now_locked } = denial {
                c.execute(
                    "UPDATE keys SET failed_password_attempts = failed_password_attempts + 1
                     WHERE id = ?1",
                    params![row.id],
                )
                .map_err(db)?;
                if now_locked {
                    c.execute(
                        "UPDATE keys SET state = 'locked' WHERE id = ?1",
                        params![row.id],
                    )
                    .map_err(db)?;
                    event(EventType::Locked, None)?;
                }
            }
            let code = denial.code();
            charge(c, cmd, &subject)?;
            event(EventType::Denied, Some(code))?;
            insert_audit(c, &audit(cmd, code, Some(&row.id)))?;
            Ok(RetrieveOutcome::Denied(denial))
        }
        Decision::VerifyPassword => take_slot(c, cmd, &subject, row.password_hash),
        Decision::AllowAgain { retrieval_id } => {
            give_back(c, cmd, &subject)?;
            let mut a = audit(cmd, "success", Some(&row.id));
            a.detail = Some("repeated within the confirmation grace".into());
            insert_audit(c, &a)?;
            Ok(RetrieveOutcome::Allowed(Box::new(handed_out(
                row,
                retrieval_id,
                held_until,
            ))))
        }
        Decision::Allow => {
            give_back(c, cmd, &subject)?;
            if row.failed_password_attempts > 0 {
                // An allowed retrieval of a key with a password carried the right one: the
                // count of wrong passwords is "in a row" (`KeyFacts::failed_password_attempts`).
                c.execute(
                    "UPDATE keys SET failed_password_attempts = 0 WHERE id = ?1",
                    params![row.id],
                )
                .map_err(db)?;
            }
            let retrievals = row.retrievals + 1;
            let retrieval_id = cmd.new_retrieval_id.clone();
            let mut confirm_by = None;
            if policy.require_confirmation {
                let by = confirm_deadline(cmd.now, &policy)?;
                confirm_by = Some(by);
                c.execute(
                    "UPDATE keys SET retrievals = ?2, state = 'awaiting_confirmation',
                         pending_retrieval_id = ?3, pending_service_id = ?4, confirm_by = ?5
                     WHERE id = ?1",
                    params![row.id, retrievals, retrieval_id, cmd.service.id, ms(by)],
                )
                .map_err(db)?;
            } else if retrievals >= policy.max_retrievals {
                end_key_counting(c, &row.id, KeyState::Retrieved, cmd.now, Some(retrievals))?;
            } else {
                c.prepare_cached("UPDATE keys SET retrievals = ?2 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![row.id, retrievals]))
                    .map_err(db)?;
            }
            super::handoff::insert_retrieval(c, &retrieval_id, &row.id, &cmd.service, cmd.now)?;
            event(EventType::Retrieved, None)?;
            insert_audit(c, &audit(cmd, "success", Some(&row.id)))?;
            Ok(RetrieveOutcome::Allowed(Box::new(handed_out(
                row,
                retrieval_id,
                confirm_by,
            ))))
        }
    }
}

fn handed_out(row: Row, retrieval_id: String, confirm_by: Option<Timestamp>) -> RetrievedKey {
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
        sas_commitment: row.handoff.sas_commitment,
    }
}

fn previewed(row: Row, tenant_name: String) -> Result<PreviewedKey, StoreError> {
    Ok(PreviewedKey {
        key_id: row.id,
        label: row.label,
        kind: row.kind,
        algorithm: row.algorithm,
        fingerprint: row.fingerprint,
        proven: row.proven,
        tenant_id: row.tenant_id,
        tenant_name,
        deposited_at: super::ts(row.handoff.created_at)?,
        origin_network: row.handoff.origin_network,
    })
}

fn not_found(
    c: &Connection,
    cmd: &RetrieveCommand,
    subject: &str,
    key_id: Option<&str>,
) -> Result<RetrieveOutcome, StoreError> {
    charge(c, cmd, subject)?;
    insert_audit(c, &audit(cmd, "not_found", key_id))?;
    Ok(RetrieveOutcome::NotFound)
}

/// Counts this failed retrieval against the service's budget, unless it took its slot in
/// advance (that slot is its failure).
fn charge(c: &Connection, cmd: &RetrieveCommand, subject: &str) -> Result<(), StoreError> {
    match cmd.budget_slot {
        Some(_) => Ok(()),
        None => record_failure(c, subject, cmd.now),
    }
}

/// A retrieval that succeeds gives back the slot it took in advance.
fn give_back(c: &Connection, cmd: &RetrieveCommand, subject: &str) -> Result<(), StoreError> {
    match cmd.budget_slot {
        Some(slot) => release_failure(c, subject, slot.taken_at),
        None => Ok(()),
    }
}

/// Every rule but the password allows: take a slot of the budget for the password check (the
/// budget had room: checked above) and hand back the hash to check against.
fn take_slot(
    c: &Connection,
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
    record_failure(c, subject, cmd.now)?;
    Ok(RetrieveOutcome::VerifyPassword {
        hash,
        slot: BudgetSlot { taken_at: cmd.now },
    })
}

/// A dead code presented again: tell the holder (`code.stale_used`) while the record exists,
/// unless the key is another tenant's than the service is confined to. `ended` is the key whose
/// row holds the code (the row of a key that ended is its code's tombstone); without it, a
/// replaced code (or that of a key that ended before migration 3) is looked up in `tombstones`.
fn report_stale_use(
    c: &Connection,
    cmd: &RetrieveCommand,
    ended: Option<(String, String, Option<String>)>,
) -> Result<(), StoreError> {
    let hit = match ended {
        Some(key) => Some(key),
        None => super::rotation::tombstone(
            c,
            &cmd.code_hash,
            &cmd.previous_code_hashes,
            cmd.service.confined_tenant_id.as_deref(),
        )?,
    };
    if let Some((key_id, tenant_id, label)) = hit {
        let key = KeyRef {
            key_id: &key_id,
            tenant_id: &tenant_id,
            label: label.as_deref(),
        };
        let service = Some((cmd.service.id.as_str(), cmd.service.name.as_str()));
        emit(c, EventType::CodeStaleUsed, &key, service, None, cmd.now)?;
    }
    Ok(())
}

pub fn refuse(
    c: &Connection,
    service: &ServiceAuth,
    budget_per_minute: u32,
    a: &AuditRecord,
) -> Result<Option<u64>, StoreError> {
    let subject = subject(service);
    if let Some(retry) = budget_spent(c, &subject, a.at, budget_per_minute)? {
        let mut limited = a.clone();
        limited.outcome = "rate_limited".into();
        insert_coalesced_audit(c, &limited)?;
        return Ok(Some(retry));
    }
    record_failure(c, &subject, a.at)?;
    insert_audit(c, a)?;
    Ok(None)
}

pub fn confirm(
    c: &Connection,
    retrieval_id: &str,
    service: &ServiceAuth,
    now: Timestamp,
) -> Result<bool, StoreError> {
    type Held = (String, String, Option<String>, u32, u32, Option<i64>);
    let row: Option<Held> = c
        .query_row(
            "SELECT id, tenant_id, label, retrievals, max_retrievals, confirm_by FROM keys
             WHERE pending_retrieval_id = ?1 AND pending_service_id = ?2",
            params![retrieval_id, service.id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .optional()
        .map_err(db)?;
    let Some((key_id, tenant_id, label, retrievals, max, confirm_by)) = row else {
        return Ok(false);
    };
    if opt_ts(confirm_by)?.is_some_and(|by| now >= by) {
        return Ok(false);
    }
    if retrievals >= max {
        end_key(c, &key_id, KeyState::Retrieved, now)?;
    } else {
        c.execute(
            "UPDATE keys SET state = 'active', pending_retrieval_id = NULL,
                 pending_service_id = NULL, confirm_by = NULL WHERE id = ?1",
            params![key_id],
        )
        .map_err(db)?;
    }
    let key = KeyRef {
        key_id: &key_id,
        tenant_id: &tenant_id,
        label: label.as_deref(),
    };
    let svc = Some((service.id.as_str(), service.name.as_str()));
    emit(c, EventType::Confirmed, &key, svc, None, now)?;
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
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use keymaster_core::policy::PasswordCheck;
    use rusqlite::{params, Connection};

    use super::retrieve;
    use crate::store::sqlite::{migrate, migrated_to};
    use crate::store::{RetrieveCommand, RetrieveOutcome, ServiceAuth};

    fn key(c: &Connection, id: &str, code_hash: Option<&[u8]>, state: &str, ended: Option<i64>) {
        c.execute(
            "INSERT INTO keys (id, tenant_id, holder_hash, code_hash, code_format, kind, algorithm,
                 spki, proven, policy, state, created_at, expires_at, ended_at, max_retrievals)
             VALUES (?1, 'ten_1', CAST(?1 AS BLOB), ?2, 'digits', 'public_key', 'ed25519', x'00', 0,
                 '{\"max_retrievals\":1}', ?3, 0, 9999999999999, ?4, 1)",
            params![id, code_hash, state, ended],
        )
        .unwrap();
    }

    fn cmd(code_hash: &[u8]) -> RetrieveCommand {
        RetrieveCommand {
            code_hash: code_hash.to_vec(),
            previous_code_hashes: Vec::new(),
            service: ServiceAuth {
                id: "svc_1".into(),
                name: "s".into(),
                domains: vec![],
                allowed_cidrs: vec![],
                confined_tenant_id: None,
            },
            source_ip: "127.0.0.1".parse().unwrap(),
            context: None,
            password: PasswordCheck::NotGiven,
            now: Timestamp::now(),
            budget_per_minute: 100,
            new_retrieval_id: "ret_1".into(),
            budget_slot: None,
            preview: false,
        }
    }

    fn stale_uses(c: &Connection, key_id: &str) -> i64 {
        c.query_row(
            "SELECT count(*) FROM events WHERE key_id = ?1 AND type = 'code.stale_used'",
            params![key_id],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Codes stay in the row of an ended key since migration 3; a key that ended before it has
    /// its code in `tombstones`. Both kinds of dead code are reported to their holder, neither
    /// hands anything out, and ending a key writes no tombstone row.
    #[test]
    fn dead_codes_are_reported_whether_in_their_row_or_in_an_old_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let c = migrated_to(&dir.path().join("k.db"), 2);
        key(&c, "key_old", None, "retrieved", Some(1));
        c.execute(
            "INSERT INTO tombstones (code_hash, key_id, died_at) VALUES (x'0a', 'key_old', 1)",
            [],
        )
        .unwrap();
        migrate(&c).unwrap();
        key(&c, "key_new", Some(b"\x0b"), "active", None);

        assert!(matches!(
            retrieve(&c, &cmd(b"\x0b")).unwrap(),
            RetrieveOutcome::Allowed(_)
        ));
        let kept: Option<Vec<u8>> = c
            .query_row("SELECT code_hash FROM keys WHERE id = 'key_new'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(kept.as_deref(), Some(&b"\x0b"[..]));
        assert_eq!(stale_uses(&c, "key_new"), 0);

        for (code, key_id) in [(b"\x0b", "key_new"), (b"\x0a", "key_old")] {
            assert!(matches!(
                retrieve(&c, &cmd(code)).unwrap(),
                RetrieveOutcome::NotFound
            ));
            assert_eq!(stale_uses(&c, key_id), 1, "{key_id}");
        }
        let tombstones: i64 = c
            .query_row("SELECT count(*) FROM tombstones", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tombstones, 1, "only the old key's tombstone");
    }

    /// A service confined to a tenant meets the codes of another tenant's keys (live, ended
    /// with the code in its row, or in an old tombstone) as unknown codes: nothing handed out,
    /// nothing changed, no event; the key's own tenant still gets its stale use reported.
    #[test]
    fn a_confined_service_does_not_see_another_tenants_keys() {
        let dir = tempfile::tempdir().unwrap();
        let c = migrated_to(&dir.path().join("k.db"), 2);
        key(&c, "key_old", None, "retrieved", Some(1));
        c.execute(
            "INSERT INTO tombstones (code_hash, key_id, died_at) VALUES (x'0a', 'key_old', 1)",
            [],
        )
        .unwrap();
        migrate(&c).unwrap();
        key(&c, "key_live", Some(b"\x0b"), "active", None);
        key(&c, "key_ended", Some(b"\x0c"), "retrieved", Some(1));
        let events = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .unwrap()
        };
        let confined = |code: &[u8], tenant: &str| {
            let mut cmd = cmd(code);
            cmd.service.confined_tenant_id = Some(tenant.into());
            cmd
        };

        for code in [b"\x0b", b"\x0c", b"\x0a"] {
            assert!(matches!(
                retrieve(&c, &confined(code, "ten_2")).unwrap(),
                RetrieveOutcome::NotFound
            ));
        }
        assert_eq!(events(&c), 0);
        let retrievals: i64 = c
            .query_row(
                "SELECT retrievals FROM keys WHERE id = 'key_live' AND state = 'active'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(retrievals, 0);

        assert!(matches!(
            retrieve(&c, &confined(b"\x0a", "ten_1")).unwrap(),
            RetrieveOutcome::NotFound
        ));
        assert_eq!(stale_uses(&c, "key_old"), 1);
        assert!(matches!(
            retrieve(&c, &confined(b"\x0b", "ten_1")).unwrap(),
            RetrieveOutcome::Allowed(_)
        ));
    }
}
