//! PostgreSQL: deposits (one statement for all that wait at the same moment, `batch`) and the
//! holder's operations on one key (status, expiry, revoke, re-code). Every holder's change to a
//! live key first locks its row (`FOR UPDATE`), so it serialises with the sweeper of every
//! replica, and a retrieval whose guarded write waits for that lock then finds the row changed
//! and plans again (`apply_one`).

use std::sync::LazyLock;

use futures::future::BoxFuture;
use jiff::Timestamp;
use sqlx::{PgConnection, Row};

use super::apply::apply;
use super::batch::Batch;
use super::outbox::{ENDPOINT_SQL, TARGETS_SQL};
use super::sweep::NO_SEQ_SCANS;
use super::{db, ms};
use crate::store::columns::format_name;
use crate::store::events::{event_json, is_stream_only, new_event, EventType, KeyRef};
use crate::store::lifecycle::{self, read_record, Applied, LIVE_SQL, RECORD_COLUMNS};
use crate::store::limits;
use crate::store::{AuditRecord, KeyRecord, NewKey, RecodeOutcome, StoreError};

/// Deposits as one statement over arrays, one element per deposit (`batch`: the deposits that
/// wait at the same moment share it; a single deposit is a batch of one). `j` holds the jobs;
/// `k` the keys written. `ON CONFLICT DO NOTHING`: a deposit whose code a key row holds (a
/// live key's, or a dead code in the row of a key that ended within the retention period,
/// migration 9), or that is earlier in the same batch, or any other unique value taken, writes
/// nothing and answers `false`, and its caller makes another code; the others are written. For each
/// key written: its `key.deposited` event and the event's deliveries, the tombstone of the same
/// code removed (a replaced code, or that of a key that ended before migration 9: a new live
/// code supersedes it), the audit row. Everything but the key is
/// joined to `k` by the key's id, which is why two jobs with the same id never share a
/// statement ([`Deposits::clash`]).
///
/// The tombstones go by `= ANY (ARRAY(…))`, not a join with `k`: the statement's generic plan
/// is made once per connection, often while `tombstones` is empty, and a join planned then is a
/// hash join over a sequential scan of `tombstones` for as long as the connection lives (15 ms
/// a statement at 100,000 tombstones, measured); `= ANY` of an array is an index scan whatever
/// the table's size when planned.
///
/// The keys go in in code-hash order, so two batches that race for the same codes wait for
/// each other in the same order (no deadlock); the events in the batch's order.
static DEPOSIT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH j AS (
           SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::text[],
               $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::text[], $11::boolean[],
               $12::text[], $13::text[], $14::text[], $15::bigint[], $16::bigint[],
               $17::bigint[], $18::text[], $19::text[], $20::bytea[], $21::text[], $22::text[],
               $23::text[], $24::boolean[], $25::bigint[], $26::text[], $27::text[],
               $28::text[], $29::text[], $30::text[], $31::text[])
           WITH ORDINALITY AS j(id, tenant_id, holder_hash, code_hash, label, kind, algorithm,
               spki, secret_sealed, fingerprint, proven, policy, password_hash, notify,
               created_at, expires_at, max_retrievals, code_format, origin_network,
               sas_commitment, event_id, event_type, payload, delivered, audit_at, actor,
               action, outcome, audit_key_id, ip, detail, n)
         ), k AS (
           INSERT INTO keys (id, tenant_id, holder_hash, code_hash, label, kind, algorithm, spki,
               secret_sealed, fingerprint, ssh_fingerprint, jwk_thumbprint, proven, policy,
               password_hash, notify, state, created_at, expires_at, max_retrievals, code_format,
               origin_network, sas_commitment)
           SELECT id, tenant_id, holder_hash, code_hash, label, kind, algorithm, spki,
               secret_sealed, fingerprint, NULL, NULL, proven, policy, password_hash, notify,
               'active', created_at, expires_at, max_retrievals, code_format, origin_network,
               sas_commitment
           FROM j ORDER BY code_hash, n
           ON CONFLICT DO NOTHING
           RETURNING id, tenant_id, notify, code_hash
         ), tb AS (
           DELETE FROM tombstones WHERE code_hash = ANY (ARRAY(SELECT code_hash FROM k))
         ), ev AS (
           INSERT INTO events (id, key_id, tenant_id, type, at, payload)
           SELECT j.event_id, k.id, k.tenant_id, j.event_type, j.created_at, j.payload
           FROM k JOIN j ON j.id = k.id
           ORDER BY j.n
         ), dl AS (
           INSERT INTO deliveries (event_id, channel, target, tenant_id, status, next_attempt_at,
                                   created_at, endpoint)
           SELECT j.event_id, t.channel, t.target, k.tenant_id, 'pending', j.created_at,
                  j.created_at, {ENDPOINT_SQL}
           FROM k JOIN j ON j.id = k.id, LATERAL ({TARGETS_SQL}) t
           WHERE j.delivered
           ORDER BY j.n, t.channel, t.target
         ), au AS (
           INSERT INTO audit (at, actor, action, outcome, key_id, ip, detail)
           SELECT j.audit_at, j.actor, j.action, j.outcome, j.audit_key_id, j.ip, j.detail
           FROM k JOIN j ON j.id = k.id
           ORDER BY j.n
         )
         SELECT id FROM k"
    )
});

