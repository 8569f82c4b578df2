//! The lifecycle of a stored key, backend-neutral and pure: for each transition (retrieve,
//! confirm, expire, revoke, recode) the [`Plan`] of its effects, computed once from the facts a
//! backend loaded and, for a retrieval, the policy's decision. A backend loads the facts, asks
//! for the plan here and executes it with its own SQL (`apply`, one per backend), inside the
//! transaction that loaded the facts. See "Backend contract" in `docs/architecture.md`.
//!
//! Not responsible for reading or writing rows, nor for deciding a retrieval (that is
//! `keymaster_core::policy::decide`, called through [`evaluate`]).

use jiff::{SignedDuration, Timestamp};
use keymaster_core::policy::{decide, Decision, Denial, KeyFacts, Pending, Policy, Requester};

use super::columns::{parse_format, Columns};
use super::events::{EventType, KeyRef};
use super::{
    AuditRecord, BudgetSlot, KeyRecord, KeyState, PreviewedKey, RecodeOutcome, RetrieveCommand,
    RetrieveOutcome, RetrievedKey, ServiceAuth, StoreError,
};

/// Whether a key row is live: it has not ended. Every backend sets `ended_at` when a key ends
/// (revoked, used up, expired, grace over) and never clears it; the row stays until it is
/// purged (where its dead code is kept differs per backend: "Backend contract",
/// `docs/architecture.md`). A live key may still be past its expiry (see
/// [`keymaster_core::policy::is_expired`]): the sweeper ends it later.
pub const LIVE_SQL: &str = "ended_at IS NULL";

/// The columns of a key that a retrieval reads, in [`KeyRow::read`]'s order.
pub const KEY_COLUMNS: &str = "id, tenant_id, label, kind, algorithm, spki, secret_sealed,
    fingerprint, ssh_fingerprint, jwk_thumbprint, proven, policy, state, expires_at, retrievals,
    failed_password_attempts, pending_retrieval_id, pending_service_id, confirm_by, ended_at,
    notify IS NOT NULL, password_hash, created_at, origin_network, sas_commitment";

/// A key's row as a retrieval reads it (times in Unix milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub id: String,
    pub tenant_id: String,
    pub label: Option<String>,
    pub kind: String,
    pub algorithm: String,
    pub spki: Option<Vec<u8>>,
    pub secret_sealed: Option<Vec<u8>>,
    pub fingerprint: Option<String>,
    pub ssh_fingerprint: Option<String>,
    pub jwk_thumbprint: Option<String>,
    pub proven: bool,
    /// JSON of [`Policy`].
    pub policy: String,
    pub state: String,
    pub expires_at: i64,
    pub retrievals: u32,
    pub failed_password_attempts: u32,
    pub pending_retrieval_id: Option<String>,
    pub pending_service_id: Option<String>,
    pub confirm_by: Option<i64>,
    pub ended_at: Option<i64>,
    /// The key has notification targets of its own (`notify` is set).
    pub notify: bool,
    /// argon2id PHC string of the policy password.
    pub password_hash: Option<String>,
    /// The deposit's time, for a preview.
    pub created_at: i64,
    /// The depositor's network as stored (`203.0.113.0/24`).
    pub origin_network: Option<String>,
    /// SHA-256 of the device's SAS nonce, as deposited.
    pub sas_commitment: Option<Vec<u8>>,
}

impl KeyRow {
    /// Decodes [`KEY_COLUMNS`], starting at column 0.
    pub fn read(r: &impl Columns) -> Result<KeyRow, StoreError> {
        Ok(KeyRow {
            id: r.text(0)?,
            tenant_id: r.text(1)?,
            label: r.opt_text(2)?,
            kind: r.text(3)?,
            algorithm: r.text(4)?,
            spki: r.opt_bytes(5)?,
            secret_sealed: r.opt_bytes(6)?,
            fingerprint: r.opt_text(7)?,
            ssh_fingerprint: r.opt_text(8)?,
            jwk_thumbprint: r.opt_text(9)?,
            proven: r.flag(10)?,
            policy: r.text(11)?,
            state: r.text(12)?,
            expires_at: r.int(13)?,
            retrievals: r.count(14)?,
            failed_password_attempts: r.count(15)?,
            pending_retrieval_id: r.opt_text(16)?,
            pending_service_id: r.opt_text(17)?,
            confirm_by: r.opt_int(18)?,
            ended_at: r.opt_int(19)?,
            notify: r.flag(20)?,
            password_hash: r.opt_text(21)?,
            created_at: r.int(22)?,
            origin_network: r.opt_text(23)?,
            sas_commitment: r.opt_bytes(24)?,
        })
    }

