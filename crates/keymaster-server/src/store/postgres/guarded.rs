//! PostgreSQL: group commit of retrievals — the guarded writes of the plans that hand a key
//! out (or preview it) and charge no failure budget, as ONE autocommit statement for all that
//! wait at the same moment (`batch`), so that N of them cost one executor start-up, one round
//! trip and one commit instead of N (`docs/scaling.md`, "Retrievals in batches").
//!
//! Each job is what `apply_one`'s single statement would write for its plan, without the
//! failure budget: the key row's `UPDATE` guarded by the values the plan was made from, and,
//! only for the rows that `UPDATE` returned, the retrieval record, events, their deliveries and
//! the audit row, joined to the returned row by the job's ordinal `n`. A job
//! whose guard did not hold (its key changed since the read) writes nothing and answers
//! `false`; its caller reads and plans again (`retrieve`), as after the single statement.
//!
//! Plans that count a failure (`BudgetEffect::Charge`, and `apply_one`'s lock part `kl` that
//! orders the key before the budget) or give a password's slot back stay on `apply_one`'s
//! single statement: their budget rows would need an order of their own across batches, and
//! two counts of one subject cannot share a statement (`ON CONFLICT DO UPDATE` refuses to
//! change one row twice). They are rare where it matters (the success path).
//!
//! Locks: `kl` locks every job's key row, in id order, before the `UPDATE` changes any (the
//! update's condition reads `ARRAY(SELECT id FROM kl)`, an init-plan evaluated in full before
//! the first row is returned to it), so two batches wait for each other in one order and
//! cannot deadlock; a single statement locks one key row, and then the budget row, which no
//! batch locks. READ COMMITTED re-checks an `UPDATE`'s condition on the newest row version
//! (the one `kl` locked), so a guard is checked on what the key holds when it is written, as
//! in the single statement.
//!
//! Every table is reached by an index whatever the plan: PostgreSQL keeps the generic plan it
//! makes after five runs on a connection, from the tables' sizes at that moment, and a join
//! planned while a table is small stays a sequential scan as it grows (`docs/scaling.md`,
//! "Plans made once per connection"). How [`GUARDED_SQL`] avoids it is said there; tested
//! below with `EXPLAIN` of the generic plan on empty tables.

use std::sync::LazyLock;

use futures::future::BoxFuture;
use sqlx::{PgConnection, Row};

use super::apply_one::RowState;
use super::batch::Batch;
use super::cte::{AuditParams, EventParams};
use super::outbox::{ENDPOINT_SQL, TARGETS_SQL};

