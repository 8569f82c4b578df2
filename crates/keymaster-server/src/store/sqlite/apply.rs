//! SQLite: executes a lifecycle [`Plan`] inside the writer's open transaction, in the plan's
//! order (budget, key row, retrieval record, events, audit row). Each key change is one cached
//! `UPDATE` of the key's row.

use rusqlite::{params, ErrorCode};

use super::ms;
use super::rows::{
    insert_audit, insert_coalesced_audit, insert_event, record_failure, release_failure, EventRow,
};
use super::tx::Tx;
use super::writer::db;
use crate::store::columns::impl_columns;
use crate::store::events::new_event;
use crate::store::lifecycle::{Applied, AuditEffect, BudgetEffect, KeyChange, Plan};
use crate::store::StoreError;

impl_columns!(rusqlite::Row<'_>, get, db);

/// True when `e` is a UNIQUE violation: a code that is live, or kept in the row of a key that
/// ended (its tombstone); the caller draws another code.
pub fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

/// Executes `plan`. [`Applied::CodeTaken`] leaves nothing changed.
pub fn apply(c: &Tx<'_>, plan: &Plan) -> Result<Applied, StoreError> {
    apply_at(c, plan, None)
}

/// [`apply`], with the rowid of the plan's key when the caller read its row in this
/// transaction: the key's `UPDATE` then finds the row by rowid, without a descent of the `id`
/// index (one B-tree fewer for the single writer per retrieval). Only the writer writes, and
/// the rowid was read in the same transaction, so it is the same row.
pub fn apply_at(c: &Tx<'_>, plan: &Plan, rowid: Option<i64>) -> Result<Applied, StoreError> {
    let (subject, budget) = &plan.budget;
    match budget {
        BudgetEffect::Keep => {}
        BudgetEffect::Charge => record_failure(c, subject, plan.at)?,
        BudgetEffect::GiveBack(slot) => release_failure(c, subject, slot.taken_at)?,
    }
    if let Some(key) = &plan.key {
        let at = KeyAt { id: &key.id, rowid };
        if change(c, at, &plan.change, plan.at)? == Applied::CodeTaken {
            return Ok(Applied::CodeTaken);
        }
        if let Some((retrieval_id, service_id)) = &plan.retrieval {
            c.cached(
                "INSERT INTO retrievals (id, key_id, service_id, at) VALUES (?1, ?2, ?3, ?4)",
                |s| s.execute(params![retrieval_id, key.id, service_id, ms(plan.at)]),
            )
            .map_err(db)?;
        }
        for e in &plan.events {
            let service = e.service.as_ref().map(|(id, n)| (id.as_str(), n.as_str()));
            let event = new_event(e.ty, &key.key_ref(), service, e.reason, plan.at);
            insert_event(c, &EventRow::new(event)?, key.notify)?;
        }
    }
    match &plan.audit {
        AuditEffect::None => {}
        AuditEffect::Row(a) => insert_audit(c, a)?,
        AuditEffect::Coalesced(a) => insert_coalesced_audit(c, a)?,
    }
    Ok(Applied::Done)
}

/// The key's row: its id, and its rowid when the caller read the row in this transaction.
#[derive(Clone, Copy)]
struct KeyAt<'a> {
    id: &'a str,
    rowid: Option<i64>,
}

/// The `UPDATE keys SET $set` of the row `$at` (a [`KeyAt`]) names, by rowid when it is known;
/// both forms are literals, so each is one cached statement. `?1` is [`KeyAt::param`].
macro_rules! update_key {
    ($at:expr, $set:literal) => {
        match $at.rowid {
            Some(_) => concat!("UPDATE keys SET ", $set, " WHERE rowid = ?1"),
            None => concat!("UPDATE keys SET ", $set, " WHERE id = ?1"),
        }
    };
}

impl KeyAt<'_> {
    fn param(&self) -> &dyn rusqlite::ToSql {
        match &self.rowid {
            Some(rowid) => rowid,
            None => &self.id,
        }
    }
}

/// One `UPDATE` of the key's row (two more statements for a new code's tombstones).
fn change(
    c: &Tx<'_>,
    key: KeyAt<'_>,
    change: &KeyChange,
    at: jiff::Timestamp,
) -> Result<Applied, StoreError> {
    let run =
        |sql: &'static str, p: &[&dyn rusqlite::ToSql]| c.cached(sql, |s| s.execute(p)).map(|_| ());
    let row = key.param();
    match change {
        KeyChange::Keep => Ok(()),
        KeyChange::WrongPassword {
            failed_attempts,
            lock,
        } => run(
            update_key!(
                key,
                "failed_password_attempts = ?2,
                 state = CASE WHEN ?3 THEN 'locked' ELSE state END"
            ),
            params![row, failed_attempts, lock],
        ),
        KeyChange::Count { retrievals } => run(
            update_key!(key, "retrievals = ?2, failed_password_attempts = 0"),
            params![row, retrievals],
        ),
        KeyChange::Hold {
            retrievals,
            retrieval_id,
            service_id,
            confirm_by,
        } => run(
            update_key!(
                key,
                "retrievals = ?2, failed_password_attempts = 0,
                 state = 'awaiting_confirmation', pending_retrieval_id = ?3,
                 pending_service_id = ?4, confirm_by = ?5"
            ),
            params![row, retrievals, retrieval_id, service_id, ms(*confirm_by)],
        ),
        KeyChange::Release => run(
            update_key!(
                key,
                "state = 'active', pending_retrieval_id = NULL,
                 pending_service_id = NULL, confirm_by = NULL"
            ),
            params![row],
        ),
        // A key that ends at a retrieval without confirmation has no hold: its `UPDATE` leaves
        // the pending columns alone, since naming a column in `SET` makes SQLite rewrite its
        // index entry even when the value stays NULL (and the `pending_retrieval_id` entry of
        // an old key sits on a page of its own).
        KeyChange::End {
            state,
            retrievals,
            clear_hold: true,
        } => run(
            update_key!(
                key,
                "state = ?2, ended_at = ?3, spki = NULL, secret_sealed = NULL,
                 password_hash = NULL, retrievals = coalesce(?4, retrievals),
                 pending_retrieval_id = NULL, pending_service_id = NULL, confirm_by = NULL"
            ),
            params![row, state.as_str(), ms(at), retrievals],
        ),
        KeyChange::End {
            state,
            retrievals,
            clear_hold: false,
        } => run(
            update_key!(
                key,
                "state = ?2, ended_at = ?3, spki = NULL, secret_sealed = NULL,
                 password_hash = NULL, retrievals = coalesce(?4, retrievals)"
            ),
            params![row, state.as_str(), ms(at), retrievals],
        ),
        KeyChange::Recode {
            old_code_hash,
            new_code_hash,
        } => {
            match run(
                update_key!(key, "code_hash = ?2"),
                params![row, new_code_hash],
            ) {
                Err(e) if is_unique_violation(&e) => return Ok(Applied::CodeTaken),
                r => r.map_err(db)?,
            }
            run(
                "DELETE FROM tombstones WHERE code_hash = ?1",
                params![new_code_hash],
            )
            .map_err(db)?;
            run(
                "INSERT OR REPLACE INTO tombstones (code_hash, key_id, died_at) VALUES (?1, ?2, ?3)",
                params![old_code_hash, key.id, ms(at)],
            )
        }
        KeyChange::SetExpiry(expires_at) => run(
            update_key!(key, "expires_at = ?2"),
            params![row, ms(*expires_at)],
        ),
    }
    .map_err(db)?;
    Ok(Applied::Done)
}