    /// See [`LIVE_SQL`].
    pub fn is_live(&self) -> bool {
        self.ended_at.is_none()
    }

    fn ident(&self) -> KeyIdent {
        KeyIdent {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            label: self.label.clone(),
            notify: Some(self.notify),
        }
    }
}

/// The facts every event of a key carries, and whether the key has notification targets of
/// its own when the row that says so was read (a backend may use it to spare a read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdent {
    pub id: String,
    pub tenant_id: String,
    pub label: Option<String>,
    pub notify: Option<bool>,
}

impl KeyIdent {
    /// Without the `notify` hint.
    pub fn new(id: String, tenant_id: String, label: Option<String>) -> KeyIdent {
        KeyIdent {
            id,
            tenant_id,
            label,
            notify: None,
        }
    }

    pub fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            key_id: &self.id,
            tenant_id: &self.tenant_id,
            label: self.label.as_deref(),
        }
    }

    fn of(rec: &KeyRecord) -> KeyIdent {
        KeyIdent::new(rec.id.clone(), rec.tenant_id.clone(), rec.label.clone())
    }
}

/// What a transition does to the failure budget of the service it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetEffect {
    /// Nothing.
    Keep,
    /// Count one failure (the subject's fixed one-minute window).
    Charge,
    /// Give back the failure counted in advance for a password check that succeeded. A backend
    /// whose budget lock must be taken before the key's may do this after the commit, in a
    /// transaction of its own (neither backend does now).
    GiveBack(BudgetSlot),
}

/// What a transition does to the key's row. Every variant is one `UPDATE` of that row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// Nothing.
    Keep,
    /// A wrong password: the count of wrong passwords in a row becomes `failed_attempts`, and
    /// the state `locked` when `lock`.
    WrongPassword { failed_attempts: u32, lock: bool },
    /// A retrieval that leaves the key live and not held: the count becomes `retrievals`, and
    /// the wrong passwords in a row start again from 0 (this one carried the right one).
    Count { retrievals: u32 },
    /// A retrieval that holds the key for its service's confirmation: as `Count`, and the
    /// state becomes `awaiting_confirmation` with the pending retrieval.
    Hold {
        retrievals: u32,
        retrieval_id: String,
        service_id: String,
        confirm_by: Timestamp,
    },
    /// A held key is confirmed and stays live: the state becomes `active`, the hold is cleared.
    Release,
    /// The key's life ends: the state becomes `state`, `ended_at` the plan's time, the key
    /// material and the password hash are cleared, and the hold if `clear_hold`. The code
    /// hash stays in the row (the code's tombstone until the row is purged). `retrievals`,
    /// when given, is the count the ending retrieval reached.
    End {
        state: KeyState,
        retrievals: Option<u32>,
        clear_hold: bool,
    },
    /// The key gets a new code: the old one (`old_code_hash`) goes to `tombstones` (replacing
    /// any tombstone of the same value), a tombstone of the new value is removed. A new code
    /// that is taken (live, or kept by an ended key) makes the whole transition
    /// [`Applied::CodeTaken`], with nothing changed.
    Recode {
        old_code_hash: Vec<u8>,
        new_code_hash: Vec<u8>,
    },
    /// The key's expiry moves.
    SetExpiry(Timestamp),
}

/// An audit row a plan appends.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditEffect {
    None,
    /// A row of its own.
    Row(AuditRecord),
    /// A refusal that changes nothing else, coalesced per actor, action, outcome and minute.
    Coalesced(AuditRecord),
}

/// One event a plan emits, of the plan's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEffect {
    pub ty: EventType,
    /// The service the event names (`(id, name)`).
    pub service: Option<(String, String)>,
    pub reason: Option<&'static str>,
}

