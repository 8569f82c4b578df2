//! PostgreSQL: the retrieval transaction and confirmation, as facts loaded (and locked) for the
//! lifecycle plans (`store::lifecycle`) and applied in the same transaction.
//!
//! One READ COMMITTED transaction: lock the service's failure-budget row and check it, lock the
//! live key row by code hash (`FOR UPDATE`), plan (policy decision and effects), apply. Locks
//! are always taken budget first, then key, so racing replicas queue rather than deadlock; a request that waited for the key's lock re-reads the
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
use sqlx::PgConnection;

use super::apply::apply;
use super::db;
use super::rows::{budget_spent, release_failure};
use crate::store::lifecycle::{
    self, outcome, plan_refuse, plan_retrieve, subject, Answer, Found, HeldKey, KeyIdent, KeyRow,
    HELD_COLUMNS, KEY_COLUMNS,
};
use crate::store::{
    AuditRecord, BudgetSlot, RetrieveCommand, RetrieveOutcome, ServiceAuth, StoreError,
};

/// What a retrieval finds, locking what it finds: the budget row, then the key with this code,
/// of the tenant the service is confined to if it is (`ServiceAuth::confined_tenant_id`;
/// another tenant's key is then neither found nor locked), under the current secret or, during
/// a rotation, a previous one; then a dead code in `tombstones` with its key, so that a
/// `code.stale_used` takes its place in the key's stream in commit order with the key's other
/// events.
async fn find(c: &mut PgConnection, cmd: &RetrieveCommand) -> Result<Found, StoreError> {
    // With a slot taken in advance, this attempt is already in the budget.
    if cmd.budget_slot.is_none() {
        let subject = subject(&cmd.service);
        if let Some(retry) = budget_spent(c, &subject, cmd.now, cmd.budget_per_minute).await? {
            return Ok(Found::RateLimited(retry));
        }
    }
    let confined = cmd.service.confined_tenant_id.as_deref();
    if let Some(found) = Found::from_row(load_any_secret(c, cmd, confined).await?) {
        return Ok(found);
    }
    let previous = &cmd.previous_code_hashes;
    let dead = super::rotation::tombstone(c, &cmd.code_hash, previous, confined).await?;
    Ok(dead.map_or(Found::Unknown, |(id, tenant, label)| {
        Found::Dead(KeyIdent::new(id, tenant, label))
    }))
}

/// Locks and loads the key with this code hash, of `tenant` if given.
async fn load(
    c: &mut PgConnection,
    code_hash: &[u8],
    tenant: Option<&str>,
) -> Result<Option<KeyRow>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM keys
         WHERE code_hash = $1 AND ($2::text IS NULL OR tenant_id = $2) FOR UPDATE"
    ))
    .bind(code_hash)
    .bind(tenant)
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    row.as_ref().map(KeyRow::read).transpose()
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
            if row.is_live() {
                super::rotation::rehash_code(c, &row.id, old, &cmd.code_hash).await?;
            }
            return Ok(Some(row));
        }
    }
    Ok(None)
}

pub async fn retrieve(
    c: &mut PgConnection,
    cmd: &RetrieveCommand,
) -> Result<RetrieveOutcome, StoreError> {
    let found = find(c, cmd).await?;
    let (plan, answer) = plan_retrieve(cmd, &found)?;
    apply(c, &plan).await?;
    let mut tenant = None;
    if let (Answer::Preview, Found::Live(row)) = (&answer, &found) {
        tenant = Some(super::handoff::tenant_name(c, &row.tenant_id).await?);
    }
    outcome(found, answer, tenant)
}

/// Gives back the slot of a retrieval that succeeded (`BudgetEffect::GiveBack`): its own
/// transaction, after the retrieval's commit, which locked the key without the budget.
pub async fn give_back(
    c: &mut PgConnection,
    service: &ServiceAuth,
    slot: BudgetSlot,
) -> Result<(), StoreError> {
    release_failure(c, &subject(service), slot.taken_at).await
}

pub async fn refuse(
    c: &mut PgConnection,
    service: &ServiceAuth,
    budget_per_minute: u32,
    a: &AuditRecord,
) -> Result<Option<u64>, StoreError> {
    let spent = budget_spent(c, &subject(service), a.at, budget_per_minute).await?;
    apply(c, &plan_refuse(service, spent, a)).await?;
    Ok(spent)
}

pub async fn confirm(
    c: &mut PgConnection,
    retrieval_id: &str,
    service: &ServiceAuth,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {HELD_COLUMNS} FROM keys
         WHERE pending_retrieval_id = $1 AND pending_service_id = $2 FOR UPDATE"
    ))
    .bind(retrieval_id)
    .bind(&service.id)
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    let held = row.as_ref().map(HeldKey::read).transpose()?;
    match lifecycle::plan_confirm(held, service, now)? {
        Some(plan) => apply(c, &plan).await.map(|_| true),
        None => Ok(false),
    }
}
