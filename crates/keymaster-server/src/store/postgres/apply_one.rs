//! PostgreSQL: the plan of one retrieval (or refusal) as ONE statement, without a lock held
//! across round trips: the key row's change is a compare-and-set on the values the plan was
//! made from, and the failure budget is counted only while it has room. Either the whole plan
//! is written or nothing is, and the caller reads again and plans again (`retrieve`).
//!
//! The statement, in the order PostgreSQL runs its parts:
//!
//! 1. `kl`: locks the key row when the plan must hold it before the budget — a dead key (its
//!    `code.stale_used` is ordered after the key's other events), or a live key whose plan
//!    counts a failure (the guard below, checked on the newest row version).
//! 2. `b`: counts the failure (`INSERT … ON CONFLICT DO UPDATE … WHERE` the window rolled over
//!    or `failures < budget`). The budget row's lock is taken and the condition checked on its
//!    newest version, so counting and checking are one step: no more failures are counted in
//!    a window than the budget (docs/scaling.md, "The failure budget without a lock").
//! 3. `ku`: the key row's `UPDATE`, guarded by the values the plan read (`GUARD`). READ
//!    COMMITTED re-checks the guard on the newest version after waiting for a concurrent
//!    writer, so a plan made from a row that changed meanwhile writes nothing; of several
//!    retrievals of a single-use code, one ends the key and the others find it gone when they
//!    read again.
//! 4. what hangs on `k` (the key row written or locked): retrieval record, the slot given back
//!    (`g`), events and their deliveries, and the audit row. A key that ends keeps its code
//!    hash: the ended row is the dead code's tombstone (migration 9), so nothing is written to
//!    `tombstones`.
//!
//! Locks are taken key first, then budget, in every statement of this backend that takes both,
//! so none of them waits for another in a cycle.

use std::sync::LazyLock;

use futures::future::BoxFuture;
use sqlx::{PgConnection, Row};

use super::cte::{self, AuditParams, EventParams};
use super::guarded::Guarded;
use super::ms;
use super::once::Statement;
use crate::store::events::new_event;
use crate::store::lifecycle::{AuditEffect, BudgetEffect, KeyChange, KeyRow, Plan};
use crate::store::{KeyState, StoreError};

/// The values of the key row a plan is made from; `$4` to `$11`, and `ended_at` null (a live
/// key). One row comparison, as in `guarded`: no index serves it, so the key row is reached by
/// its primary key (`id = $2`) in every plan. As column equalities, `expires_at = $11` with
/// `ended_at IS NULL` (the predicate of `keys_live_expiry` since migration 9) made the generic
/// plan scan `keys_live_expiry` for every key of that expiry. The columns that are `NOT NULL`
/// in `keys` are never null here, so this is the same test as equalities.
const GUARD: &str = "(code_hash, state, retrievals, failed_password_attempts,
        pending_retrieval_id, pending_service_id, confirm_by, expires_at, ended_at)
    IS NOT DISTINCT FROM ($4::bytea, $5::text, $6::bigint, $7::bigint, $8::text, $9::text,
        $10::bigint, $11::bigint, NULL::bigint)";

static APPLY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH kl AS (
           SELECT id, tenant_id, notify FROM keys
           WHERE id = $2 AND (NOT $3 OR ($20 AND {GUARD}))
           FOR UPDATE
         ), b AS (
           INSERT INTO failure_budget AS f (subject, window_start, failures)
           SELECT $19, $1, 1 WHERE $20 AND ($2 IS NULL OR EXISTS (SELECT 1 FROM kl))
           ON CONFLICT (subject) DO UPDATE SET
             failures = CASE WHEN $1 - f.window_start >= 60000 OR f.failures = 0 THEN 1
                             ELSE f.failures + 1 END,
             window_start = CASE WHEN $1 - f.window_start >= 60000 OR f.failures = 0 THEN $1
                                 ELSE f.window_start END
           WHERE $1 - f.window_start >= 60000 OR f.failures < $21
           RETURNING 1
         ), ok AS (
           SELECT 1 AS one WHERE NOT $20 OR EXISTS (SELECT 1 FROM b)
         ), ku AS (
           UPDATE keys SET state = $12, retrievals = $13, failed_password_attempts = $14,
             pending_retrieval_id = $15, pending_service_id = $16, confirm_by = $17,
             ended_at = $18,
             spki = CASE WHEN $18 IS NULL THEN spki END,
             secret_sealed = CASE WHEN $18 IS NULL THEN secret_sealed END,
             password_hash = CASE WHEN $18 IS NULL THEN password_hash END
           WHERE $3 AND id = $2 AND {GUARD} AND EXISTS (SELECT 1 FROM ok)
           RETURNING id, tenant_id, notify
         ), k AS (
           SELECT id, tenant_id, notify FROM ku
           UNION ALL
           SELECT id, tenant_id, notify FROM kl WHERE NOT $3 AND EXISTS (SELECT 1 FROM ok)
         ), r AS (
           INSERT INTO retrievals (id, key_id, service_id, at)
           SELECT $23, id, $24, $1 FROM ku WHERE $23 IS NOT NULL
         ), g AS (
           UPDATE failure_budget SET failures = failures - 1
           WHERE $22 IS NOT NULL AND subject = $19 AND window_start <= $22 AND failures > 0
             AND EXISTS (SELECT 1 FROM ku)
         ), {}, {}
         SELECT (SELECT count(*) FROM ok), (SELECT count(*) FROM k)",
        cte::events_ctes(1, 25),
        cte::audit_cte(
            29,
            "EXISTS (SELECT 1 FROM ok) AND ($2 IS NULL OR EXISTS (SELECT 1 FROM k))"
        ),
    )
});

