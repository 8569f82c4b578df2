//! PostgreSQL: deposits (one statement each) and the holder's operations on one key (status,
//! expiry, revoke, re-code). Every holder's change to a live key first locks its row (`FOR
//! UPDATE`), so it serialises with the sweeper of every replica, and a retrieval whose guarded
//! write waits for that lock then finds the row changed and plans again (`apply_one`).

use std::sync::LazyLock;

use futures::future::BoxFuture;
use jiff::Timestamp;
use sqlx::{PgConnection, Row};

use super::apply::apply;
use super::cte::{self, AuditParams, EventParams};
use super::once::Statement;
use super::{db, ms};
use crate::store::columns::format_name;
use crate::store::events::{new_event, EventType, KeyRef};
use crate::store::lifecycle::{self, read_record, Applied, LIVE_SQL, RECORD_COLUMNS};
use crate::store::limits;
use crate::store::{AuditRecord, KeyRecord, NewKey, RecodeOutcome, StoreError};

/// A deposit as one statement (autocommit on the hot path, [`Deposit::run`]): the key, its
/// `key.deposited` event and the event's deliveries, the tombstone of the same code removed
/// (a new live code supersedes it), the audit row. `ON CONFLICT DO NOTHING`: a code that is
/// already live (or any other unique value taken) writes nothing and answers `false`, and the
/// caller makes another code.
static DEPOSIT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH k AS (
           INSERT INTO keys (id, tenant_id, holder_hash, code_hash, label, kind, algorithm, spki,
               secret_sealed, fingerprint, ssh_fingerprint, jwk_thumbprint, proven, policy,
               password_hash, notify, state, created_at, expires_at, max_retrievals, code_format,
               origin_network, sas_commitment)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
               'active', $17, $18, $19, $20, $21, $22)
           ON CONFLICT DO NOTHING
           RETURNING id, tenant_id, notify
         ), tb AS (
           DELETE FROM tombstones WHERE code_hash = $4 AND EXISTS (SELECT 1 FROM k)
         ), {}, {}
         SELECT count(*) FROM k",
        cte::events_ctes(17, 23),
        cte::audit_cte(27, "EXISTS (SELECT 1 FROM k)"),
    )
});

/// A deposit, ready to run (again, if PostgreSQL rolled it back: its ids are fixed here).
pub struct Deposit {
    k: NewKey,
    policy: String,
    notify: Option<String>,
    events: EventParams,
    audit: AuditParams,
}

impl Deposit {
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
        let mut events = EventParams::default();
        events.push(&new_event(
            EventType::Deposited,
            &key,
            service,
            reason,
            k.created_at,
        ))?;
        let policy = serde_json::to_string(&k.policy).map_err(json)?;
        let notify = k.notify.as_ref().map(serde_json::to_string);
        Ok(Deposit {
            policy,
            notify: notify.transpose().map_err(json)?,
            events,
            audit: AuditParams::row(a),
            k,
        })
    }

    /// Runs the one statement; `false`: a unique value is taken, nothing was written.
    pub async fn run(&self, c: &mut PgConnection) -> Result<bool, sqlx::Error> {
        let k = &self.k;
        let q = sqlx::query(&DEPOSIT_SQL)
            .bind(&k.id)
            .bind(&k.tenant_id)
            .bind(&k.holder_hash)
            .bind(&k.code_hash)
            .bind(&k.label)
            .bind(k.kind)
            .bind(&k.algorithm)
            .bind(&k.spki)
            .bind(&k.secret_sealed)
            .bind(&k.fingerprint)
            // Not stored, as in every backend: a retrieval derives both from the key
            // (`PublicForms`), and the holder's view shows only `fingerprint`.
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(k.proven)
            .bind(&self.policy)
            .bind(&k.password_hash)
            .bind(&self.notify)
            .bind(ms(k.created_at))
            .bind(ms(k.expires_at))
            .bind(i64::from(k.policy.max_retrievals))
            .bind(format_name(k.code_format))
            .bind(k.origin_network.map(|n| n.to_string()));
        let q = self.audit.bind(self.events.bind(q.bind(&k.sas_commitment)));
        let written: i64 = q.fetch_one(c).await?.try_get(0)?;
        Ok(written == 1)
    }
}

impl Statement for Deposit {
    type Out = bool;

    fn run<'c>(&'c self, c: &'c mut PgConnection) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        Box::pin(Deposit::run(self, c))
    }
}

/// [`Deposit`] inside the caller's transaction (an enrolment request's answer).
pub async fn deposit_with_event(
    c: &mut PgConnection,
    k: &NewKey,
    a: &AuditRecord,
    service: Option<(&str, &str)>,
    reason: Option<&str>,
) -> Result<bool, StoreError> {
    Deposit::new(k.clone(), a, service, reason)?
        .run(c)
        .await
        .map_err(db)
}

/// The key a holder token opens. PostgreSQL keeps its unique index of holder hashes, so the
/// hash finds the key; the id the token names, when it names one, must match too.
pub async fn key_by_holder(
    c: &mut PgConnection,
    key_id: Option<&str>,
    holder_hash: &[u8],
) -> Result<Option<KeyRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM keys WHERE holder_hash = $1 AND ($2::text IS NULL OR id = $2)"
    ))
    .bind(holder_hash)
    .bind(key_id)
    .fetch_optional(c)
    .await
    .map_err(db)?;
    row.as_ref().map(read_record).transpose()
}

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