/// A deposit, ready to run (again, if PostgreSQL rolled it back: its ids and times are fixed
/// here): the key, its `key.deposited` event, its audit row.
pub struct Deposit {
    k: NewKey,
    policy: String,
    notify: Option<String>,
    origin_network: Option<String>,
    event_id: String,
    event_type: String,
    payload: String,
    /// Whether the event goes to webhooks and e-mail too (not stream-only).
    delivered: bool,
    audit: AuditRecord,
    audit_ip: Option<String>,
}

impl Deposit {
    /// The key's id (tests).
    #[cfg(test)]
    pub fn key_id(&self) -> &str {
        &self.k.id
    }

    /// The deposit of `k` audited by `a`, its `key.deposited` event naming a service and a
    /// reason when given (a key that answers an enrolment request).
    pub fn new(
        k: NewKey,
        a: &AuditRecord,
        service: Option<(&str, &str)>,
        reason: Option<&str>,
    ) -> Result<Deposit, StoreError> {
        let json = |e: serde_json::Error| StoreError::Db(e.to_string());
        let key = KeyRef {
            key_id: &k.id,
            tenant_id: &k.tenant_id,
            label: k.label.as_deref(),
        };
        let event = new_event(EventType::Deposited, &key, service, reason, k.created_at);
        let policy = serde_json::to_string(&k.policy).map_err(json)?;
        let notify = k.notify.as_ref().map(serde_json::to_string);
        Ok(Deposit {
            policy,
            notify: notify.transpose().map_err(json)?,
            origin_network: k.origin_network.map(|n| n.to_string()),
            payload: event_json(&event)?,
            delivered: !is_stream_only(&event.event_type),
            event_id: event.id,
            event_type: event.event_type,
            audit: a.clone(),
            audit_ip: a.ip.map(|ip| ip.to_string()),
            k,
        })
    }
}

/// The statement of [`DEPOSIT_SQL`] over many deposits; each answers `true` when its key was
/// written, `false` when a unique value (its code) was taken.
pub struct Deposits;

/// One column of the deposits, as the array that [`DEPOSIT_SQL`] binds.
fn column<'a, T>(jobs: &'a [Deposit], f: impl Fn(&'a Deposit) -> T) -> Vec<T> {
    jobs.iter().map(f).collect()
}