/// The columns of a key row that a retrieval's plan reads and may change.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RowState {
    pub(super) state: String,
    pub(super) retrievals: i64,
    pub(super) failed: i64,
    pub(super) pending_retrieval_id: Option<String>,
    pub(super) pending_service_id: Option<String>,
    pub(super) confirm_by: Option<i64>,
    pub(super) ended_at: Option<i64>,
}

impl RowState {
    fn of(row: &KeyRow) -> RowState {
        RowState {
            state: row.state.clone(),
            retrievals: i64::from(row.retrievals),
            failed: i64::from(row.failed_password_attempts),
            pending_retrieval_id: row.pending_retrieval_id.clone(),
            pending_service_id: row.pending_service_id.clone(),
            confirm_by: row.confirm_by,
            ended_at: None,
        }
    }

    /// The row after `change` at `at` (Unix ms): what `apply::change` and `rows::end_keys`
    /// write, as values (an ending also clears the hold, as `end_keys` does).
    fn after(&self, change: &KeyChange, at: i64) -> Result<RowState, StoreError> {
        let mut next = self.clone();
        let clear_hold = |n: &mut RowState| {
            n.pending_retrieval_id = None;
            n.pending_service_id = None;
            n.confirm_by = None;
        };
        match change {
            KeyChange::Keep => {}
            KeyChange::WrongPassword {
                failed_attempts,
                lock,
            } => {
                next.failed = i64::from(*failed_attempts);
                if *lock {
                    next.state = KeyState::Locked.as_str().into();
                }
            }
            KeyChange::Count { retrievals } => {
                next.retrievals = i64::from(*retrievals);
                next.failed = 0;
            }
            KeyChange::Hold {
                retrievals,
                retrieval_id,
                service_id,
                confirm_by,
            } => {
                next.retrievals = i64::from(*retrievals);
                next.failed = 0;
                next.state = KeyState::AwaitingConfirmation.as_str().into();
                next.pending_retrieval_id = Some(retrieval_id.clone());
                next.pending_service_id = Some(service_id.clone());
                next.confirm_by = Some(ms(*confirm_by));
            }
            KeyChange::Release => {
                next.state = KeyState::Active.as_str().into();
                clear_hold(&mut next);
            }
            KeyChange::End {
                state, retrievals, ..
            } => {
                next.state = state.as_str().into();
                next.ended_at = Some(at);
                if let Some(r) = retrievals {
                    next.retrievals = i64::from(*r);
                }
                clear_hold(&mut next);
            }
            KeyChange::Recode { .. } | KeyChange::SetExpiry(_) => {
                return Err(StoreError::Db(format!(
                    "{change:?} is not applied in one statement"
                )))
            }
        }
        Ok(next)
    }
}

/// The live key row a plan was made from, with the code hash it holds.
pub struct Read<'a> {
    pub row: &'a KeyRow,
    pub code_hash: &'a [u8],
}

/// How a plan is written ([`Applying::into_write`]).
pub enum Write {
    /// In a statement shared with other retrievals (`guarded`).
    Batched(Guarded),
    /// In a statement of its own ([`APPLY_SQL`]).
    Alone(Applying),
}

