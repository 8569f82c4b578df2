//! PostgreSQL: executes lifecycle [`Plan`]s inside the caller's transaction, which holds the
//! key rows' locks, in the plan's order (budget, key row, retrieval record, events, audit row):
//! the sweeper, confirmations and the holder's operations. Retrievals and refusals are written
//! in one statement each by `apply_one`.
//! A key that ends keeps its code hash in its row, which is the dead code's tombstone; a code
//! replaced by a new one goes to `tombstones`.

use jiff::Timestamp;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::rows::{end_keys, insert_audit, insert_coalesced_audit, insert_event, record_failure};
use super::{db, is_unique_violation, ms};
use crate::store::columns::impl_columns;
use crate::store::events::new_event;
use crate::store::lifecycle::{Applied, AuditEffect, BudgetEffect, KeyChange, Plan};
use crate::store::{KeyState, StoreError};

impl_columns!(PgRow, try_get, db);

/// Executes `plan`. [`Applied::CodeTaken`] leaves nothing changed.
///
/// [`BudgetEffect::GiveBack`] is not done here: only a retrieval's plan has it, and those are
/// written by `apply_one`, in the statement that hands the key out.
pub async fn apply(c: &mut PgConnection, plan: &Plan) -> Result<Applied, StoreError> {
    apply_all(c, std::slice::from_ref(plan)).await
}

/// Executes the plans of several keys (the sweeper's batch): the keys that end, per state, in
/// one `end_keys` each (before any other effect, as the key row comes before the rest in a
/// plan), then each plan's other effects in order.
pub async fn apply_all(c: &mut PgConnection, plans: &[Plan]) -> Result<Applied, StoreError> {
    // Grouped by state, time and count (a `Vec`: a map's iterator held across an `.await`
    // makes the future's `Send` too narrow for the store's boxed futures).
    let mut ending: Vec<(KeyState, Timestamp, Option<u32>, Vec<String>)> = Vec::new();
    for plan in plans {
        if let (
            Some(key),
            KeyChange::End {
                state, retrievals, ..
            },
        ) = (&plan.key, &plan.change)
        {
            let group = (*state, plan.at, *retrievals);
            match ending.iter_mut().find(|(s, t, r, _)| (*s, *t, *r) == group) {
                Some(g) => g.3.push(key.id.clone()),
                None => ending.push((*state, plan.at, *retrievals, vec![key.id.clone()])),
            }
        }
    }
    for (state, at, retrievals, ids) in ending {
        end_keys(c, &ids, state, at, retrievals).await?;
    }
    for plan in plans {
        let (subject, budget) = &plan.budget;
        if let BudgetEffect::Charge = budget {
            record_failure(c, subject, plan.at).await?;
        }
        let Some(key) = &plan.key else {
            audit(c, &plan.audit).await?;
            continue;
        };
        if change(c, &key.id, &plan.change, plan.at).await? == Applied::CodeTaken {
            return Ok(Applied::CodeTaken);
        }
        if let Some((retrieval_id, service_id)) = &plan.retrieval {
            sqlx::query(
                "INSERT INTO retrievals (id, key_id, service_id, at) VALUES ($1, $2, $3, $4)",
            )
            .bind(retrieval_id)
            .bind(&key.id)
            .bind(service_id)
            .bind(ms(plan.at))
            .execute(&mut *c)
            .await
            .map_err(db)?;
        }
        for e in &plan.events {
            let service = e.service.as_ref().map(|(id, n)| (id.as_str(), n.as_str()));
            let event = new_event(e.ty, &key.key_ref(), service, e.reason, plan.at);
            insert_event(c, &event).await?;
        }
        audit(c, &plan.audit).await?;
    }
    Ok(Applied::Done)
}

async fn audit(c: &mut PgConnection, effect: &AuditEffect) -> Result<(), StoreError> {
    match effect {
        AuditEffect::None => Ok(()),
        AuditEffect::Row(a) => insert_audit(c, a).await,
        AuditEffect::Coalesced(a) => insert_coalesced_audit(c, a).await,
    }
}

/// One `UPDATE` of the key's row (an ending is done by [`apply_all`]; a new code's
/// tombstones take two statements more).
async fn change(
    c: &mut PgConnection,
    key_id: &str,
    change: &KeyChange,
    at: Timestamp,
) -> Result<Applied, StoreError> {
    let q = match change {
        KeyChange::Keep | KeyChange::End { .. } => return Ok(Applied::Done),
        KeyChange::WrongPassword {
            failed_attempts,
            lock,
        } => sqlx::query(
            "UPDATE keys SET failed_password_attempts = $2,
                 state = CASE WHEN $3 THEN 'locked' ELSE state END
             WHERE id = $1",
        )
        .bind(key_id)
        .bind(i64::from(*failed_attempts))
        .bind(*lock),
        KeyChange::Count { retrievals } => sqlx::query(
            "UPDATE keys SET retrievals = $2, failed_password_attempts = 0 WHERE id = $1",
        )
        .bind(key_id)
        .bind(i64::from(*retrievals)),
        KeyChange::Hold {
            retrievals,
            retrieval_id,
            service_id,
            confirm_by,
        } => sqlx::query(
            "UPDATE keys SET retrievals = $2, failed_password_attempts = 0,
                 state = 'awaiting_confirmation', pending_retrieval_id = $3,
                 pending_service_id = $4, confirm_by = $5
             WHERE id = $1",
        )
        .bind(key_id)
        .bind(i64::from(*retrievals))
        .bind(retrieval_id)
        .bind(service_id)
        .bind(ms(*confirm_by)),
        KeyChange::Release => sqlx::query(
            "UPDATE keys SET state = 'active', pending_retrieval_id = NULL,
                 pending_service_id = NULL, confirm_by = NULL
             WHERE id = $1",
        )
        .bind(key_id),
        KeyChange::Recode {
            old_code_hash,
            new_code_hash,
        } => return recode(c, key_id, old_code_hash, new_code_hash, at).await,
        KeyChange::SetExpiry(expires_at) => {
            sqlx::query("UPDATE keys SET expires_at = $2 WHERE id = $1")
                .bind(key_id)
                .bind(ms(*expires_at))
        }
    };
    q.execute(&mut *c).await.map_err(db)?;
    Ok(Applied::Done)
}

async fn recode(
    c: &mut PgConnection,
    key_id: &str,
    old_code_hash: &[u8],
    new_code_hash: &[u8],
    at: Timestamp,
) -> Result<Applied, StoreError> {
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
    let taken = match updated {
        Ok(_) => false,
        Err(e) if is_unique_violation(&e) => true,
        Err(e) => return Err(db(e)),
    };
    if taken {
        sqlx::query("ROLLBACK TO SAVEPOINT recode")
            .execute(&mut *c)
            .await
            .map_err(db)?;
    }
    sqlx::query("RELEASE SAVEPOINT recode")
        .execute(&mut *c)
        .await
        .map_err(db)?;
    if taken {
        return Ok(Applied::CodeTaken);
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
    .bind(old_code_hash)
    .bind(key_id)
    .bind(ms(at))
    .execute(&mut *c)
    .await
    .map_err(db)?;
    Ok(Applied::Done)
}