impl Deposits {
    /// Runs the one statement for `jobs`, on a connection in autocommit or inside the
    /// caller's transaction.
    pub async fn run(jobs: &[Deposit], c: &mut PgConnection) -> Result<Vec<bool>, sqlx::Error> {
        let q = sqlx::query(&DEPOSIT_SQL)
            .bind(column(jobs, |d| d.k.id.as_str()))
            .bind(column(jobs, |d| d.k.tenant_id.as_str()))
            .bind(column(jobs, |d| d.k.holder_hash.as_slice()))
            .bind(column(jobs, |d| d.k.code_hash.as_slice()))
            .bind(column(jobs, |d| d.k.label.as_deref()))
            .bind(column(jobs, |d| d.k.kind))
            .bind(column(jobs, |d| d.k.algorithm.as_str()))
            .bind(column(jobs, |d| d.k.spki.as_deref()))
            .bind(column(jobs, |d| d.k.secret_sealed.as_deref()))
            // `ssh_fingerprint` and `jwk_thumbprint` are not stored, as in every backend: a
            // retrieval derives both from the key (`PublicForms`), and the holder's view
            // shows only `fingerprint`.
            .bind(column(jobs, |d| d.k.fingerprint.as_deref()))
            .bind(column(jobs, |d| d.k.proven))
            .bind(column(jobs, |d| d.policy.as_str()))
            .bind(column(jobs, |d| d.k.password_hash.as_deref()))
            .bind(column(jobs, |d| d.notify.as_deref()))
            .bind(column(jobs, |d| ms(d.k.created_at)))
            .bind(column(jobs, |d| ms(d.k.expires_at)))
            .bind(column(jobs, |d| i64::from(d.k.policy.max_retrievals)))
            .bind(column(jobs, |d| format_name(d.k.code_format)))
            .bind(column(jobs, |d| d.origin_network.as_deref()))
            .bind(column(jobs, |d| d.k.sas_commitment.as_deref()))
            .bind(column(jobs, |d| d.event_id.as_str()))
            .bind(column(jobs, |d| d.event_type.as_str()))
            .bind(column(jobs, |d| d.payload.as_str()))
            .bind(column(jobs, |d| d.delivered))
            .bind(column(jobs, |d| ms(d.audit.at)))
            .bind(column(jobs, |d| d.audit.actor.as_str()))
            .bind(column(jobs, |d| d.audit.action))
            .bind(column(jobs, |d| d.audit.outcome.as_str()))
            .bind(column(jobs, |d| d.audit.key_id.as_deref()))
            .bind(column(jobs, |d| d.audit_ip.as_deref()))
            .bind(column(jobs, |d| d.audit.detail.as_deref()));
        let written: Vec<String> = q
            .fetch_all(c)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok(column(jobs, |d| written.contains(&d.k.id)))
    }
}

impl Batch for Deposits {
    type Job = Deposit;
    type Out = bool;

    fn run<'c>(
        &'c self,
        jobs: &'c [Deposit],
        c: &'c mut PgConnection,
    ) -> BoxFuture<'c, Result<Vec<bool>, sqlx::Error>> {
        Box::pin(Deposits::run(jobs, c))
    }

    /// The parts after the key find their deposit by the key's id.
    fn clash(&self, a: &Deposit, b: &Deposit) -> bool {
        a.k.id == b.k.id
    }
}

/// [`Deposit`] inside the caller's transaction (an enrolment request's answer): a batch of
/// one.
pub async fn deposit_with_event(
    c: &mut PgConnection,
    k: &NewKey,
    a: &AuditRecord,
    service: Option<(&str, &str)>,
    reason: Option<&str>,
) -> Result<bool, StoreError> {
    let job = [Deposit::new(k.clone(), a, service, reason)?];
    let written = Deposits::run(&job, c).await.map_err(db)?;
    Ok(written == [true])
}

/// The key a holder token that names its key opens: found by the id and checked against the
/// token's hash.
pub async fn key_by_holder(
    c: &mut PgConnection,
    key_id: &str,
    holder_hash: &[u8],
) -> Result<Option<KeyRecord>, StoreError> {
    let q = format!("SELECT {RECORD_COLUMNS} FROM keys WHERE id = $1 AND holder_hash = $2");
    let row = sqlx::query(&q)
        .bind(key_id)
        .bind(holder_hash)
        .fetch_optional(c)
        .await
        .map_err(db)?;
    row.as_ref().map(read_record).transpose()
}

/// The key a holder token that names no key opens (made before tokens named theirs): found by
/// the token's hash among the keys made before migration 10, through their partial index
/// (`keys_holder_legacy`). Inside the caller's transaction, with sequential scans priced out
/// (`sweep::NO_SEQ_SCANS`): anyone can send a token that names no key, and a generic plan made
/// while `keys` was small would otherwise read the whole table for each.
pub async fn key_by_legacy_holder(
    c: &mut PgConnection,
    holder_hash: &[u8],
) -> Result<Option<KeyRecord>, StoreError> {
    sqlx::query(NO_SEQ_SCANS)
        .execute(&mut *c)
        .await
        .map_err(db)?;
    let row = sqlx::query(&LEGACY_HOLDER_SQL)
        .bind(holder_hash)
        .fetch_optional(c)
        .await
        .map_err(db)?;
    row.as_ref().map(read_record).transpose()
}

/// See [`key_by_legacy_holder`].
static LEGACY_HOLDER_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {RECORD_COLUMNS} FROM keys WHERE holder_hash = $1 AND legacy_holder")
});