/// The effects of one transition of one key, in the order a backend executes them: budget,
/// key row, retrieval record, events (in their order), audit row. All of them are in the
/// transaction that loaded the facts, so that they happen together or not at all.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// When the transition happens: the events' time and `ended_at`.
    pub at: Timestamp,
    /// The key the row change and the events are of (`None`: no key was found).
    pub key: Option<KeyIdent>,
    /// The budget subject (`service:<id>`) and what happens to it.
    pub budget: (String, BudgetEffect),
    pub change: KeyChange,
    /// A retrieval that handed the key out, recorded for the verified handoff:
    /// `(retrieval_id, service_id)`.
    pub retrieval: Option<(String, String)>,
    pub events: Vec<EventEffect>,
    pub audit: AuditEffect,
}

impl Plan {
    /// A plan that changes nothing.
    pub fn nothing(at: Timestamp) -> Plan {
        Plan {
            at,
            key: None,
            budget: (String::new(), BudgetEffect::Keep),
            change: KeyChange::Keep,
            retrieval: None,
            events: Vec::new(),
            audit: AuditEffect::None,
        }
    }

    fn event(
        &mut self,
        ty: EventType,
        service: Option<&ServiceAuth>,
        reason: Option<&'static str>,
    ) {
        self.events.push(EventEffect {
            ty,
            service: service.map(|s| (s.id.clone(), s.name.clone())),
            reason,
        });
    }
}

/// How applying a plan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The new code of a [`KeyChange::Recode`] is taken: nothing was changed.
    CodeTaken,
}

/// The budget subject of a service.
pub fn subject(service: &ServiceAuth) -> String {
    format!("service:{}", service.id)
}

fn ts(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
}

/// What a retrieval found, as the backend loaded it.
#[derive(Debug, Clone)]
pub enum Found {
    /// The service's failure budget is spent (the key was not looked up): the seconds to wait.
    RateLimited(u64),
    /// A live key with this code.
    Live(Box<KeyRow>),
    /// A dead code of this key: its row ended, or the code was replaced (`tombstones`).
    Dead(KeyIdent),
    /// No key has or had this code (or it is another tenant's than the service is confined to).
    Unknown,
}

impl Found {
    /// The key row with the code, if any: live, or ended (then its dead code).
    pub fn from_row(row: Option<KeyRow>) -> Option<Found> {
        match row {
            Some(r) if r.is_live() => Some(Found::Live(Box::new(r))),
            Some(r) => Some(Found::Dead(r.ident())),
            None => None,
        }
    }
}

/// How a retrieval is answered, once its plan is applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    RateLimited(u64),
    NotFound,
    Denied(Denial),
    /// Hand the key out under this retrieval id, held until `confirm_by` if held.
    HandOut {
        retrieval_id: String,
        confirm_by: Option<Timestamp>,
    },
    VerifyPassword(String, BudgetSlot),
    /// Show the key's provenance (the backend adds the tenant's name).
    Preview,
}

/// The policy and what it decided.
pub struct Evaluated {
    pub policy: Policy,
    pub decision: Decision,
    /// The deadline of the hold the key is under, if any.
    pub held_until: Option<Timestamp>,
}

/// Runs `keymaster_core::policy::decide` on a stored key for this retrieval.
pub fn evaluate(cmd: &RetrieveCommand, row: &KeyRow) -> Result<Evaluated, StoreError> {
    let policy: Policy = serde_json::from_str(&row.policy)
        .map_err(|e| StoreError::Corrupt(format!("policy of {}: {e}", row.id)))?;
    let pending = match (
        &row.pending_retrieval_id,
        &row.pending_service_id,
        row.confirm_by,
    ) {
        (Some(rid), Some(sid), Some(by)) => Some(Pending {
            retrieval_id: rid.clone(),
            service_id: sid.clone(),
            confirm_by: ts(by)?,
        }),
        _ => None,
    };
    let held_until = pending.as_ref().map(|p| p.confirm_by);
    let facts = KeyFacts {
        expires_at: ts(row.expires_at)?,
        retrievals: row.retrievals,
        failed_password_attempts: row.failed_password_attempts,
        locked: row.state == KeyState::Locked.as_str(),
        pending,
        origin_network: row
            .origin_network
            .as_deref()
            .map(|n| {
                n.parse()
                    .map_err(|e| StoreError::Corrupt(format!("origin_network of {}: {e}", row.id)))
            })
            .transpose()?,
    };
    let requester = Requester {
        service_id: &cmd.service.id,
        service_domains: &cmd.service.domains,
        source_ip: cmd.source_ip,
        context: cmd.context.as_ref(),
        password: cmd.password,
    };
    let decision = decide(&policy, &facts, &requester, cmd.now);
    Ok(Evaluated {
        policy,
        decision,
        held_until,
    })
}