/// The guarded writes of many retrievals as one statement over arrays, one element per job
/// (`$1`–`$19`), one per event (`$20`–`$23`), per delivered event (`$24`, `$25`) and per
/// audit row (`$26`–`$33`), each of the last three naming its job by ordinal; `$34` is the
/// number of jobs. Answers the ordinals of the jobs whose key row was written.
///
/// - `kl` locks the key rows one by one in id order: a sub-select per id, evaluated row by
///   row over the sorted ids (a sub-query with `ORDER BY` is not merged into its parent), each
///   an index scan of the primary key whatever the plan.
/// - `k`, the `UPDATE`, reaches `keys` only by `keys.id = j.id`: the guard, `ended_at` (null)
///   included, is one row comparison `IS NOT DISTINCT FROM`, which no index serves (as column
///   equalities it let the generic plan pick `keys_live_expiry` by `expires_at`, and as
///   `keys.ended_at IS NULL`, that index's predicate since migration 9, it let the generic plan
///   scan the whole index), and `LIMIT $34`, which cuts nothing, makes the generic plan estimate
///   one job (a `LIMIT` of a parameter is taken as a tenth of its input), so that a nested loop
///   over the primary key is cheaper than a hash join over a sequential scan even while `keys` is
///   empty. The row comparison is the single statement's guard: every column null-safe, and the
///   columns that are `NOT NULL` in `keys` are never null in a job.
static GUARDED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH j AS (
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[],
               $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::bigint[], $10::bigint[],
               $11::text[], $12::bigint[], $13::bigint[], $14::text[], $15::text[],
               $16::bigint[], $17::bigint[], $18::text[], $19::text[])
           WITH ORDINALITY AS j(at, id, code_hash, state, retrievals, failed,
               pending_retrieval_id, pending_service_id, confirm_by, expires_at,
               next_state, next_retrievals, next_failed, next_retrieval_id, next_service_id,
               next_confirm_by, ended_at, retrieval_id, retrieval_service, n)
         ), kl AS (
           SELECT (SELECT id FROM keys WHERE keys.id = l.id FOR UPDATE) AS id
           FROM (SELECT id FROM unnest($2::text[]) AS l(id) ORDER BY id) AS l
         ), k AS (
           UPDATE keys SET state = j.next_state, retrievals = j.next_retrievals,
             failed_password_attempts = j.next_failed,
             pending_retrieval_id = j.next_retrieval_id, pending_service_id = j.next_service_id,
             confirm_by = j.next_confirm_by, ended_at = j.ended_at,
             spki = CASE WHEN j.ended_at IS NULL THEN keys.spki END,
             secret_sealed = CASE WHEN j.ended_at IS NULL THEN keys.secret_sealed END,
             password_hash = CASE WHEN j.ended_at IS NULL THEN keys.password_hash END
           FROM (SELECT * FROM j LIMIT $34) AS j
           WHERE keys.id = j.id AND keys.id = ANY (ARRAY(SELECT id FROM kl))
             AND (keys.code_hash, keys.state, keys.retrievals, keys.failed_password_attempts,
                  keys.pending_retrieval_id, keys.pending_service_id, keys.confirm_by,
                  keys.expires_at, keys.ended_at)
               IS NOT DISTINCT FROM (j.code_hash, j.state, j.retrievals, j.failed,
                  j.pending_retrieval_id, j.pending_service_id, j.confirm_by, j.expires_at,
                  NULL::bigint)
           RETURNING keys.id, keys.tenant_id, keys.notify, j.n, j.at, j.retrieval_id,
             j.retrieval_service
         ), r AS (
           INSERT INTO retrievals (id, key_id, service_id, at)
           SELECT retrieval_id, id, retrieval_service, at FROM k WHERE retrieval_id IS NOT NULL
         ), ev AS (
           INSERT INTO events (id, key_id, tenant_id, type, at, payload)
           SELECT e.id, k.id, k.tenant_id, e.type, k.at, e.payload
           FROM unnest($20::bigint[], $21::text[], $22::text[], $23::text[])
                WITH ORDINALITY AS e(job, id, type, payload, m)
           JOIN k ON k.n = e.job
           ORDER BY e.m
         ), dl AS (
           INSERT INTO deliveries (event_id, channel, target, tenant_id, status, next_attempt_at,
                                   created_at, endpoint)
           SELECT e.id, t.channel, t.target, k.tenant_id, 'pending', k.at, k.at, {ENDPOINT_SQL}
           FROM unnest($24::bigint[], $25::text[]) WITH ORDINALITY AS e(job, id, m)
           JOIN k ON k.n = e.job, LATERAL ({TARGETS_SQL}) t
           ORDER BY e.m, t.channel, t.target
         ), au AS (
           INSERT INTO audit (at, actor, action, outcome, key_id, ip, detail)
           SELECT a.at, a.actor, a.action, a.outcome, a.key_id, a.ip, a.detail
           FROM unnest($26::bigint[], $27::bigint[], $28::text[], $29::text[], $30::text[],
                       $31::text[], $32::text[], $33::text[])
                WITH ORDINALITY AS a(job, at, actor, action, outcome, key_id, ip, detail, m)
           JOIN k ON k.n = a.job
           ORDER BY a.m
         )
         SELECT n FROM k"
    )
});

