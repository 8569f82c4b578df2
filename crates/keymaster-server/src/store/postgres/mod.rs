//! The PostgreSQL backend: sqlx (runtime API, no compile-time checked queries), a pool with an
//! acquire timeout so that no request hangs while the database is down, READ COMMITTED
//! transactions with row locks.
//!
//! Meant for several replicas on one database: a deposit is one statement (shared with the
//! deposits that wait at the same moment, `batch`) and a retrieval one read and one
//! conditional write (`retrieve`, `apply_one`, run by `once`; the read shared with the
//! retrievals' reads that wait at the same moment, `reads`, and the write likewise when it
//! charges no failure budget, `guarded`), which change the
//! key row only if it still holds what was read and count a failure only while the budget has
//! room, so a single-use code is handed out once and budgets are exact across processes
//! without a lock held across round trips; the sweeper takes its batches with
//! `FOR UPDATE SKIP LOCKED`, so each expiry is reported once however many replicas sweep;
//! migrations run under an advisory lock and are recorded in `schema_migrations`.
//!
//! The SQL of each subject lives in its own file (`admin`, `keys`, `retrieve`, `sweep`,
//! `rows`), as plain functions over a `&mut PgConnection` that is inside a transaction (or, for
//! the one-statement paths, in autocommit); this file only opens transactions and commits
//! them. It behaves exactly like the SQLite backend.

mod admin;
mod apply;
mod apply_one;
mod batch;
pub(crate) mod connect;
mod credentials;
mod cte;
mod guarded;
mod handoff;
mod keys;
mod notify;
mod once;
mod outbox;
mod reads;
mod requests;
mod retrieve;
mod rotation;
mod rows;
mod sweep;
#[cfg(test)]
mod test_db;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use keymaster_core::wire::AuditEntry;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::PgConnection;

use super::handoff::{DisputeOutcome, RevealOutcome, SasNonceBytes, SasRequestOutcome};
use super::outbox::{
    AttemptResult, ClaimRequest, ClaimedDelivery, DeliveryRecord, EndpointBacklog, OutboxStats,
};
use super::requests::{AnswerOutcome, NewRequest, RequestLookup, RequestRecord};
use super::rotation::{Resealed, SealedBlob, SealedPlace};
use super::{
    AppKeyAuth, AuditRecord, CommitSignal, KeyRecord, NewAppKey, NewKey, NewService, NewTenant,
    RecodeOutcome, RetrieveCommand, RetrieveOutcome, ServiceAuth, Store, StoreError, StoredEvent,
    SweepReport,
};
use crate::crypto::KEY_ID_LEN;

/// The migrations, in order; `schema_migrations` records which versions were applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../../../migrations/postgres/0001_initial.sql"),
    include_str!("../../../../../migrations/postgres/0002_deliveries.sql"),
    include_str!("../../../../../migrations/postgres/0003_confined_services.sql"),
    include_str!("../../../../../migrations/postgres/0004_audit_coalesced.sql"),
    include_str!("../../../../../migrations/postgres/0005_verified_handoff.sql"),
    include_str!("../../../../../migrations/postgres/0006_delivery_endpoints.sql"),
    include_str!("../../../../../migrations/postgres/0007_requests.sql"),
    include_str!("../../../../../migrations/postgres/0008_partial_unique_keys.sql"),
    include_str!("../../../../../migrations/postgres/0009_dead_codes_stay_in_keys.sql"),
    include_str!("../../../../../migrations/postgres/0010_holder_hash_unindexed.sql"),
    include_str!("../../../../../migrations/postgres/0011_events_seq_unindexed.sql"),
];

/// The advisory lock key that serialises migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x6b65_796d_6173_7472; // "keymastr"

