//! The SQLite backend: rusqlite (bundled), WAL, one writer thread with group commit
//! ([`writer`]), and a small pool of read-only connections for reads.
//!
//! The SQL of each subject lives in its own file (`admin`, `keys`, `retrieve`, `sweep`), as
//! plain functions over a `&Connection`, so that every writing operation is one closure run by
//! the writer inside one transaction.

mod admin;
mod keys;
mod outbox;
mod retrieve;
mod rows;
mod sweep;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use keymaster_core::wire::AuditEntry;
use rusqlite::{Connection, OpenFlags};

use self::writer::{db, Writer};
use super::outbox::{AttemptResult, ClaimedDelivery, DeliveryInfo, OutboxStats};
use super::{
    AppKeyAuth, AuditRecord, KeyRecord, NewAppKey, NewKey, NewService, NewTenant, RecodeOutcome,
    RetrieveCommand, RetrieveOutcome, ServiceAuth, Store, StoreError, StoredEvent, SweepReport,
};

/// The migrations, in order; `PRAGMA user_version` records how many were applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../../../../migrations/sqlite/0002_deliveries.sql"),
];

/// Read-only connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    /// `synchronous_full` chooses `synchronous=FULL` (every commit durable) over `NORMAL`.
    pub fn open(path: &Path, synchronous_full: bool) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(db)?;
        let sync = if synchronous_full { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000;
             PRAGMA foreign_keys=ON; PRAGMA cache_size=-16000; PRAGMA temp_store=MEMORY;"
        ))
        .map_err(db)?;
        migrate(&conn)?;
        Ok(SqliteStore {
            writer: Writer::start(conn)?,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_owned(),
        })
    }

    fn open_reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        conn.execute_batch("PRAGMA busy_timeout=5000; PRAGMA cache_size=-8000;")
            .map_err(db)?;
        Ok(conn)
    }

    /// Runs a read on a pooled read-only connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = this.readers.lock().ok().and_then(|mut p| p.pop());
            let conn = match pooled {
                Some(c) => c,
                None => this.open_reader()?,
            };
            let out = f(&conn);
            if let Ok(mut pool) = this.readers.lock() {
                if pool.len() < MAX_IDLE_READERS {
                    pool.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| StoreError::Db(format!("reader task failed: {e}")))?
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let applied: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}\n; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::Db(format!("migration {} failed: {e}", i + 1))
        })?;
    }
    Ok(())
}

