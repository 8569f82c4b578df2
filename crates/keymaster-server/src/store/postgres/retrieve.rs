//! PostgreSQL: retrievals, previews and refusals without a lock held across round trips, and
//! confirmations.
//!
//! A retrieval is one read and one conditional write, in autocommit (`once`, `connect::run`): one
//! `SELECT` (`reads`, shared with the reads that wait at the same moment) finds the key by its code
//! hash (of the tenant the service is confined to, if it is: `ServiceAuth::confined_tenant_id`) —
//! live, or ended, whose row keeps its dead code —, the service's failure-budget row and, for a
//! code that no key row holds (a replaced code, or that of a key that ended before migration 9),
//! its tombstone, all without locks; `store::lifecycle` plans from what it found, exactly as for
//! SQLite; `apply_one` writes the plan in one statement that changes the key row only if it still
//! holds the values the plan was made from, and counts a failure only while the budget has room —
//! or, for a plan that charges no budget (a hand-out, a preview), `guarded` writes it with the same
//! guard in one statement shared with the others that wait at the same moment (`batch`). When that
//! statement writes nothing, the retrieval reads and plans again: of several retrievals of a
//! single-use code one ends the key, and the others then find it ended. After [`OPTIMISTIC`] rounds
//! (a key that many retrieve at once, or a budget on its edge) it locks the key row in a
//! transaction and plans once more, so that no retrieval waits without bound.
//!
//! Cold paths take more round trips: a code hashed under a previous server secret (looked up
//! only when the current hash finds nothing, then rehashed: `rotation::rehash_code`), the
//! tenant's name for a preview, the fallback transaction.
//!
//! A request with a password for a key that every other rule would hand out takes a slot of
//! the budget (`VerifyPassword`: a failure counted in advance, only while the budget has room)
//! and writes nothing else; the caller checks the password and retrieves again with the
//! verdict and the slot, which is then the attempt's failure, or is given back in the
//! statement that hands the key out. So across replicas no more passwords are checked per
//! window than the budget allows (given clocks that agree on the minute).

use std::sync::Arc;

use futures::future::BoxFuture;
use jiff::Timestamp;
use sqlx::postgres::PgRow;
use sqlx::PgConnection;

use super::apply::apply;
use super::apply_one::{Applying, Read, Write};
use super::batch::Batcher;
use super::connect::run;
use super::db;
use super::guarded::Guardeds;
use super::once::{Hot, Statement};
use super::reads::Reads;
use super::rows::spent;
use crate::store::columns::Columns;
use crate::store::lifecycle::{
    self, outcome, plan_refuse, plan_retrieve, subject, Answer, Found, HeldKey, KeyIdent, KeyRow,
    HELD_COLUMNS, KEY_COLUMNS,
};
use crate::store::{AuditRecord, RetrieveCommand, RetrieveOutcome, ServiceAuth, StoreError};

/// Rounds of read, plan, conditional write before a retrieval locks the key row.
const OPTIMISTIC: usize = 3;

/// Where the read's columns after the key's ([`KEY_COLUMNS`]) are (`reads::READS_SQL`).
const CODE_HASH: usize = 25;
const BUDGET: usize = 26;
const DEAD: usize = 28;

/// What a retrieval found, with the code hash the key row holds (the guard of a live key's
/// plan: `apply_one`; empty where no row has the code).
type Finding = (Found, Vec<u8>);