/// When a hold for confirmation that starts `now` ends, to the stored millisecond (so that a
/// repeated retrieval, which reads it back, reports the same `confirm_by`).
pub fn confirm_deadline(now: Timestamp, policy: &Policy) -> Result<Timestamp, StoreError> {
    let by = now
        .checked_add(SignedDuration::from_secs(i64::from(
            policy.confirm_grace_seconds,
        )))
        .map_err(|e| StoreError::Db(e.to_string()))?;
    ts(by.as_millisecond())
}

fn retrieval_audit(cmd: &RetrieveCommand, outcome: &str, key_id: Option<&str>) -> AuditRecord {
    AuditRecord {
        at: cmd.now,
        actor: subject(&cmd.service),
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

/// The plan of a retrieval and how to answer it.
///
/// - Rate limited: a coalesced audit row, nothing else.
/// - A dead code: `code.stale_used` to its key's holder; then as an unknown code.
/// - Unknown code, or a key that is gone: a failure counted (unless a slot was taken in
///   advance: that slot is this failure) and a `not_found` audit row.
/// - Denied: a wrong password counts (and locks at the limit, `key.locked`), a failure is
///   counted, `key.denied` with the rule's code, an audit row with it.
/// - Every rule but the password allows: a slot of the budget is taken and nothing else is
///   written; the caller checks the password and retrieves again.
/// - Allowed again within the grace: the slot (if any) given back, an audit row.
/// - Allowed: the slot given back, the key counted, held, or ended at its last retrieval; the
///   retrieval recorded, `key.retrieved`, an audit row.
/// - A preview that would be allowed: the slot given back, `key.previewed`, an audit row.
pub fn plan_retrieve(cmd: &RetrieveCommand, found: &Found) -> Result<(Plan, Answer), StoreError> {
    let mut plan = Plan::nothing(cmd.now);
    let subject = subject(&cmd.service);
    // A failure with a slot taken in advance is already counted.
    let charge = match cmd.budget_slot {
        Some(_) => BudgetEffect::Keep,
        None => BudgetEffect::Charge,
    };
    let give_back = match cmd.budget_slot {
        Some(slot) => BudgetEffect::GiveBack(slot),
        None => BudgetEffect::Keep,
    };
    let svc = Some(&cmd.service);
    let not_found = |mut plan: Plan, key_id: Option<&str>| {
        plan.budget = (subject.clone(), charge.clone());
        plan.audit = AuditEffect::Row(retrieval_audit(cmd, "not_found", key_id));
        (plan, Answer::NotFound)
    };
    let row = match found {
        Found::RateLimited(retry) => {
            plan.audit = AuditEffect::Coalesced(retrieval_audit(cmd, "rate_limited", None));
            return Ok((plan, Answer::RateLimited(*retry)));
        }
        Found::Unknown => return Ok(not_found(plan, None)),
        Found::Dead(key) => {
            plan.key = Some(key.clone());
            plan.event(EventType::CodeStaleUsed, svc, None);
            return Ok(not_found(plan, None));
        }
        Found::Live(row) => row,
    };
    let Evaluated {
        policy,
        decision,
        held_until,
    } = evaluate(cmd, row)?;
    plan.key = Some(row.ident());
    let success = |mut plan: Plan, detail: Option<&str>| {
        plan.budget = (subject.clone(), give_back.clone());
        let mut a = retrieval_audit(cmd, "success", Some(&row.id));
        a.detail = detail.map(str::to_owned);
        plan.audit = AuditEffect::Row(a);
        plan
    };
    if cmd.preview && matches!(decision, Decision::Allow | Decision::AllowAgain { .. }) {
        let mut plan = success(plan, None);
        plan.event(EventType::Previewed, svc, None);
        return Ok((plan, Answer::Preview));
    }
    match decision {
        Decision::Deny(Denial::Gone) => Ok(not_found(plan, Some(&row.id))),
        Decision::Deny(denial) => {
            if let Denial::PasswordIncorrect { now_locked } = denial {
                plan.change = KeyChange::WrongPassword {
                    failed_attempts: row.failed_password_attempts.saturating_add(1),
                    lock: now_locked,
                };
                if now_locked {
                    plan.event(EventType::Locked, svc, None);
                }
            }
            let code = denial.code();
            plan.budget = (subject.clone(), charge);
            plan.event(EventType::Denied, svc, Some(code));
            plan.audit = AuditEffect::Row(retrieval_audit(cmd, code, Some(&row.id)));
            Ok((plan, Answer::Denied(denial)))
        }
        Decision::VerifyPassword => {
            if cmd.budget_slot.is_some() {
                return Err(StoreError::Db(
                    "a retrieval with a budget slot must carry the password's verdict".into(),
                ));
            }
            let hash = row
                .password_hash
                .clone()
                .ok_or_else(|| StoreError::Corrupt("a password without its hash".into()))?;
            // The budget had room (the backend checked it before loading the key).
            plan.budget = (subject.clone(), BudgetEffect::Charge);
            plan.key = None;
            let slot = BudgetSlot { taken_at: cmd.now };
            Ok((plan, Answer::VerifyPassword(hash, slot)))
        }
        Decision::AllowAgain { retrieval_id } => {
            let plan = success(plan, Some("repeated within the confirmation grace"));
            let answer = Answer::HandOut {
                retrieval_id,
                confirm_by: held_until,
            };
            Ok((plan, answer))
        }
        Decision::Allow => {
            let mut plan = success(plan, None);
            let retrievals = row.retrievals.saturating_add(1);
            let retrieval_id = cmd.new_retrieval_id.clone();
            let mut confirm_by = None;
            plan.change = if policy.require_confirmation {
                let by = confirm_deadline(cmd.now, &policy)?;
                confirm_by = Some(by);
                KeyChange::Hold {
                    retrievals,
                    retrieval_id: retrieval_id.clone(),
                    service_id: cmd.service.id.clone(),
                    confirm_by: by,
                }
            } else if retrievals >= policy.max_retrievals {
                KeyChange::End {
                    state: KeyState::Retrieved,
                    retrievals: Some(retrievals),
                    clear_hold: false,
                }
            } else {
                KeyChange::Count { retrievals }
            };
            plan.retrieval = Some((retrieval_id.clone(), cmd.service.id.clone()));
            plan.event(EventType::Retrieved, svc, None);
            Ok((
                plan,
                Answer::HandOut {
                    retrieval_id,
                    confirm_by,
                },
            ))
        }
    }
}

/// The outcome of a retrieval from its answer and the key it found; `tenant_name` is read by
/// the backend for [`Answer::Preview`] only.
pub fn outcome(
    found: Found,
    answer: Answer,
    tenant_name: Option<String>,
) -> Result<RetrieveOutcome, StoreError> {
    let row = match found {
        Found::Live(row) => Some(*row),
        _ => None,
    };
    let need_row = || StoreError::Db("a retrieval answered without its key".into());
    Ok(match answer {
        Answer::RateLimited(retry) => RetrieveOutcome::RateLimited(retry),
        Answer::NotFound => RetrieveOutcome::NotFound,
        Answer::Denied(denial) => RetrieveOutcome::Denied(denial),
        Answer::VerifyPassword(hash, slot) => RetrieveOutcome::VerifyPassword { hash, slot },
        Answer::HandOut {
            retrieval_id,
            confirm_by,
        } => {
            let row = row.ok_or_else(need_row)?;
            RetrieveOutcome::Allowed(Box::new(RetrievedKey {
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
            }))
        }
        Answer::Preview => {
            let row = row.ok_or_else(need_row)?;
            RetrieveOutcome::Previewed(Box::new(PreviewedKey {
                key_id: row.id,
                label: row.label,
                kind: row.kind,
                algorithm: row.algorithm,
                fingerprint: row.fingerprint,
                proven: row.proven,
                tenant_id: row.tenant_id,
                tenant_name: tenant_name.ok_or_else(need_row)?,
                deposited_at: ts(row.created_at)?,
                origin_network: row.origin_network,
            }))
        }
    })
}

/// A refusal before any key is looked at (the service's own `allowed_cidrs`): a failure
/// counted and `audit` appended, or, with the budget spent (`spent`), only a coalesced
/// `rate_limited` row.
pub fn plan_refuse(service: &ServiceAuth, spent: Option<u64>, audit: &AuditRecord) -> Plan {
    let mut plan = Plan::nothing(audit.at);
    match spent {
        Some(_) => {
            let mut limited = audit.clone();
            limited.outcome = "rate_limited".into();
            plan.audit = AuditEffect::Coalesced(limited);
        }
        None => {
            plan.budget = (subject(service), BudgetEffect::Charge);
            plan.audit = AuditEffect::Row(audit.clone());
        }
    }
    plan
}

/// A key held for confirmation, as a confirmation reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldKey {
    pub key: KeyIdent,
    pub retrievals: u32,
    pub max_retrievals: u32,
    /// Unix milliseconds.
    pub confirm_by: Option<i64>,
}

/// The columns of [`HeldKey::read`].
pub const HELD_COLUMNS: &str = "id, tenant_id, label, retrievals, max_retrievals, confirm_by";

impl HeldKey {
    pub fn read(r: &impl Columns) -> Result<HeldKey, StoreError> {
        Ok(HeldKey {
            key: KeyIdent::new(r.text(0)?, r.text(1)?, r.opt_text(2)?),
            retrievals: r.count(3)?,
            max_retrievals: r.count(4)?,
            confirm_by: r.opt_int(5)?,
        })
    }
}

/// A confirmation by the service that holds the key (`held`, found by its pending retrieval
/// and service): `None` when there is nothing to confirm (no such hold, or its grace is over).
/// A key whose last retrieval is confirmed ends; any other goes back to `active`.
pub fn plan_confirm(
    held: Option<HeldKey>,
    service: &ServiceAuth,
    now: Timestamp,
) -> Result<Option<Plan>, StoreError> {
    let Some(held) = held else {
        return Ok(None);
    };
    if held
        .confirm_by
        .map(ts)
        .transpose()?
        .is_some_and(|by| now >= by)
    {
        return Ok(None);
    }
    let mut plan = Plan::nothing(now);
    plan.change = if held.retrievals >= held.max_retrievals {
        KeyChange::End {
            state: KeyState::Retrieved,
            retrievals: None,
            clear_hold: true,
        }
    } else {
        KeyChange::Release
    };
    plan.audit = AuditEffect::Row(AuditRecord {
        at: now,
        actor: subject(service),
        action: "retrieval.confirm",
        outcome: "success".into(),
        key_id: Some(held.key.id.clone()),
        ip: None,
        detail: None,
    });
    plan.key = Some(held.key);
    plan.event(EventType::Confirmed, Some(service), None);
    Ok(Some(plan))
}

/// The columns of a key that the holder's operations read, in [`read_record`]'s order.
pub const RECORD_COLUMNS: &str = "id, tenant_id, label, algorithm, fingerprint, state, expires_at,
    confirm_by, retrievals, max_retrievals, notify, code_format";

/// Decodes [`RECORD_COLUMNS`], starting at column 0.
pub fn read_record(r: &impl Columns) -> Result<KeyRecord, StoreError> {
    let state = r.text(5)?;
    let notify = r
        .opt_text(10)?
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("notify: {e}")))?;
    Ok(KeyRecord {
        state: KeyState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?,
        id: r.text(0)?,
        tenant_id: r.text(1)?,
        label: r.opt_text(2)?,
        algorithm: r.text(3)?,
        fingerprint: r.opt_text(4)?,
        expires_at: ts(r.int(6)?)?,
        confirm_by: r.opt_int(7)?.map(ts).transpose()?,
        retrievals: r.count(8)?,
        max_retrievals: r.count(9)?,
        notify,
        code_format: parse_format(&r.text(11)?),
    })
}