/// The guarded write of one plan (`apply_one::Applying::into_write`): everything it binds, ids
/// and times fixed, so that a batch sent again sends the same thing.
pub struct Guarded {
    /// The plan's time (Unix ms): events, retrieval record, the key's end.
    pub(super) at: i64,
    pub(super) key_id: String,
    /// The key row as the plan read it (`old.ended_at` is `None`: only a live key is planned
    /// from), with its code hash and expiry.
    pub(super) code_hash: Vec<u8>,
    pub(super) old: RowState,
    pub(super) expires_at: i64,
    /// The key row after the plan.
    pub(super) next: RowState,
    /// `(retrieval_id, service_id)` of a hand-out.
    pub(super) retrieval: Option<(String, String)>,
    pub(super) events: EventParams,
    /// A row of its own, or none (never a coalesced refusal: those charge the budget).
    pub(super) audit: AuditParams,
}

/// The statement of [`GUARDED_SQL`] over many guarded writes; each answers `true` when its
/// plan was written, `false` when its key row no longer held what the plan was made from.
pub struct Guardeds;

/// One column of the jobs, as an array.
fn column<'a, T>(jobs: &'a [Guarded], f: impl Fn(&'a Guarded) -> T) -> Vec<T> {
    jobs.iter().map(f).collect()
}

/// The rows of one kind that the jobs add (events, deliveries, audit rows): the ordinal (from
/// 1) of each row's job, and the rows.
fn per_job<'a, T>(jobs: &'a [Guarded], rows: impl Fn(&'a Guarded) -> Vec<T>) -> (Vec<i64>, Vec<T>) {
    let mut ordinals = Vec::new();
    let mut all = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        for row in rows(job) {
            ordinals.push(i64::try_from(i + 1).unwrap_or(i64::MAX));
            all.push(row);
        }
    }
    (ordinals, all)
}

impl Guardeds {
    /// Runs the one statement for `jobs`, in autocommit (its caller's: `batch`) or inside the
    /// caller's transaction (tests).
    pub async fn run(jobs: &[Guarded], c: &mut PgConnection) -> Result<Vec<bool>, sqlx::Error> {
        let events = per_job(jobs, |g| g.events.rows());
        let (event_jobs, events): (Vec<i64>, Vec<_>) = events;
        let (delivered_jobs, delivered) = per_job(jobs, |g| g.events.delivered());
        let (audit_jobs, audits) = per_job(jobs, |g| g.audit.own_row().into_iter().collect());
        let q = sqlx::query(&GUARDED_SQL)
            .bind(column(jobs, |g| g.at))
            .bind(column(jobs, |g| g.key_id.as_str()))
            .bind(column(jobs, |g| g.code_hash.as_slice()))
            .bind(column(jobs, |g| g.old.state.as_str()))
            .bind(column(jobs, |g| g.old.retrievals))
            .bind(column(jobs, |g| g.old.failed))
            .bind(column(jobs, |g| g.old.pending_retrieval_id.as_deref()))
            .bind(column(jobs, |g| g.old.pending_service_id.as_deref()))
            .bind(column(jobs, |g| g.old.confirm_by))
            .bind(column(jobs, |g| g.expires_at))
            .bind(column(jobs, |g| g.next.state.as_str()))
            .bind(column(jobs, |g| g.next.retrievals))
            .bind(column(jobs, |g| g.next.failed))
            .bind(column(jobs, |g| g.next.pending_retrieval_id.as_deref()))
            .bind(column(jobs, |g| g.next.pending_service_id.as_deref()))
            .bind(column(jobs, |g| g.next.confirm_by))
            .bind(column(jobs, |g| g.next.ended_at))
            .bind(column(jobs, |g| g.retrieval.as_ref().map(|r| r.0.as_str())))
            .bind(column(jobs, |g| g.retrieval.as_ref().map(|r| r.1.as_str())))
            .bind(event_jobs)
            .bind(events.iter().map(|e| e.0).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.1).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.2).collect::<Vec<_>>())
            .bind(delivered_jobs)
            .bind(delivered)
            .bind(audit_jobs)
            .bind(audits.iter().map(|a| a.at).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.actor).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.action).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.outcome).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.key_id).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.ip).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.detail).collect::<Vec<_>>())
            .bind(i64::try_from(jobs.len()).unwrap_or(i64::MAX));
        let written: Vec<i64> = q
            .fetch_all(c)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok((1..=jobs.len())
            .map(|n| written.contains(&i64::try_from(n).unwrap_or(i64::MAX)))
            .collect())
    }
}