/// What a retrieval plans from, from its read (`reads`). `None`: nothing has the code
/// under the current secret, during a rotation ([`under_previous_secrets`] looks further).
fn found_in(row: &PgRow, cmd: &RetrieveCommand) -> Result<Option<Finding>, StoreError> {
    // With a slot taken in advance, this attempt is already in the budget.
    if cmd.budget_slot.is_none() {
        let budget = match row.opt_int(BUDGET)? {
            Some(start) => Some((start, row.int(BUDGET + 1)?)),
            None => None,
        };
        if let Some(retry) = spent(budget, cmd.now, cmd.budget_per_minute) {
            return Ok(Some((Found::RateLimited(retry), Vec::new())));
        }
    }
    // A key row with the code: live, or ended (its row is the dead code's tombstone).
    if row.opt_text(0)?.is_some() {
        let hash = row.opt_bytes(CODE_HASH)?.unwrap_or_default();
        return Ok(Found::from_row(Some(KeyRow::read(row)?)).map(|f| (f, hash)));
    }
    if !cmd.previous_code_hashes.is_empty() {
        return Ok(None);
    }
    let dead = match row.opt_text(DEAD)? {
        Some(id) => Found::Dead(KeyIdent::new(
            id,
            row.text(DEAD + 1)?,
            row.opt_text(DEAD + 2)?,
        )),
        None => Found::Unknown,
    };
    Ok(Some((dead, Vec::new())))
}

/// A code that the current secret's hash finds nothing for, during a rotation: a key under a
/// previous secret's hash (a live one gets the current hash, then the retrieval reads again),
/// else a tombstone under any of the hashes. `None`: a key was rehashed; read again.
async fn under_previous_secrets(
    c: &mut PgConnection,
    cmd: &RetrieveCommand,
) -> Result<Option<Finding>, StoreError> {
    let confined = cmd.service.confined_tenant_id.as_deref();
    for old in &cmd.previous_code_hashes {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM keys
             WHERE code_hash = $1 AND ($2::text IS NULL OR tenant_id = $2)"
        ))
        .bind(old)
        .bind(confined)
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        if let Some(row) = row.as_ref().map(KeyRow::read).transpose()? {
            if !row.is_live() {
                return Ok(Found::from_row(Some(row)).map(|f| (f, old.clone())));
            }
            super::rotation::rehash_code(c, &row.id, old, &cmd.code_hash).await?;
            return Ok(None);
        }
    }
    let previous = &cmd.previous_code_hashes;
    let dead = super::rotation::tombstone(c, &cmd.code_hash, previous, confined).await?;
    let found = dead.map_or(Found::Unknown, |(id, tenant, label)| {
        Found::Dead(KeyIdent::new(id, tenant, label))
    });
    Ok(Some((found, Vec::new())))
}

/// A retrieval's read: a job of `reads`, or a batch of its own in the locked round.
pub struct ReadRow {
    pub(super) cmd: Arc<RetrieveCommand>,
    pub(super) subject: Arc<str>,
}

/// A subject's budget row (`window_start`, `failures`).
struct ReadBudget(String);

impl Statement for ReadBudget {
    type Out = Option<(i64, i64)>;

    fn run<'c>(&'c self, c: &'c mut PgConnection) -> BoxFuture<'c, Result<Self::Out, sqlx::Error>> {
        Box::pin(
            sqlx::query_as("SELECT window_start, failures FROM failure_budget WHERE subject = $1")
                .bind(&self.0)
                .fetch_optional(c),
        )
    }
}

/// The plan of what was found, as the statement that writes it.
fn applying(cmd: &RetrieveCommand, finding: &Finding) -> Result<(Applying, Answer), StoreError> {
    let (found, code_hash) = finding;
    let (plan, answer) = plan_retrieve(cmd, found)?;
    let read = match found {
        Found::Live(row) => Some(Read { row, code_hash }),
        _ => None,
    };
    Ok((Applying::new(&plan, read, cmd.budget_per_minute)?, answer))
}