/// Whether a key record is live at `now`: not ended, not past its expiry, not held past its
/// grace ([`KeyRecord::status_at`]). The holder's operations act only on such a key.
pub fn live_at(rec: &KeyRecord, now: Timestamp) -> bool {
    rec.status_at(now).is_live()
}

/// Revoking a key that is live at `audit.at`: it ends `revoked`, `key.revoked`, the audit row.
/// `None`: the key is gone, nothing changes.
pub fn plan_revoke(rec: Option<&KeyRecord>, audit: &AuditRecord) -> Option<Plan> {
    let rec = rec.filter(|r| live_at(r, audit.at))?;
    let mut plan = Plan::nothing(audit.at);
    plan.key = Some(KeyIdent::of(rec));
    plan.change = KeyChange::End {
        state: KeyState::Revoked,
        retrievals: None,
        clear_hold: true,
    };
    plan.event(EventType::Revoked, None, None);
    plan.audit = AuditEffect::Row(audit.clone());
    Some(plan)
}

/// Moving a live key's expiry: the row and the audit row. `None`: the key is gone.
pub fn plan_set_expiry(
    rec: Option<&KeyRecord>,
    expires_at: Timestamp,
    audit: &AuditRecord,
) -> Option<Plan> {
    let rec = rec.filter(|r| live_at(r, audit.at))?;
    let mut plan = Plan::nothing(audit.at);
    plan.key = Some(KeyIdent::of(rec));
    plan.change = KeyChange::SetExpiry(expires_at);
    plan.audit = AuditEffect::Row(audit.clone());
    Some(plan)
}