impl Batch for Guardeds {
    type Job = Guarded;
    type Out = bool;

    fn run<'c>(
        &'c self,
        jobs: &'c [Guarded],
        c: &'c mut PgConnection,
    ) -> BoxFuture<'c, Result<Vec<bool>, sqlx::Error>> {
        Box::pin(Guardeds::run(jobs, c))
    }

    /// Two plans of one key never share a statement: `UPDATE … FROM` changes a row once
    /// whatever number of jobs match it, and each plan must be checked against the row the
    /// other left.
    fn clash(&self, a: &Guarded, b: &Guarded) -> bool {
        a.key_id == b.key_id
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::join_all;
    use jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::store::events::EventType;
    use crate::store::lifecycle::{
        AuditEffect, BudgetEffect, EventEffect, KeyChange, KeyIdent, KeyRow, Plan, KEY_COLUMNS,
    };
    use crate::store::postgres::apply_one::{Applying, Read, Write};
    use crate::store::postgres::batch::Batcher;
    use crate::store::postgres::keys::Deposits;
    use crate::store::postgres::test_db::{self, drop_db};
    use crate::store::postgres::PostgresStore;
    use crate::store::{AuditRecord, KeyState};

    fn row(id: &str, retrievals: u32) -> KeyRow {
        KeyRow {
            id: id.into(),
            tenant_id: "ten_test".into(),
            label: None,
            kind: "secret".into(),
            algorithm: "secret".into(),
            spki: None,
            secret_sealed: Some(vec![7; 40]),
            fingerprint: None,
            ssh_fingerprint: None,
            jwk_thumbprint: None,
            proven: false,
            policy: r#"{"max_retrievals":3}"#.into(),
            state: "active".into(),
            expires_at: 0,
            retrievals,
            failed_password_attempts: 0,
            pending_retrieval_id: None,
            pending_service_id: None,
            confirm_by: None,
            ended_at: None,
            notify: false,
            password_hash: None,
            created_at: 0,
            origin_network: None,
            sas_commitment: None,
        }
    }

    /// The plan of a retrieval of `row` (read with `code_hash`) that changes it by `change`
    /// and does `budget` to the service's budget.
    fn plan(row: &KeyRow, change: KeyChange, budget: BudgetEffect, at: Timestamp) -> Plan {
        let key = KeyIdent::new(row.id.clone(), row.tenant_id.clone(), None);
        let handed_out = !matches!(change, KeyChange::Keep);
        Plan {
            at,
            key: Some(key),
            budget: ("service:svc_test".into(), budget),
            change,
            retrieval: handed_out.then(|| (crate::crypto::new_id("ret_"), "svc_test".into())),
            events: vec![EventEffect {
                ty: EventType::Retrieved,
                service: Some(("svc_test".into(), "test".into())),
                reason: None,
            }],
            audit: AuditEffect::Row(AuditRecord {
                at,
                actor: "service:svc_test".into(),
                action: "key.retrieve",
                outcome: "success".into(),
                key_id: Some(row.id.clone()),
                ip: None,
                detail: None,
            }),
        }
    }

    fn applying(row: &KeyRow, code_hash: &[u8], p: &Plan) -> Applying {
        let read = Read { row, code_hash };
        Applying::new(p, Some(read), 20).unwrap()
    }

    /// The guarded write of a plan that may share a statement, else `None`.
    fn batched(a: Applying) -> Option<Guarded> {
        match a.into_write() {
            Write::Batched(g) => Some(g),
            Write::Alone(_) => None,
        }
    }

    fn end(row: &KeyRow) -> KeyChange {
        KeyChange::End {
            state: KeyState::Retrieved,
            retrievals: Some(row.retrievals + 1),
            clear_hold: false,
        }
    }

    #[test]
    fn only_plans_that_charge_no_budget_are_batched_and_one_key_never_twice() {
        let (a, b) = (row("key_a", 0), row("key_b", 0));
        let now = Timestamp::UNIX_EPOCH;
        let hand_out = plan(&a, end(&a), BudgetEffect::Keep, now);
        let preview = plan(&a, KeyChange::Keep, BudgetEffect::Keep, now);
        let count = plan(
            &b,
            KeyChange::Count { retrievals: 1 },
            BudgetEffect::Keep,
            now,
        );
        let a1 = batched(applying(&a, b"a", &hand_out)).unwrap();
        let a2 = batched(applying(&a, b"a", &preview)).unwrap();
        let b1 = batched(applying(&b, b"b", &count)).unwrap();
        assert!(Guardeds.clash(&a1, &a2));
        assert!(!Guardeds.clash(&a1, &b1));
        // A failure counted, a slot given back: the single statement.
        let wrong = KeyChange::WrongPassword {
            failed_attempts: 1,
            lock: false,
        };
        let failure = plan(&a, wrong, BudgetEffect::Charge, now);
        assert!(batched(applying(&a, b"a", &failure)).is_none());
        let slot = crate::store::BudgetSlot { taken_at: now };
        let given_back = plan(&a, end(&a), BudgetEffect::GiveBack(slot), now);
        assert!(batched(applying(&a, b"a", &given_back)).is_none());
    }

    async fn store() -> Option<(PostgresStore, String, String)> {
        test_db::store("km_guarded_").await
    }

    /// Deposits a key with the code `code`, and reads it back as a retrieval does.
    async fn key(c: &mut PgConnection, code: &str, at: Timestamp) -> KeyRow {
        let d = [test_db::deposit(code, at, 3)];
        let id = d[0].key_id().to_owned();
        assert_eq!(Deposits::run(&d, &mut *c).await.unwrap(), [true]);
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = $1");
        let r = sqlx::query(&sql).bind(&id).fetch_one(c).await.unwrap();
        KeyRow::read(&r).unwrap()
    }

    async fn count(c: &mut PgConnection, sql: &str, id: &str) -> i64 {
        let q = sqlx::query_scalar(sql).bind(id);
        q.fetch_one(c).await.unwrap()
    }

    #[tokio::test]
    async fn a_guard_that_fails_answers_false_for_its_job_alone() {
        let Some((store, url, name)) = store().await else {
            return;
        };
        let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
        let mut c = store.pool.acquire().await.unwrap();
        let (a, b, h) = (
            key(&mut c, "a", now).await,
            key(&mut c, "b", now).await,
            key(&mut c, "h", now).await,
        );
        let hold = KeyChange::Hold {
            retrievals: 1,
            retrieval_id: crate::crypto::new_id("ret_"),
            service_id: "svc_test".into(),
            confirm_by: now + SignedDuration::from_mins(1),
        };
        let plans = [
            (&a, b"a", plan(&a, end(&a), BudgetEffect::Keep, now)),
            (
                &b,
                b"b",
                plan(
                    &b,
                    KeyChange::Count { retrievals: 1 },
                    BudgetEffect::Keep,
                    now,
                ),
            ),
            (&h, b"h", plan(&h, hold, BudgetEffect::Keep, now)),
        ];
        let jobs: Vec<Guarded> = plans
            .iter()
            .map(|(r, code, p)| batched(applying(r, *code, p)).unwrap())
            .collect();
        // `b` changes after it was read: its plan must not be written.
        sqlx::query("UPDATE keys SET retrievals = 2 WHERE id = $1")
            .bind(&b.id)
            .execute(&mut *c)
            .await
            .unwrap();
        let written = Guardeds::run(&jobs, &mut c).await.unwrap();
        assert_eq!(written, [true, false, true]);
        for ((r, _, _), written) in plans.iter().zip(written) {
            let want = i64::from(written);
            let events = "SELECT count(*) FROM events WHERE key_id = $1 AND type = 'key.retrieved'";
            assert_eq!(
                count(&mut c, events, &r.id).await,
                want,
                "events of {}",
                r.id
            );
            let audit = "SELECT count(*) FROM audit WHERE key_id = $1 AND action = 'key.retrieve'";
            assert_eq!(count(&mut c, audit, &r.id).await, want, "audit of {}", r.id);
            let records = "SELECT count(*) FROM retrievals WHERE key_id = $1";
            assert_eq!(
                count(&mut c, records, &r.id).await,
                want,
                "records of {}",
                r.id
            );
        }
        let state = "SELECT state || ' ' || retrievals || ' ' || (code_hash IS NULL) FROM keys
                     WHERE id = $1";
        for (r, want) in [
            (&a, "retrieved 1 false"),
            (&b, "active 2 false"),
            (&h, "awaiting_confirmation 1 false"),
        ] {
            let q = sqlx::query_scalar::<_, String>(state).bind(&r.id);
            assert_eq!(q.fetch_one(&mut *c).await.unwrap(), want);
        }
        // `a` ended and keeps its code: its row is the dead code's tombstone.
        let tombstones = "SELECT count(*) FROM tombstones WHERE key_id = $1";
        assert_eq!(count(&mut c, tombstones, &a.id).await, 0);
        let code = "SELECT count(*) FROM keys WHERE code_hash = 'a'::bytea AND id = $1";
        assert_eq!(count(&mut c, code, &a.id).await, 1);
        drop(c);
        drop_db(store, &url, &name).await;
    }

    #[tokio::test]
    async fn two_plans_of_one_key_queued_at_once_write_once() {
        let Some((store, url, name)) = store().await else {
            return;
        };
        let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
        let mut c = store.pool.acquire().await.unwrap();
        let (a, b) = (key(&mut c, "a", now).await, key(&mut c, "b", now).await);
        drop(c);
        let batcher = Arc::new(Batcher::start(
            Guardeds,
            store.pool.clone(),
            store.primary.clone(),
            1,
        ));
        // Both plans of `a` made from the same read: the second must meet the row the first
        // left, in a statement of its own, and find its guard broken.
        let plans = [
            (
                &a,
                b"a",
                plan(
                    &a,
                    KeyChange::Count { retrievals: 1 },
                    BudgetEffect::Keep,
                    now,
                ),
            ),
            (
                &b,
                b"b",
                plan(
                    &b,
                    KeyChange::Count { retrievals: 1 },
                    BudgetEffect::Keep,
                    now,
                ),
            ),
            (
                &a,
                b"a",
                plan(
                    &a,
                    KeyChange::Count { retrievals: 1 },
                    BudgetEffect::Keep,
                    now,
                ),
            ),
        ];
        let calls = plans.iter().map(|(r, code, p)| {
            let job = batched(applying(r, *code, p)).unwrap();
            let batcher = batcher.clone();
            async move { batcher.run(job).await.unwrap() }
        });
        assert_eq!(join_all(calls).await, [true, true, false]);
        let retrievals = "SELECT retrievals FROM keys WHERE id = $1";
        let mut c = store.pool.acquire().await.unwrap();
        assert_eq!(count(&mut c, retrievals, &a.id).await, 1);
        assert_eq!(count(&mut c, retrievals, &b.id).await, 1);
        drop(c);
        drop(batcher);
        drop_db(store, &url, &name).await;
    }

    /// The plan PostgreSQL keeps after five runs, made while every table is empty: each table
    /// is reached by an index (`docs/scaling.md`, "Plans made once per connection").
    #[tokio::test]
    async fn the_generic_plan_on_empty_tables_scans_no_table() {
        let Some((store, url, name)) = store().await else {
            return;
        };
        let plan = test_db::generic_plan(&store, &GUARDED_SQL, 34).await;
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(!plan.contains("Bitmap Heap Scan"), "{plan}");
        assert_eq!(
            plan.matches("Index Scan using keys_pkey").count(),
            2,
            "{plan}"
        );
        drop_db(store, &url, &name).await;
    }
}