/// A plan as the arguments of [`APPLY_SQL`], ready to run (again, if PostgreSQL rolled it
/// back: its ids are fixed here).
pub struct Applying {
    at: i64,
    key_id: Option<String>,
    guard: Option<(Vec<u8>, RowState, i64)>,
    next: Option<RowState>,
    subject: String,
    charge: bool,
    budget: i64,
    give_back: Option<i64>,
    retrieval: Option<(String, String)>,
    events: EventParams,
    audit: AuditParams,
}

impl Applying {
    /// `plan`, made from `read` when it found a live key, for a service whose budget is
    /// `per_minute` failures.
    pub fn new(plan: &Plan, read: Option<Read<'_>>, per_minute: u32) -> Result<Self, StoreError> {
        let at = ms(plan.at);
        // A plan without a key (a password check's slot) has nothing to guard.
        let (guard, next) = match read.filter(|_| plan.key.is_some()) {
            Some(r) => {
                let old = RowState::of(r.row);
                let next = old.after(&plan.change, at)?;
                (
                    Some((r.code_hash.to_vec(), old, r.row.expires_at)),
                    Some(next),
                )
            }
            None if plan.change == KeyChange::Keep => (None, None),
            None => return Err(StoreError::Db("a key change without its row".into())),
        };
        let mut events = EventParams::default();
        if let Some(key) = &plan.key {
            for e in &plan.events {
                let service = e.service.as_ref().map(|(id, n)| (id.as_str(), n.as_str()));
                events.push(&new_event(e.ty, &key.key_ref(), service, e.reason, plan.at))?;
            }
        }
        let (subject, budget) = &plan.budget;
        Ok(Applying {
            at,
            key_id: plan.key.as_ref().map(|k| k.id.clone()),
            guard,
            next,
            subject: subject.clone(),
            charge: *budget == BudgetEffect::Charge,
            budget: i64::from(per_minute),
            give_back: match budget {
                BudgetEffect::GiveBack(slot) => Some(ms(slot.taken_at)),
                _ => None,
            },
            retrieval: plan.retrieval.clone(),
            events,
            audit: match &plan.audit {
                AuditEffect::None => AuditParams::none(),
                AuditEffect::Row(a) => AuditParams::row(a),
                AuditEffect::Coalesced(a) => AuditParams::coalesced(a),
            },
        })
    }

    /// How the plan is written: as a guarded write that may share a statement with others
    /// (`guarded`) when it is a plan of a live key read that neither counts a failure nor
    /// gives a slot back nor coalesces its audit row; any other plan by this statement.
    pub fn into_write(self) -> Write {
        let alone = self.charge || self.give_back.is_some() || self.audit.is_coalesced();
        match (alone, self.key_id, self.guard, self.next) {
            (false, Some(key_id), Some((code_hash, old, expires_at)), Some(next)) => {
                Write::Batched(Guarded {
                    at: self.at,
                    key_id,
                    code_hash,
                    old,
                    expires_at,
                    next,
                    retrieval: self.retrieval,
                    events: self.events,
                    audit: self.audit,
                })
            }
            (_, key_id, guard, next) => Write::Alone(Applying {
                key_id,
                guard,
                next,
                ..self
            }),
        }
    }

    /// Runs the statement: `true` when the whole plan was written, `false` when nothing was
    /// (the key row changed since it was read, or the budget had no room left for a failure).
    pub async fn run(&self, c: &mut PgConnection) -> Result<bool, sqlx::Error> {
        let blank = RowState::of_nothing();
        let (code_hash, old, expires_at) = match &self.guard {
            Some((h, old, exp)) => (h.as_slice(), old, *exp),
            None => (&[][..], &blank, 0),
        };
        let next = self.next.as_ref().unwrap_or(&blank);
        let (retrieval_id, retrieval_service) = match &self.retrieval {
            Some((id, svc)) => (Some(id.as_str()), Some(svc.as_str())),
            None => (None, None),
        };
        let q = sqlx::query(&APPLY_SQL)
            .bind(self.at)
            .bind(&self.key_id)
            .bind(self.guard.is_some())
            .bind(code_hash)
            .bind(&old.state)
            .bind(old.retrievals)
            .bind(old.failed)
            .bind(&old.pending_retrieval_id)
            .bind(&old.pending_service_id)
            .bind(old.confirm_by)
            .bind(expires_at)
            .bind(&next.state)
            .bind(next.retrievals)
            .bind(next.failed)
            .bind(&next.pending_retrieval_id)
            .bind(&next.pending_service_id)
            .bind(next.confirm_by)
            .bind(next.ended_at)
            .bind(&self.subject)
            .bind(self.charge)
            .bind(self.budget)
            .bind(self.give_back)
            .bind(retrieval_id)
            .bind(retrieval_service);
        let row = self.audit.bind(self.events.bind(q)).fetch_one(c).await?;
        let (ok, keyed): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(ok == 1 && (self.key_id.is_none() || keyed == 1))
    }
}