/// A new code for a live key (`rec`, whose current code hash is `old_code_hash`):
/// `recode_retry` is the backend's count of recent new codes (`limits::recode_retry_after`).
/// Refused with only a coalesced audit row when the hour's new codes are spent; else the code
/// is replaced, `code.reissued`, the audit row. The answer is the outcome unless applying the
/// plan finds the new code taken ([`Applied::CodeTaken`]).
pub fn plan_recode(
    rec: Option<&KeyRecord>,
    old_code_hash: Vec<u8>,
    new_code_hash: &[u8],
    recode_retry: Option<u64>,
    audit: &AuditRecord,
) -> (Plan, RecodeOutcome) {
    let mut plan = Plan::nothing(audit.at);
    let Some(rec) = rec.filter(|r| live_at(r, audit.at)) else {
        return (plan, RecodeOutcome::NotLive);
    };
    if let Some(retry) = recode_retry {
        let mut refused = audit.clone();
        refused.outcome = "rate_limited".into();
        plan.audit = AuditEffect::Coalesced(refused);
        return (plan, RecodeOutcome::RateLimited(retry));
    }
    plan.key = Some(KeyIdent::of(rec));
    plan.change = KeyChange::Recode {
        old_code_hash,
        new_code_hash: new_code_hash.to_vec(),
    };
    plan.event(EventType::CodeReissued, None, None);
    plan.audit = AuditEffect::Row(audit.clone());
    (plan, RecodeOutcome::Done(rec.expires_at))
}

