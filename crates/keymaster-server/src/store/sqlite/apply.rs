//! SQLite: executes a lifecycle [`Plan`] inside the writer's open transaction, in the plan's
//! order (budget, key row, retrieval record, events, audit row). Each key change is one cached
//! `UPDATE` of the key's row.

use rusqlite::{params, Connection, ErrorCode};

use super::ms;
use super::rows::{
    insert_audit, insert_coalesced_audit, insert_event, record_failure, release_failure, EventRow,
};
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
pub fn apply(c: &Connection, plan: &Plan) -> Result<Applied, StoreError> {
    let (subject, budget) = &plan.budget;
    match budget {
        BudgetEffect::Keep => {}
        BudgetEffect::Charge => record_failure(c, subject, plan.at)?,
        BudgetEffect::GiveBack(slot) => release_failure(c, subject, slot.taken_at)?,
    }
    if let Some(key) = &plan.key {
        if change(c, &key.id, &plan.change, plan.at)? == Applied::CodeTaken {
            return Ok(Applied::CodeTaken);
        }
        if let Some((retrieval_id, service_id)) = &plan.retrieval {
            c.prepare_cached(
                "INSERT INTO retrievals (id, key_id, service_id, at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![retrieval_id, key.id, service_id, ms(plan.at)]))
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

/// One `UPDATE` of the key's row (two more statements for a new code's tombstones).
fn change(
    c: &Connection,
    key_id: &str,
    change: &KeyChange,
    at: jiff::Timestamp,
) -> Result<Applied, StoreError> {
    let run = |sql: &str, p: &[&dyn rusqlite::ToSql]| {
        c.prepare_cached(sql)
            .and_then(|mut s| s.execute(p))
            .map(|_| ())
    };
    match change {
        KeyChange::Keep => Ok(()),
        KeyChange::WrongPassword {
            failed_attempts,
            lock,
        } => run(
            "UPDATE keys SET failed_password_attempts = ?2,
                 state = CASE WHEN ?3 THEN 'locked' ELSE state END
             WHERE id = ?1",
            params![key_id, failed_attempts, lock],
        ),
        KeyChange::Count { retrievals } => run(
            "UPDATE keys SET retrievals = ?2, failed_password_attempts = 0 WHERE id = ?1",
            params![key_id, retrievals],
        ),
        KeyChange::Hold {
            retrievals,
            retrieval_id,
            service_id,
            confirm_by,
        } => run(
            "UPDATE keys SET retrievals = ?2, failed_password_attempts = 0,
                 state = 'awaiting_confirmation', pending_retrieval_id = ?3,
                 pending_service_id = ?4, confirm_by = ?5
             WHERE id = ?1",
            params![key_id, retrievals, retrieval_id, service_id, ms(*confirm_by)],
        ),
        KeyChange::Release => run(
            "UPDATE keys SET state = 'active', pending_retrieval_id = NULL,
                 pending_service_id = NULL, confirm_by = NULL
             WHERE id = ?1",
            params![key_id],
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
            "UPDATE keys SET state = ?2, ended_at = ?3, spki = NULL, secret_sealed = NULL,
                 password_hash = NULL, retrievals = coalesce(?4, retrievals),
                 pending_retrieval_id = NULL, pending_service_id = NULL, confirm_by = NULL
             WHERE id = ?1",
            params![key_id, state.as_str(), ms(at), retrievals],
        ),
        KeyChange::End {
            state,
            retrievals,
            clear_hold: false,
        } => run(
            "UPDATE keys SET state = ?2, ended_at = ?3, spki = NULL, secret_sealed = NULL,
                 password_hash = NULL, retrievals = coalesce(?4, retrievals)
             WHERE id = ?1",
            params![key_id, state.as_str(), ms(at), retrievals],
        ),
        KeyChange::Recode {
            old_code_hash,
            new_code_hash,
        } => {
            match run(
                "UPDATE keys SET code_hash = ?2 WHERE id = ?1",
                params![key_id, new_code_hash],
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
                params![old_code_hash, key_id, ms(at)],
            )
        }
        KeyChange::SetExpiry(expires_at) => run(
            "UPDATE keys SET expires_at = ?2 WHERE id = ?1",
            params![key_id, ms(*expires_at)],
        ),
    }
    .map_err(db)?;
    Ok(Applied::Done)
}