/// How long a request waits for a pooled connection before the store reports `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Most connections one replica holds.
const MAX_CONNECTIONS: u32 = 16;

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Which host the pool uses, searched for again when it is in doubt (`connect`).
    primary: Arc<connect::Primary>,
    /// Told after every commit of events, this replica's and (through `notify`) the others'.
    commits: Arc<CommitSignal>,
    /// Told after this replica's own commits of events: wakes the sender of `notify`.
    local: Arc<tokio::sync::watch::Sender<u64>>,
    /// Deposits, run in batches of those that wait at once (`batch`).
    deposits: Arc<batch::Batcher<keys::Deposits>>,
    /// Retrievals' reads, likewise (`reads`).
    reads: Arc<batch::Batcher<reads::Reads>>,
    /// Retrievals' guarded writes that charge no failure budget, likewise (`guarded`).
    retrievals: Arc<batch::Batcher<guarded::Guardeds>>,
    /// App keys and services authenticated lately (`credentials`).
    kept: Arc<credentials::Credentials>,
}

impl PostgresStore {
    /// Connects to the first host of `url` that qualifies (libpq's multi-host form and
    /// `target_session_attrs`, see `connect`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let mut targets = connect::parse(url).map_err(|e| StoreError::Db(e.to_string()))?;
        for host in &mut targets.hosts {
            // READ COMMITTED with row locks is what the transactions are written for, whatever
            // the server's `default_transaction_isolation` says.
            host.options = host
                .options
                .clone()
                .options([("default_transaction_isolation", r"read\ committed")]);
        }
        let (pool, primary) = connect::open(
            targets,
            PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT),
            // The commit listener holds one connection and the notifier borrows one.
            (MAX_CONNECTIONS - 2) as usize,
        )
        .await?;
        let (local, local_rx) = tokio::sync::watch::channel(0u64);
        let primary = Arc::new(primary);
        let deposits = batch::Batcher::start(
            keys::Deposits,
            pool.clone(),
            primary.clone(),
            batch::DEPOSIT_RUNNERS,
        );
        let reads = batch::Batcher::start(
            reads::Reads,
            pool.clone(),
            primary.clone(),
            batch::READ_RUNNERS,
        );
        let retrievals = batch::Batcher::start(
            guarded::Guardeds,
            pool.clone(),
            primary.clone(),
            batch::RETRIEVAL_RUNNERS,
        );
        let store = PostgresStore {
            pool,
            primary,
            deposits: Arc::new(deposits),
            reads: Arc::new(reads),
            retrievals: Arc::new(retrievals),
            commits: Arc::default(),
            local: Arc::new(local),
            kept: Arc::default(),
        };
        store.migrate().await?;
        notify::start(
            store.pool.clone(),
            crate::crypto::new_id("replica_"),
            local_rx,
            &store.commits,
            store.kept.clone(),
        );
        Ok(store)
    }

    /// Tells the commit's waiters, here and on the other replicas, when `done` (an operation
    /// that writes events) succeeded.
    fn signal<T>(&self, done: Result<T, StoreError>) -> Result<T, StoreError> {
        if done.is_ok() {
            self.commits.committed();
            self.local.send_modify(|n| *n = n.wrapping_add(1));
        }
        done
    }

    /// Applies the migrations not yet recorded, all in one transaction under an advisory lock,
    /// so that replicas starting at once apply each exactly once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let applied = usize::try_from(applied.unwrap_or(0))
            .map_err(|e| StoreError::Corrupt(format!("schema_migrations: {e}")))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::Db(format!("migration {version} failed: {e}")))?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Runs `f` inside one transaction (READ COMMITTED) and commits it if `f` succeeded;
    /// tried again, with a clone of `f`, only where nothing can have been committed
    /// (`connect::run::transaction`).
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'c> FnOnce(
                &'c mut PgConnection,
            ) -> futures::future::BoxFuture<'c, Result<T, StoreError>>
            + Clone
            + Send,
    {
        connect::run::transaction(&self.pool, &self.primary, f).await
    }

    /// Where the one-statement hot paths run (`once`).
    fn hot(&self) -> once::Hot<'_> {
        once::Hot {
            pool: &self.pool,
            primary: &self.primary,
        }
    }

    /// Runs a read on a pooled connection, outside any explicit transaction; tried again
    /// when the database is unavailable (`connect::run::read`). `f` must only read.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'c> FnOnce(
                &'c mut PgConnection,
            ) -> futures::future::BoxFuture<'c, Result<T, StoreError>>
            + Clone
            + Send,
    {
        connect::run::read(&self.pool, &self.primary, f).await
    }
}