/// A key the sweeper ends, as it reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub key: KeyIdent,
    /// The holding service `(id, name)`, for a grace that ended (`None` once it is deleted).
    pub service: Option<(String, String)>,
}

/// The columns of [`Ending::read`]: of `keys k LEFT JOIN services s ON s.id =
/// k.pending_service_id`.
pub const ENDING_COLUMNS: &str = "k.id, k.tenant_id, k.label, k.pending_service_id, s.name";

impl Ending {
    pub fn read(r: &impl Columns) -> Result<Ending, StoreError> {
        let key = KeyIdent::new(r.text(0)?, r.text(1)?, r.opt_text(2)?);
        let service = r.opt_text(3)?.zip(r.opt_text(4)?);
        Ok(Ending { key, service })
    }
}

/// Which of the sweeper's two endings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A live key not held for confirmation reached its expiry ([`keymaster_core::policy::is_expired`]): it ends
    /// `expired`, `key.expired`. Selected by `expires_at <= now AND state !=
    /// 'awaiting_confirmation'` among live keys.
    Lifetime,
    /// A held key's grace ended without a confirmation: it ends `retrieved` (its retrieval
    /// stands), `key.unconfirmed` naming the service. A held key ends with its grace, never
    /// with its lifetime. Selected by `state = 'awaiting_confirmation' AND confirm_by <= now`.
    Grace,
}

/// The sweeper ending one key. No audit row: the events are the record.
pub fn plan_expire(ending: Ending, why: Expiry, now: Timestamp) -> Plan {
    let mut plan = Plan::nothing(now);
    let (state, ty, service) = match why {
        Expiry::Lifetime => (KeyState::Expired, EventType::Expired, None),
        Expiry::Grace => (KeyState::Retrieved, EventType::Unconfirmed, ending.service),
    };
    plan.key = Some(ending.key);
    plan.change = KeyChange::End {
        state,
        retrievals: None,
        clear_hold: true,
    };
    plan.events.push(EventEffect {
        ty,
        service,
        reason: None,
    });
    plan
}

#[cfg(test)]
mod tests;