/// Unix milliseconds, as stored.
pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// Back from stored milliseconds.
pub(crate) fn ts(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })
        .await
    }

    async fn admin_token_hash(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(admin::admin_token_hash).await
    }

    async fn init_admin_token_hash(&self, hash: Vec<u8>) -> Result<bool, StoreError> {
        self.writer
            .write(move |c| admin::init_admin_token_hash(c, &hash))
            .await
    }

    async fn create_tenant(&self, t: NewTenant, audit: AuditRecord) -> Result<(), StoreError> {
        self.writer
            .write(move |c| admin::create_tenant(c, &t, &audit))
            .await
    }

    async fn create_app_key(&self, k: NewAppKey, audit: AuditRecord) -> Result<bool, StoreError> {
        self.writer
            .write(move |c| admin::create_app_key(c, &k, &audit))
            .await
    }

    async fn delete_app_key(&self, id: &str, audit: AuditRecord) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |c| admin::delete_app_key(c, &id, &audit))
            .await
    }

    async fn create_service(&self, s: NewService, audit: AuditRecord) -> Result<(), StoreError> {
        self.writer
            .write(move |c| admin::create_service(c, &s, &audit))
            .await
    }

    async fn delete_service(&self, id: &str, audit: AuditRecord) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |c| admin::delete_service(c, &id, &audit))
            .await
    }

    async fn app_key_by_token(&self, hash: &[u8]) -> Result<Option<AppKeyAuth>, StoreError> {
        let hash = hash.to_vec();
        self.read(move |c| admin::app_key_by_token(c, &hash)).await
    }

    async fn service_by_token(&self, hash: &[u8]) -> Result<Option<ServiceAuth>, StoreError> {
        let hash = hash.to_vec();
        self.read(move |c| admin::service_by_token(c, &hash)).await
    }

    async fn missing_services(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |c| admin::missing_services(c, &ids)).await
    }

    async fn append_audit(&self, audit: AuditRecord) -> Result<(), StoreError> {
        self.writer
            .write(move |c| rows::insert_audit(c, &audit))
            .await
    }

    async fn list_audit(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |c| admin::list_audit(c, limit, before))
            .await
    }

    async fn deposit(&self, key: NewKey, audit: AuditRecord) -> Result<bool, StoreError> {
        self.writer
            .write(move |c| keys::deposit(c, &key, &audit))
            .await
    }

    async fn password_hash_for_code(
        &self,
        code_hash: &[u8],
    ) -> Result<Option<Option<String>>, StoreError> {
        let code_hash = code_hash.to_vec();
        self.read(move |c| keys::password_hash_for_code(c, &code_hash))
            .await
    }

    async fn retrieve(&self, cmd: RetrieveCommand) -> Result<RetrieveOutcome, StoreError> {
        self.writer
            .write(move |c| retrieve::retrieve(c, &cmd))
            .await
    }

    async fn refuse_retrieval(
        &self,
        service: &ServiceAuth,
        budget_per_minute: u32,
        audit: AuditRecord,
    ) -> Result<Option<u64>, StoreError> {
        let service = service.clone();
        self.writer
            .write(move |c| retrieve::refuse(c, &service, budget_per_minute, &audit))
            .await
    }

    async fn retrieval_budget_spent(
        &self,
        service: &ServiceAuth,
        now: Timestamp,
        budget_per_minute: u32,
    ) -> Result<Option<u64>, StoreError> {
        let subject = format!("service:{}", service.id);
        self.read(move |c| rows::budget_spent(c, &subject, now, budget_per_minute))
            .await
    }

    async fn confirm(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let rid = retrieval_id.to_owned();
        let service = service.clone();
        self.writer
            .write(move |c| retrieve::confirm(c, &rid, &service, now))
            .await
    }

    async fn key_by_holder(&self, holder_hash: &[u8]) -> Result<Option<KeyRecord>, StoreError> {
        let h = holder_hash.to_vec();
        self.read(move |c| keys::key_by_holder(c, &h)).await
    }

    async fn key_events(
        &self,
        key_id: &str,
        after_seq: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let key_id = key_id.to_owned();
        self.read(move |c| rows::key_events(c, &key_id, after_seq))
            .await
    }

    async fn event_seq(&self, key_id: &str, event_id: &str) -> Result<Option<i64>, StoreError> {
        let (key_id, event_id) = (key_id.to_owned(), event_id.to_owned());
        self.read(move |c| rows::event_seq(c, &key_id, &event_id))
            .await
    }

    async fn set_expiry(
        &self,
        key_id: &str,
        expires_at: Timestamp,
        audit: AuditRecord,
    ) -> Result<bool, StoreError> {
        let key_id = key_id.to_owned();
        self.writer
            .write(move |c| keys::set_expiry(c, &key_id, expires_at, &audit))
            .await
    }

    async fn revoke(&self, key_id: &str, audit: AuditRecord) -> Result<bool, StoreError> {
        let key_id = key_id.to_owned();
        self.writer
            .write(move |c| keys::revoke(c, &key_id, &audit))
            .await
    }

    async fn recode(
        &self,
        key_id: &str,
        new_code_hash: Vec<u8>,
        audit: AuditRecord,
    ) -> Result<RecodeOutcome, StoreError> {
        let key_id = key_id.to_owned();
        self.writer
            .write(move |c| keys::recode(c, &key_id, &new_code_hash, &audit))
            .await
    }

    async fn sweep(
        &self,
        now: Timestamp,
        retention: std::time::Duration,
    ) -> Result<SweepReport, StoreError> {
        self.writer
            .write(move |c| sweep::sweep(c, now, retention))
            .await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.writer
            .write(move |c| outbox::claim(c, now, lease, limit))
            .await
    }

    async fn finish_delivery(
        &self,
        id: i64,
        result: AttemptResult,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.writer
            .write(move |c| outbox::finish(c, id, &result, now))
            .await
    }

    async fn tenant_webhook_secrets(
        &self,
        tenant_id: &str,
        now: Timestamp,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| outbox::tenant_secrets(c, &tenant_id, now))
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
        self.writer
            .write(move |c| outbox::rotate(c, &tenant_id, &new_sealed, previous_until, &audit))
            .await
    }

    async fn list_deliveries(
        &self,
        status: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryInfo>, StoreError> {
        let status = status.to_owned();
        self.read(move |c| outbox::list(c, &status, limit)).await
    }

    async fn outbox_stats(&self, now: Timestamp) -> Result<OutboxStats, StoreError> {
        self.read(move |c| outbox::stats(c, now)).await
    }
}