/// Locks and loads a key that has not ended, with its code hash (`lifecycle` decides whether it
/// is live at the operation's time).
async fn unended_key(
    c: &mut PgConnection,
    key_id: &str,
) -> Result<Option<(KeyRecord, Vec<u8>)>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS}, code_hash FROM keys WHERE id = $1 AND {LIVE_SQL} FOR UPDATE"
    ))
    .bind(key_id)
    .fetch_optional(c)
    .await
    .map_err(db)?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((read_record(&row)?, row.try_get(12).map_err(db)?)))
}

pub async fn set_expiry(
    c: &mut PgConnection,
    key_id: &str,
    expires_at: Timestamp,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let rec = unended_key(c, key_id).await?.map(|(rec, _)| rec);
    match lifecycle::plan_set_expiry(rec.as_ref(), expires_at, a) {
        Some(plan) => apply(c, &plan).await.map(|_| true),
        None => Ok(false),
    }
}

pub async fn revoke(
    c: &mut PgConnection,
    key_id: &str,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let rec = unended_key(c, key_id).await?.map(|(rec, _)| rec);
    match lifecycle::plan_revoke(rec.as_ref(), a) {
        Some(plan) => apply(c, &plan).await.map(|_| true),
        None => Ok(false),
    }
}

pub async fn recode(
    c: &mut PgConnection,
    key_id: &str,
    new_code_hash: &[u8],
    per_hour: u32,
    a: &AuditRecord,
) -> Result<RecodeOutcome, StoreError> {
    let Some((rec, old_code_hash)) = unended_key(c, key_id).await? else {
        return Ok(RecodeOutcome::NotLive);
    };
    let retry = recodes_spent(c, key_id, per_hour, a.at).await?;
    let (plan, outcome) =
        lifecycle::plan_recode(Some(&rec), old_code_hash, new_code_hash, retry, a);
    match apply(c, &plan).await? {
        Applied::Done => Ok(outcome),
        Applied::CodeTaken => Ok(RecodeOutcome::CodeTaken),
    }
}

/// Seconds until the key may have a new code, when it had `per_hour` within the last hour
/// (counted from its `code.reissued` events, which live as long as the key's record). The
/// caller holds the key row's lock, so replicas count the same events.
async fn recodes_spent(
    c: &mut PgConnection,
    key_id: &str,
    per_hour: u32,
    now: Timestamp,
) -> Result<Option<u64>, StoreError> {
    let recent: Vec<i64> = sqlx::query_scalar(
        "SELECT at FROM events WHERE key_id = $1 AND type = 'code.reissued'
         ORDER BY seq DESC LIMIT $2",
    )
    .bind(key_id)
    .bind(i64::from(per_hour))
    .fetch_all(c)
    .await
    .map_err(db)?;
    Ok(limits::recode_retry_after(&recent, per_hour, now))
}