/// A retrieval or preview (see the file's header); its read shares a statement with the
/// reads that wait at the same moment (`reads`), and its write with others through `guarded`
/// when it charges no failure budget.
pub async fn retrieve(
    hot: &Hot<'_>,
    reads: &Batcher<Reads>,
    guarded: &Batcher<Guardeds>,
    cmd: Arc<RetrieveCommand>,
) -> Result<RetrieveOutcome, StoreError> {
    let subject: Arc<str> = subject(&cmd.service).into();
    for _ in 0..OPTIMISTIC {
        let read = ReadRow {
            cmd: cmd.clone(),
            subject: subject.clone(),
        };
        let row = reads.run(read).await?;
        let finding = match found_in(&row, &cmd)? {
            Some(finding) => finding,
            None => {
                let cmd = cmd.clone();
                let cold = run::transaction(hot.pool, hot.primary, move |c| {
                    Box::pin(async move { under_previous_secrets(c, &cmd).await })
                });
                match cold.await? {
                    Some(finding) => finding,
                    None => continue,
                }
            }
        };
        let (statement, answer) = applying(&cmd, &finding)?;
        let written = match statement.into_write() {
            Write::Batched(job) => guarded.run(job).await?,
            Write::Alone(statement) => hot.write(Arc::new(statement)).await?,
        };
        if written {
            let mut tenant = None;
            if let (Answer::Preview, Found::Live(row)) = (&answer, &finding.0) {
                let id = row.tenant_id.clone();
                let name = run::read(hot.pool, hot.primary, move |c| {
                    Box::pin(async move { super::handoff::tenant_name(c, &id).await })
                });
                tenant = Some(name.await?);
            }
            return outcome(finding.0, answer, tenant);
        }
    }
    run::transaction(hot.pool, hot.primary, move |c| {
        Box::pin(async move { locked(c, &cmd, &subject).await })
    })
    .await
}

/// The last round of a retrieval that kept finding its key changed, inside a transaction: the
/// key row locked until the commit, so that the plan's guard holds (a budget without room
/// still makes it plan again, within the same lock).
async fn locked(
    c: &mut PgConnection,
    cmd: &Arc<RetrieveCommand>,
    subject: &Arc<str>,
) -> Result<RetrieveOutcome, StoreError> {
    sqlx::query(
        "SELECT 1 FROM keys WHERE code_hash = $1 AND ($2::text IS NULL OR tenant_id = $2)
         FOR UPDATE",
    )
    .bind(&cmd.code_hash)
    .bind(cmd.service.confined_tenant_id.as_deref())
    .execute(&mut *c)
    .await
    .map_err(db)?;
    let read = ReadRow {
        cmd: cmd.clone(),
        subject: subject.clone(),
    };
    for _ in 0..OPTIMISTIC {
        let row = Reads::one(&read, c).await.map_err(db)?;
        let found = match found_in(&row, cmd)? {
            Some(found) => Some(found),
            None => under_previous_secrets(c, cmd).await?,
        };
        let Some(finding) = found else {
            continue;
        };
        let (statement, answer) = applying(cmd, &finding)?;
        if statement.run(c).await.map_err(db)? {
            let mut tenant = None;
            if let (Answer::Preview, Found::Live(row)) = (&answer, &finding.0) {
                tenant = Some(super::handoff::tenant_name(c, &row.tenant_id).await?);
            }
            return outcome(finding.0, answer, tenant);
        }
    }
    Err(StoreError::Unavailable(
        "the retrieval's key kept changing; try again".into(),
    ))
}