/// Maps a sqlx error into the store's error: what the database cannot serve now but may later
/// (a lost or missing connection, a server shutting down, a read-only standby, a serialization
/// failure or deadlock: `connect::Failure::unavailable`) is `Unavailable`, answered `503`; the
/// rest `Db`. Inside a transaction, `Unavailable` is also what tells `write` that retrying
/// may succeed.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    if connect::Failure::classify(&e).unavailable() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Db(e.to_string())
    }
}

/// True when `e` is a UNIQUE violation (SQLSTATE 23505).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.code().as_deref() == Some("23505"))
}

/// Unix milliseconds, as stored.
pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// Back from stored milliseconds.
pub(crate) fn ts(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
}

/// A stored count back into the domain's `u32`.
pub(crate) fn count(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|e| StoreError::Corrupt(format!("count {v}: {e}")))
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        connect::run::ping(&self.pool, &self.primary).await
    }

    async fn admin_token_hash(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| Box::pin(admin::admin_token_hash(c))).await
    }

    async fn init_admin_token_hash(&self, hash: Vec<u8>) -> Result<bool, StoreError> {
        self.write(move |c| Box::pin(async move { admin::init_admin_token_hash(c, &hash).await }))
            .await
    }

    async fn create_tenant(&self, t: NewTenant, audit: AuditRecord) -> Result<(), StoreError> {
        self.write(move |c| Box::pin(async move { admin::create_tenant(c, &t, &audit).await }))
            .await
    }

    async fn create_app_key(&self, k: NewAppKey, audit: AuditRecord) -> Result<bool, StoreError> {
        self.write(move |c| Box::pin(async move { admin::create_app_key(c, &k, &audit).await }))
            .await
    }

    async fn delete_app_key(&self, id: &str, audit: AuditRecord) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let deleted = self
            .write(move |c| Box::pin(async move { admin::delete_app_key(c, &id, &audit).await }))
            .await;
        // Whatever the answer: a lost one may have committed.
        self.kept.forget();
        deleted
    }

    async fn create_service(&self, s: NewService, audit: AuditRecord) -> Result<(), StoreError> {
        self.write(move |c| Box::pin(async move { admin::create_service(c, &s, &audit).await }))
            .await
    }

    async fn delete_service(&self, id: &str, audit: AuditRecord) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let deleted = self
            .write(move |c| Box::pin(async move { admin::delete_service(c, &id, &audit).await }))
            .await;
        // Whatever the answer: a lost one may have committed.
        self.kept.forget();
        deleted
    }

    async fn app_key_by_token(&self, hash: &[u8]) -> Result<Option<AppKeyAuth>, StoreError> {
        let now = Instant::now();
        if let Some(kept) = self.kept.app_key(hash, now) {
            return Ok(Some(kept));
        }
        let ticket = self.kept.ticket();
        let owned = hash.to_vec();
        let found = self
            .read(move |c| Box::pin(async move { admin::app_key_by_token(c, &owned).await }))
            .await?;
        if let Some(auth) = &found {
            self.kept.keep_app_key(ticket, hash, auth, now);
        }
        Ok(found)
    }

    async fn service_by_token(&self, hash: &[u8]) -> Result<Option<ServiceAuth>, StoreError> {
        let now = Instant::now();
        if let Some(kept) = self.kept.service(hash, now) {
            return Ok(Some(kept));
        }
        let ticket = self.kept.ticket();
        let owned = hash.to_vec();
        let found = self
            .read(move |c| Box::pin(async move { admin::service_by_token(c, &owned).await }))
            .await?;
        if let Some(auth) = &found {
            self.kept.keep_service(ticket, hash, auth, now);
        }
        Ok(found)
    }

    async fn missing_services(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |c| Box::pin(async move { admin::missing_services(c, &ids).await }))
            .await
    }

    async fn append_audit(&self, audit: AuditRecord) -> Result<(), StoreError> {
        self.write(move |c| Box::pin(async move { rows::insert_audit(c, &audit).await }))
            .await
    }

    async fn append_coalesced_audit(&self, audit: AuditRecord) -> Result<(), StoreError> {
        self.write(move |c| Box::pin(async move { rows::insert_coalesced_audit(c, &audit).await }))
            .await
    }

    async fn list_audit(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |c| Box::pin(admin::list_audit(c, limit, before)))
            .await
    }

    async fn deposit(&self, key: NewKey, audit: AuditRecord) -> Result<bool, StoreError> {
        // One statement in autocommit with the deposits that wait at the same moment
        // (`batch`, `keys::Deposits`), not a transaction.
        let deposit = keys::Deposit::new(key, &audit, None, None)?;
        let done = self.deposits.run(deposit).await;
        self.signal(done)
    }

    async fn retrieve(&self, cmd: RetrieveCommand) -> Result<RetrieveOutcome, StoreError> {
        let outcome =
            retrieve::retrieve(&self.hot(), &self.reads, &self.retrievals, Arc::new(cmd)).await;
        self.signal(outcome)
    }

    async fn refuse_retrieval(
        &self,
        service: &ServiceAuth,
        budget_per_minute: u32,
        audit: AuditRecord,
    ) -> Result<Option<u64>, StoreError> {
        retrieve::refuse(&self.hot(), service, budget_per_minute, &audit).await
    }

    async fn confirm(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let rid = retrieval_id.to_owned();
        let service = service.clone();
        let done = self
            .write(move |c| {
                Box::pin(async move { retrieve::confirm(c, &rid, &service, now).await })
            })
            .await;
        self.signal(done)
    }

    async fn request_sas(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
        nonce: [u8; 32],
        audit: AuditRecord,
    ) -> Result<SasRequestOutcome, StoreError> {
        let (rid, service) = (retrieval_id.to_owned(), service.clone());
        let done = self
            .write(move |c| {
                Box::pin(
                    async move { handoff::request_sas(c, &rid, &service, &nonce, &audit).await },
                )
            })
            .await;
        self.signal(done)
    }

    async fn reveal_sas(
        &self,
        key_id: &str,
        retrieval_id: &str,
        nonce: [u8; 32],
        audit: AuditRecord,
    ) -> Result<RevealOutcome, StoreError> {
        let (key_id, rid) = (key_id.to_owned(), retrieval_id.to_owned());
        let done = self
            .write(move |c| {
                Box::pin(async move { handoff::reveal_sas(c, &key_id, &rid, &nonce, &audit).await })
            })
            .await;
        self.signal(done)
    }

    async fn sas_nonces(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
    ) -> Result<Option<SasNonceBytes>, StoreError> {
        let (rid, service) = (retrieval_id.to_owned(), service.clone());
        self.read(move |c| Box::pin(async move { handoff::sas_nonces(c, &rid, &service).await }))
            .await
    }

    async fn dispute(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
        reason: &'static str,
        audit: AuditRecord,
    ) -> Result<DisputeOutcome, StoreError> {
        let (rid, service) = (retrieval_id.to_owned(), service.clone());
        let done = self
            .write(move |c| {
                Box::pin(async move { handoff::dispute(c, &rid, &service, reason, &audit).await })
            })
            .await;
        self.signal(done)
    }

    async fn awaiting_reveal(&self, key_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let key_id = key_id.to_owned();
        self.read(move |c| Box::pin(async move { handoff::awaiting_reveal(c, &key_id, now).await }))
            .await
    }

    async fn key_by_holder(
        &self,
        key_id: Option<&str>,
        holder_hash: &[u8],
    ) -> Result<Option<KeyRecord>, StoreError> {
        let h = holder_hash.to_vec();
        match key_id.map(str::to_owned) {
            Some(id) => {
                self.read(move |c| Box::pin(async move { keys::key_by_holder(c, &id, &h).await }))
                    .await
            }
            None => {
                self.write(move |c| {
                    Box::pin(async move { keys::key_by_legacy_holder(c, &h).await })
                })
                .await
            }
        }
    }

    async fn key_events(
        &self,
        key_id: &str,
        after_seq: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let key_id = key_id.to_owned();
        self.read(move |c| Box::pin(async move { rows::key_events(c, &key_id, after_seq).await }))
            .await
    }

    async fn event_seq(&self, key_id: &str, event_id: &str) -> Result<Option<i64>, StoreError> {
        let (key_id, event_id) = (key_id.to_owned(), event_id.to_owned());
        self.read(move |c| Box::pin(async move { rows::event_seq(c, &key_id, &event_id).await }))
            .await
    }

    async fn set_expiry(
        &self,
        key_id: &str,
        expires_at: Timestamp,
        audit: AuditRecord,
    ) -> Result<bool, StoreError> {
        let key_id = key_id.to_owned();
        self.write(move |c| {
            Box::pin(async move { keys::set_expiry(c, &key_id, expires_at, &audit).await })
        })
        .await
    }

    async fn revoke(&self, key_id: &str, audit: AuditRecord) -> Result<bool, StoreError> {
        let key_id = key_id.to_owned();
        let done = self
            .write(move |c| Box::pin(async move { keys::revoke(c, &key_id, &audit).await }))
            .await;
        self.signal(done)
    }

    async fn recode(
        &self,
        key_id: &str,
        new_code_hash: Vec<u8>,
        per_hour: u32,
        audit: AuditRecord,
    ) -> Result<RecodeOutcome, StoreError> {
        let key_id = key_id.to_owned();
        let done = self
            .write(move |c| {
                Box::pin(
                    async move { keys::recode(c, &key_id, &new_code_hash, per_hour, &audit).await },
                )
            })
            .await;
        self.signal(done)
    }

    async fn sweep(
        &self,
        now: Timestamp,
        retention: crate::store::retention::Retention,
    ) -> Result<SweepReport, StoreError> {
        let done = self
            .write(move |c| {
                Box::pin(async move {
                    let mut report = sweep::sweep(c, now, retention).await?;
                    let (expired, purged) = requests::sweep(c, now, retention.records).await?;
                    report.requests_expired = expired;
                    report.purged += purged;
                    report.more |= expired >= SweepReport::BATCH || purged >= SweepReport::BATCH;
                    Ok(report)
                })
            })
            .await;
        self.signal(done)
    }

    fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    async fn claim_deliveries(
        &self,
        req: ClaimRequest,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.write(move |c| Box::pin(async move { outbox::claim(c, &req).await }))
            .await
    }

    async fn finish_deliveries(
        &self,
        results: Vec<(i64, AttemptResult)>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(move |c| Box::pin(async move { outbox::finish(c, &results, now).await }))
            .await
    }

    async fn renew_leases(&self, ids: Vec<i64>, until: Timestamp) -> Result<(), StoreError> {
        self.write(move |c| Box::pin(async move { outbox::renew(c, &ids, until).await }))
            .await
    }

    async fn pause_endpoint(
        &self,
        endpoint: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |c| Box::pin(async move { outbox::pause(c, &endpoint, until, now).await }))
            .await
    }

    async fn endpoint_backlog(&self, limit: u32) -> Result<Vec<EndpointBacklog>, StoreError> {
        self.read(move |c| Box::pin(async move { outbox::backlog(c, limit).await }))
            .await
    }

    async fn rotate_webhook_secret(
        &self,
        tenant_id: &str,
        new_sealed: Vec<u8>,
        previous_until: Timestamp,
        audit: AuditRecord,
    ) -> Result<bool, StoreError> {
        let tenant_id = tenant_id.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                outbox::rotate(c, &tenant_id, &new_sealed, previous_until, &audit).await
            })
        })
        .await
    }

    async fn list_deliveries(
        &self,
        status: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let status = status.to_owned();
        self.read(move |c| Box::pin(async move { outbox::list(c, &status, limit).await }))
            .await
    }

    async fn outbox_stats(&self, now: Timestamp) -> Result<OutboxStats, StoreError> {
        self.read(move |c| Box::pin(async move { outbox::stats(c, now).await }))
            .await
    }

    async fn code_hash_in_use(&self, hashes: Vec<Vec<u8>>) -> Result<bool, StoreError> {
        self.read(move |c| Box::pin(async move { rotation::code_hash_in_use(c, &hashes).await }))
            .await
    }

    async fn sealed_not_under(
        &self,
        place: SealedPlace,
        current_key_id: [u8; KEY_ID_LEN],
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<SealedBlob>, StoreError> {
        self.read(move |c| {
            Box::pin(async move {
                rotation::sealed_not_under(c, place, current_key_id, after.as_deref(), limit).await
            })
        })
        .await
    }

    async fn replace_sealed(
        &self,
        place: SealedPlace,
        changes: Vec<Resealed>,
    ) -> Result<u64, StoreError> {
        self.write(move |c| {
            Box::pin(async move { rotation::replace_sealed(c, place, &changes).await })
        })
        .await
    }

    async fn count_sealed_not_under(
        &self,
        current_key_id: [u8; KEY_ID_LEN],
    ) -> Result<u64, StoreError> {
        self.read(move |c| {
            Box::pin(async move { rotation::count_sealed_not_under(c, current_key_id).await })
        })
        .await
    }

    async fn create_request(&self, r: NewRequest, audit: AuditRecord) -> Result<bool, StoreError> {
        self.write(move |c| Box::pin(async move { requests::create(c, &r, &audit).await }))
            .await
    }

    async fn lookup_request(
        &self,
        code_hashes: Vec<Vec<u8>>,
        app: &AppKeyAuth,
        now: Timestamp,
        budget_per_minute: u32,
        fulfilled_is_failure: bool,
        audit: AuditRecord,
    ) -> Result<RequestLookup, StoreError> {
        let app = app.clone();
        self.write(move |c| {
            Box::pin(async move {
                requests::lookup(
                    c,
                    &code_hashes,
                    &app,
                    now,
                    budget_per_minute,
                    fulfilled_is_failure,
                    &audit,
                )
                .await
            })
        })
        .await
    }

    async fn answer_request(
        &self,
        request_id: &str,
        service: (String, String),
        key: NewKey,
        audit: AuditRecord,
    ) -> Result<AnswerOutcome, StoreError> {
        let request_id = request_id.to_owned();
        let done = self
            .write(move |c| {
                Box::pin(async move {
                    requests::answer(c, &request_id, (&service.0, &service.1), &key, &audit).await
                })
            })
            .await;
        self.signal(done)
    }

    async fn request_for_service(
        &self,
        id: &str,
        service_id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let (id, service_id) = (id.to_owned(), service_id.to_owned());
        self.read(move |c| {
            Box::pin(async move { requests::for_service(c, &id, &service_id).await })
        })
        .await
    }

    async fn request_read(&self, id: &str, retrieval_id: &str) -> Result<(), StoreError> {
        let (id, retrieval_id) = (id.to_owned(), retrieval_id.to_owned());
        self.write(move |c| {
            Box::pin(async move { requests::mark_read(c, &id, &retrieval_id).await })
        })
        .await
    }
}