impl Statement for Applying {
    type Out = bool;

    fn run<'c>(&'c self, c: &'c mut PgConnection) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        Box::pin(Applying::run(self, c))
    }
}

impl RowState {
    /// The arguments bound where there is no row (never compared: `$3` is false).
    fn of_nothing() -> RowState {
        RowState {
            state: String::new(),
            retrievals: 0,
            failed: 0,
            pending_retrieval_id: None,
            pending_service_id: None,
            confirm_by: None,
            ended_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::{RowState, APPLY_SQL};
    use crate::store::lifecycle::KeyChange;
    use crate::store::postgres::test_db::{self, drop_db};
    use crate::store::KeyState;

    fn active() -> RowState {
        RowState {
            state: "active".into(),
            retrievals: 2,
            failed: 3,
            pending_retrieval_id: None,
            pending_service_id: None,
            confirm_by: None,
            ended_at: None,
        }
    }

    #[test]
    fn each_retrieval_change_becomes_the_values_apply_would_write() {
        let row = active();
        assert_eq!(row.after(&KeyChange::Keep, 9).unwrap(), row);
        let locked = row
            .after(
                &KeyChange::WrongPassword {
                    failed_attempts: 4,
                    lock: true,
                },
                9,
            )
            .unwrap();
        assert_eq!((locked.state.as_str(), locked.failed), ("locked", 4));
        let counted = row.after(&KeyChange::Count { retrievals: 3 }, 9).unwrap();
        assert_eq!((counted.retrievals, counted.failed), (3, 0));
        let by = Timestamp::from_millisecond(70_000).unwrap();
        let held = row
            .after(
                &KeyChange::Hold {
                    retrievals: 3,
                    retrieval_id: "ret_1".into(),
                    service_id: "svc_1".into(),
                    confirm_by: by,
                },
                9,
            )
            .unwrap();
        assert_eq!(held.state, "awaiting_confirmation");
        assert_eq!(held.confirm_by, Some(70_000));
        let ended = held
            .after(
                &KeyChange::End {
                    state: KeyState::Retrieved,
                    retrievals: Some(3),
                    clear_hold: false,
                },
                9,
            )
            .unwrap();
        assert_eq!(
            (
                ended.state.as_str(),
                ended.ended_at,
                ended.pending_retrieval_id
            ),
            ("retrieved", Some(9), None)
        );
        assert!(row
            .after(&KeyChange::SetExpiry(Timestamp::UNIX_EPOCH), 9)
            .is_err());
    }

    /// The plan PostgreSQL keeps after five runs, made while every table is empty: the key row
    /// is reached by its primary key (`docs/scaling.md`, "Plans made once per connection"),
    /// both where it is locked and where it is written (`GUARD`).
    #[tokio::test]
    async fn the_generic_plan_on_empty_tables_scans_no_table() {
        let Some((store, url, name)) = test_db::store("km_apply_").await else {
            return;
        };
        // As `Applying::run` binds them (some are only compared with null: not inferred).
        let (int, text, bool) = ("bigint", "text", "boolean");
        let mut types = vec![
            int, text, bool, "bytea", text, int, int, text, text, int, int,
        ];
        types.extend([
            text, int, int, text, text, int, int, text, bool, int, int, text, text,
        ]);
        types.extend(["text[]"; 4]);
        types.extend([
            int, text, text, text, text, text, text, int, text, bool, text,
        ]);
        let plan = test_db::generic_plan_typed(&store, &APPLY_SQL, &types).await;
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(!plan.contains("Bitmap Heap Scan"), "{plan}");
        assert!(!plan.contains("keys_live_expiry"), "{plan}");
        assert!(!plan.contains("keys_code"), "{plan}");
        assert_eq!(
            plan.matches("Index Scan using keys_pkey").count(),
            2,
            "{plan}"
        );
        drop_db(store, &url, &name).await;
    }
}