/// A refusal before any key is looked at: counted while the budget has room (one statement),
/// else the budget row is read for the answer's `Retry-After` and a `rate_limited` refusal is
/// coalesced into the audit.
pub async fn refuse(
    hot: &Hot<'_>,
    service: &ServiceAuth,
    per_minute: u32,
    a: &AuditRecord,
) -> Result<Option<u64>, StoreError> {
    let read = Arc::new(ReadBudget(subject(service)));
    let mut retry = None;
    for _ in 0..OPTIMISTIC {
        let statement = Applying::new(&plan_refuse(service, retry, a), None, per_minute)?;
        if hot.write(Arc::new(statement)).await? {
            return Ok(retry);
        }
        retry = spent(hot.read(read.clone()).await?, a.at, per_minute);
    }
    Err(StoreError::Unavailable(
        "the failure budget kept changing; try again".into(),
    ))
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

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use sqlx::PgConnection;

    use crate::store::postgres::test_db::{self, drop_db};
    use crate::store::{PasswordCheck, RetrieveCommand, RetrieveOutcome, ServiceAuth, Store};

    fn cmd(code: &str, now: Timestamp) -> RetrieveCommand {
        RetrieveCommand {
            code_hash: code.as_bytes().to_vec(),
            previous_code_hashes: Vec::new(),
            service: ServiceAuth {
                id: "svc_a".into(),
                name: "a".into(),
                domains: vec![],
                allowed_cidrs: vec![],
                confined_tenant_id: None,
            },
            source_ip: "192.0.2.1".parse().unwrap(),
            context: None,
            password: PasswordCheck::NotGiven,
            now,
            budget_per_minute: 10,
            new_retrieval_id: crate::crypto::new_id("ret_"),
            budget_slot: None,
            preview: false,
        }
    }

    async fn count(c: &mut PgConnection, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(c).await.unwrap()
    }

    /// A key that ended before migration 9 has no code in its row, and its code in
    /// `tombstones`; one that ends after keeps its code in its row and writes no tombstone.
    /// Both dead codes are reported to their holder (`code.stale_used`), neither hands
    /// anything out. The migration made "live" `ended_at IS NULL` in the index of live
    /// expiries and kept the unique index of codes, which now holds dead codes too.
    #[tokio::test]
    async fn dead_codes_are_reported_whether_in_their_row_or_in_an_old_tombstone() {
        let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
        let (ms, later) = (now.as_millisecond(), now.as_millisecond() + 3_600_000);
        let setup = format!(
            "INSERT INTO keys (id, tenant_id, holder_hash, code_hash, code_format, kind, algorithm,
                 secret_sealed, proven, policy, state, created_at, expires_at, ended_at,
                 max_retrievals)
             VALUES ('key_old', 'ten_test', 'h-old', NULL, 'digits', 'secret', 'secret', NULL,
                     false, '{{\"max_retrievals\":1}}', 'retrieved', {ms}, {later}, {ms}, 1),
                    ('key_new', 'ten_test', 'h-new', 'new', 'digits', 'secret', 'secret',
                     '\\x07', false, '{{\"max_retrievals\":1}}', 'active', {ms}, {later},
                     NULL, 1);
             INSERT INTO tombstones (code_hash, key_id, died_at) VALUES ('old', 'key_old', {ms});"
        );
        let Some((store, url, name)) = test_db::store_after("km_retrieve_", 8, &setup).await else {
            return;
        };
        let allowed = store.retrieve(cmd("new", now)).await.unwrap();
        assert!(
            matches!(allowed, RetrieveOutcome::Allowed(_)),
            "{allowed:?}"
        );
        let mut c = store.pool.acquire().await.unwrap();
        let kept = "SELECT count(*) FROM keys WHERE id = 'key_new' AND code_hash = 'new'
                    AND ended_at IS NOT NULL AND secret_sealed IS NULL";
        assert_eq!(count(&mut c, kept).await, 1);
        for (code, key_id) in [("new", "key_new"), ("old", "key_old")] {
            let got = store.retrieve(cmd(code, now)).await.unwrap();
            assert!(matches!(got, RetrieveOutcome::NotFound), "{code}: {got:?}");
            let events = store.key_events(key_id, 0).await.unwrap();
            let stale = events
                .iter()
                .filter(|e| e.event.event_type == "code.stale_used")
                .count();
            assert_eq!(stale, 1, "{key_id}");
        }
        let tombstones = "SELECT count(*) FROM tombstones";
        assert_eq!(count(&mut c, tombstones).await, 1, "only the old key's");
        let indexes = "SELECT count(*) FROM pg_indexes WHERE tablename = 'keys' AND (
             (indexname = 'keys_live_expiry' AND indexdef LIKE '%WHERE (ended_at IS NULL)')
             OR (indexname = 'keys_code' AND indexdef LIKE 'CREATE UNIQUE INDEX%'))";
        assert_eq!(count(&mut c, indexes).await, 2);
        drop(c);
        drop_db(store, &url, &name).await;
    }
}