/// Against a real server, when `KEYMASTER_TEST_DATABASE_URL` names one (a maintenance URL, as
/// for the store contract; a database is made for the test and dropped); without it they pass.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::test_db::{self, drop_db};
    use crate::store::postgres::PostgresStore;

    async fn store() -> Option<(PostgresStore, String, String)> {
        test_db::store("km_batch_").await
    }

    fn deposit(code: &str, at: Timestamp) -> Deposit {
        test_db::deposit(code, at, 1)
    }

    async fn count(c: &mut PgConnection, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(c).await.unwrap()
    }

    #[tokio::test]
    async fn one_statement_writes_each_free_code_once_and_refuses_the_rest() {
        let Some((store, url, name)) = store().await else {
            return;
        };
        let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
        let mut c = store.pool.acquire().await.unwrap();
        let first = [deposit("live", now), deposit("dead", now)];
        assert_eq!(Deposits::run(&first, &mut c).await.unwrap(), [true, true]);
        // `dead` ended: its row keeps the code (migration 9).
        sqlx::query("UPDATE keys SET state = 'retrieved', ended_at = 1 WHERE id = $1")
            .bind(&first[1].k.id)
            .execute(&mut *c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO tombstones VALUES ('fresh'::bytea, 'key_old', 0), ('other'::bytea, 'key_old', 0)")
            .execute(&mut *c)
            .await
            .unwrap();
        // Two deposits of one code in the same statement, one of a live code, one of an ended
        // key's code, two free ones (one of them in a tombstone): the first of the pair and the
        // free ones are written.
        let jobs = [
            deposit("x", now),
            deposit("fresh", now),
            deposit("x", now),
            deposit("live", now),
            deposit("dead", now),
            deposit("y", now),
        ];
        let written = Deposits::run(&jobs, &mut c).await.unwrap();
        assert_eq!(written, [true, true, false, false, false, true]);
        for (job, written) in jobs.iter().zip(written) {
            let of = |table: &str, column: &str| {
                format!(
                    "SELECT count(*) FROM {table} WHERE {column} = '{}'",
                    job.k.id
                )
            };
            let want = i64::from(written);
            assert_eq!(count(&mut c, &of("keys", "id")).await, want);
            assert_eq!(count(&mut c, &of("events", "key_id")).await, want);
            assert_eq!(count(&mut c, &of("audit", "key_id")).await, want);
        }
        let tombstones = "SELECT count(*) FROM tombstones WHERE code_hash = 'fresh'::bytea";
        assert_eq!(count(&mut c, tombstones).await, 0);
        let other = "SELECT count(*) FROM tombstones WHERE code_hash = 'other'::bytea";
        assert_eq!(count(&mut c, other).await, 1);
        drop(c);
        drop_db(store, &url, &name).await;
    }

    /// A key made before migration 10 is found by the hash of its token alone (an old token
    /// names no key), through the partial index; a key made after only by its id and hash, and
    /// it adds no entry to that index. The look-up by hash reaches `keys` by that index in its
    /// generic plan however small the table was when planned.
    #[tokio::test]
    async fn old_holder_tokens_still_open_their_key_after_the_holder_index_is_gone() {
        let insert = |id: &str, holder: &str, code: &str| {
            format!(
                "INSERT INTO keys (id, tenant_id, holder_hash, code_hash, code_format, kind,
                     algorithm, proven, policy, state, created_at, expires_at, max_retrievals)
                 VALUES ('{id}', 'ten_1', '{holder}'::bytea, '{code}'::bytea, 'digits', 'secret',
                     'secret', false, '{{\"max_retrievals\":1}}', 'active', 0, 9999999999999, 1);"
            )
        };
        let setup = insert("key_old", "old", "c1");
        let Some((store, url, name)) = test_db::store_after("km_holder_", 9, &setup).await else {
            return;
        };
        let mut c = store.pool.acquire().await.unwrap();
        sqlx::raw_sql(&insert("key_new", "new", "c2"))
            .execute(&mut *c)
            .await
            .unwrap();

        let mut found = async |id: Option<&str>, hash: &[u8]| {
            let found = match id {
                Some(id) => key_by_holder(&mut c, id, hash).await,
                None => {
                    sqlx::raw_sql("BEGIN").execute(&mut *c).await.unwrap();
                    let found = key_by_legacy_holder(&mut c, hash).await;
                    sqlx::raw_sql("COMMIT").execute(&mut *c).await.unwrap();
                    found
                }
            };
            found.unwrap().map(|k| k.id)
        };
        assert_eq!(found(None, b"old").await.as_deref(), Some("key_old"));
        assert_eq!(
            found(Some("key_old"), b"old").await.as_deref(),
            Some("key_old")
        );
        assert_eq!(
            found(Some("key_new"), b"new").await.as_deref(),
            Some("key_new")
        );
        assert_eq!(
            found(None, b"new").await,
            None,
            "new keys are looked up by id"
        );
        assert_eq!(found(Some("key_new"), b"old").await, None);
        assert_eq!(found(Some("key_old"), b"new").await, None);

        let legacy = "SELECT count(*) FROM keys WHERE legacy_holder";
        assert_eq!(
            count(&mut c, legacy).await,
            1,
            "only the old key is in the index"
        );
        let unique = "SELECT count(*) FROM pg_indexes WHERE tablename = 'keys' AND indexdef LIKE '%(holder_hash)%'";
        assert_eq!(
            count(&mut c, unique).await,
            1,
            "only the partial index is left"
        );
        drop(c);
        // Planned as the look-up plans it, on a table of two rows.
        let plan = test_db::generic_plan_after(&store, NO_SEQ_SCANS, &LEGACY_HOLDER_SQL, 1).await;
        assert!(plan.contains("keys_holder_legacy"), "{plan}");
        let plan = test_db::generic_plan(&store, &LEGACY_HOLDER_SQL, 1).await;
        assert!(plan.contains("Seq Scan"), "without the setting: {plan}");
        drop_db(store, &url, &name).await;
    }
}
