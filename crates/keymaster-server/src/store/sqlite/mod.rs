//! The SQLite backend: rusqlite (bundled), WAL, one writer thread with group commit
//! ([`writer`]), and a small pool of read-only connections for reads.
//!
//! The SQL of each subject lives in its own file (`admin`, `keys`, `retrieve`, `sweep`), as
//! plain functions over a `&Connection` (the writer's own, `tx::Tx`, for those that write), so
//! that every writing operation is one closure run by the writer inside one transaction.

mod admin;
mod apply;
mod auth_cache;
pub mod backup;
mod checkpointer;
mod handoff;
mod job;
mod keys;
mod outbox;
mod requests;
mod retrieve;
mod rotation;
mod rows;
mod sweep;
mod timing;
mod tx;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use keymaster_core::wire::AuditEntry;
use rusqlite::{Connection, OpenFlags};

use self::auth_cache::AuthCache;
use self::writer::{db, Durability, Writer};
use super::handoff::{DisputeOutcome, RevealOutcome, SasNonceBytes, SasRequestOutcome};
use super::outbox::{
    AttemptResult, ClaimRequest, ClaimedDelivery, DeliveryRecord, EndpointBacklog, OutboxStats,
};
use super::requests::{AnswerOutcome, NewRequest, RequestLookup, RequestRecord, ANSWER_REASON};
use super::rotation::{Resealed, SealedBlob, SealedPlace};
use super::{
    AppKeyAuth, AuditRecord, CommitSignal, KeyRecord, NewAppKey, NewKey, NewService, NewTenant,
    RecodeOutcome, RetrieveCommand, RetrieveOutcome, ServiceAuth, Store, StoreError, StoredEvent,
    SweepReport,
};
use crate::crypto::KEY_ID_LEN;

/// The migrations, in order; `PRAGMA user_version` records how many were applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../../../../migrations/sqlite/0002_deliveries.sql"),
    include_str!("../../../../../migrations/sqlite/0003_dead_codes_stay_in_keys.sql"),
    include_str!("../../../../../migrations/sqlite/0004_holder_hash_unindexed.sql"),
    include_str!("../../../../../migrations/sqlite/0005_confined_services.sql"),
    include_str!("../../../../../migrations/sqlite/0006_audit_coalesced.sql"),
    include_str!("../../../../../migrations/sqlite/0007_verified_handoff.sql"),
    include_str!("../../../../../migrations/sqlite/0008_delivery_endpoints.sql"),
    include_str!("../../../../../migrations/sqlite/0009_requests.sql"),
    include_str!("../../../../../migrations/sqlite/0010_events_without_autoincrement.sql"),
    include_str!("../../../../../migrations/sqlite/0011_audit_without_autoincrement.sql"),
];

/// Page size of a new database.
const PAGE_SIZE: u32 = 2048;

/// Read-only connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    auth: Arc<AuthCache>,
    /// Told after every commit that wrote events.
    commits: Arc<CommitSignal>,
    /// Held while the store is open: one process owns the database file.
    _owner: Arc<std::fs::File>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    /// `synchronous_full` chooses `synchronous=FULL` (every commit durable) over `NORMAL`.
    pub fn open(path: &Path, synchronous_full: bool) -> Result<SqliteStore, StoreError> {
        let owner = lock_owner(path)?;
        private_database(path)?;
        // The writer's connection goes through `keymaster_walbuf`, which writes each commit's
        // WAL frames with one `pwrite` and makes no `fdatasync` at commit: durability is that of
        // `synchronous=NORMAL`. With `synchronous_full` the writer adds the one sync that `FULL`
        // would make inside each `COMMIT` (of the WAL, before any caller is answered) on its
        // sync thread, so that the next batch runs meanwhile. See `writer`. Checkpoints are made
        // by the checkpointer's connection, not in `COMMIT`. The shim relies on the
        // `synchronous` and `checkpoint_fullfsync` settings it makes: never change them on this
        // connection (with `synchronous=NORMAL` a commit would be visible before its frames are
        // in the file), and this process must be the only writer (`lock_owner`).
        let conn = keymaster_walbuf::open(path).map_err(db)?;
        // Smaller pages for a new database: the key tables are looked up through random hashes,
        // so every change dirties a different leaf page of each index, and a commit writes each
        // dirty page whole into the WAL. 2 KiB pages halve what 4 KiB pages write, and still
        // hold three key rows (1 KiB pages would hold one). No effect on an existing database.
        conn.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE};"))
            .map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON; PRAGMA cache_size=-4000; PRAGMA temp_store=MEMORY;
             PRAGMA journal_size_limit=536870912;",
        )
        .map_err(db)?;
        migrate(&conn)?;
        // Deliveries claimed by the process that had the database before (killed, or stopped
        // mid-attempt) go out now rather than when their lease would have run out.
        let released = outbox::release_all(&conn)?;
        if released > 0 {
            tracing::info!(
                released,
                "released the deliveries claimed before the restart"
            );
        }
        let durability = if synchronous_full {
            // The migrations above committed without the per-commit sync: make them durable
            // with one sync of the WAL. (Not a checkpoint: after a crash the WAL can hold up to
            // twice `RESTART_WAL_FRAMES`, and copying it all would delay start-up by seconds;
            // the checkpointer copies it in the background.)
            let wal = wal_path(path);
            writer::sync_wal(&wal).map_err(StoreError::Db)?;
            Durability::SyncWal(wal)
        } else {
            Durability::Normal
        };
        // The checkpointer copies WAL pages into the database in the background and, once the
        // WAL is long, pauses the writer briefly so that the WAL starts over (see `writer`).
        // The writer's own checkpoint inside `COMMIT` (which stalled every caller for
        // 80–130 ms) is only a backstop, at twice that length. The WAL file keeps its
        // size (`journal_size_limit` is above it), so its blocks are rewritten, not allocated.
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint={};",
            2 * checkpointer::RESTART_WAL_FRAMES
        ))
        .map_err(db)?;
        let checkpointer = Connection::open(path).map_err(db)?;
        checkpointer
            .execute_batch(
                "PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; PRAGMA cache_size=-2000;",
            )
            .map_err(db)?;
        let writer = Writer::start(conn, durability)?;
        checkpointer::start(
            checkpointer,
            path.to_owned(),
            &writer,
            checkpointer::CHECKPOINT_EVERY,
            checkpointer::RESTART_WAL_FRAMES,
        )?;
        Ok(SqliteStore {
            writer,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_owned(),
            auth: Arc::new(AuthCache::default()),
            commits: Arc::default(),
            _owner: Arc::new(owner),
        })
    }

    /// Tells the commit's waiters when `done` (an operation that writes events) succeeded.
    fn signal<T>(&self, done: Result<T, StoreError>) -> Result<T, StoreError> {
        if done.is_ok() {
            self.commits.committed();
        }
        done
    }

    fn open_reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        // A small page cache: a WAL reader drops its whole cache whenever the database changed
        // since its last read, which under write load is every read; misses hit the OS cache.
        conn.execute_batch("PRAGMA busy_timeout=5000; PRAGMA cache_size=-1000;")
            .map_err(db)?;
        Ok(conn)
    }

    /// Runs `f` on a pooled read-only connection, on the calling thread.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
        }
        out
    }

    /// Runs a read on a pooled read-only connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.with_reader(f))
            .await
            .map_err(|e| StoreError::Db(format!("reader task failed: {e}")))?
    }

    /// Runs a point read (one row by a unique index: a few microseconds, no waiting on the
    /// writer in WAL mode) directly on the async thread: handing it to the blocking pool and
    /// back costs more than the read. Only for reads of that kind.
    fn read_point<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_reader(f)
    }
}

/// Takes the lock file `<database>.lock`: a second server on the same file would write behind
/// this one's back (its credential cache, `auth_cache`, would not see the changes), so it is
/// refused with a clear error instead. The lock goes with the process, even on `kill -9`.
fn lock_owner(db: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let file = crate::private_files::create(Path::new(&name), "SQLite lock file")
        .map_err(|e| StoreError::Db(format!("cannot open {}: {e}", Path::new(&name).display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Db(format!(
            "{} is in use by another keymaster process (one server per SQLite file; \
             use PostgreSQL for several)",
            db.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Db(format!(
            "cannot lock {}: {e}",
            Path::new(&name).display()
        ))),
    }
}

/// Makes the database file `0600` before SQLite opens it (creating it empty if new, which SQLite
/// takes as a new database), so that the `-wal` and `-shm` that SQLite creates get that mode too,
/// and tightens a `-wal` and `-shm` left by an earlier run. Runs while this process holds the
/// lock and before any connection to the database is open (see `private_files::restrict`).
fn private_database(db: &Path) -> Result<(), StoreError> {
    let failed = |what: &str, e: std::io::Error| {
        StoreError::Db(format!("cannot make the SQLite {what} private: {e}"))
    };
    drop(crate::private_files::create(db, "SQLite database").map_err(|e| failed("database", e))?);
    for (suffix, role) in [("-wal", "SQLite -wal file"), ("-shm", "SQLite -shm file")] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        crate::private_files::restrict(Path::new(&name), role).map_err(|e| failed(role, e))?;
    }
    Ok(())
}

/// SQLite's WAL file of the database at `db`: `keymaster.db` → `keymaster.db-wal`.
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
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

/// A database at `path` with only the first `version` migrations applied, as an older
/// keymaster left it; `migrate` then brings it up to date.
#[cfg(test)]
fn migrated_to(path: &Path, version: usize) -> Connection {
    let c = Connection::open(path).unwrap();
    for sql in &MIGRATIONS[..version] {
        c.execute_batch(sql).unwrap();
    }
    c.execute_batch(&format!("PRAGMA user_version = {version}"))
        .unwrap();
    c
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
        let deleted = self
            .writer
            .write(move |c| admin::delete_app_key(c, &id, &audit))
            .await;
        self.auth.invalidate();
        deleted
    }

    async fn create_service(&self, s: NewService, audit: AuditRecord) -> Result<(), StoreError> {
        self.writer
            .write(move |c| admin::create_service(c, &s, &audit))
            .await
    }

    async fn delete_service(&self, id: &str, audit: AuditRecord) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let deleted = self
            .writer
            .write(move |c| admin::delete_service(c, &id, &audit))
            .await;
        self.auth.invalidate();
        deleted
    }

    async fn app_key_by_token(&self, hash: &[u8]) -> Result<Option<AppKeyAuth>, StoreError> {
        self.auth.apps.get_or_read(hash, || {
            self.read_point(|c| admin::app_key_by_token(c, hash))
        })
    }

    async fn service_by_token(&self, hash: &[u8]) -> Result<Option<ServiceAuth>, StoreError> {
        self.auth.services.get_or_read(hash, || {
            self.read_point(|c| admin::service_by_token(c, hash))
        })
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

    async fn append_coalesced_audit(&self, audit: AuditRecord) -> Result<(), StoreError> {
        self.writer
            .write(move |c| rows::insert_coalesced_audit(c, &audit))
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
        let json = keys::DepositJson::new(&key)?;
        let done = self
            .writer
            .write(move |c| keys::deposit(c, &key, &json, &audit))
            .await;
        self.signal(done)
    }

    async fn retrieve(&self, cmd: RetrieveCommand) -> Result<RetrieveOutcome, StoreError> {
        let done = self
            .writer
            .write(move |c| retrieve::retrieve(c, &cmd))
            .await;
        self.signal(done)
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

    async fn confirm(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let rid = retrieval_id.to_owned();
        let service = service.clone();
        let done = self
            .writer
            .write(move |c| retrieve::confirm(c, &rid, &service, now))
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
            .writer
            .write(move |c| handoff::request_sas(c, &rid, &service, &nonce, &audit))
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
            .writer
            .write(move |c| handoff::reveal_sas(c, &key_id, &rid, &nonce, &audit))
            .await;
        self.signal(done)
    }

    async fn sas_nonces(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
    ) -> Result<Option<SasNonceBytes>, StoreError> {
        self.read_point(|c| handoff::sas_nonces(c, retrieval_id, service))
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
            .writer
            .write(move |c| handoff::dispute(c, &rid, &service, reason, &audit))
            .await;
        self.signal(done)
    }

    async fn awaiting_reveal(&self, key_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.read_point(|c| handoff::awaiting_reveal(c, key_id, now))
    }

    async fn key_by_holder(
        &self,
        key_id: Option<&str>,
        holder_hash: &[u8],
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.read_point(|c| keys::key_by_holder(c, key_id, holder_hash))
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
        let done = self
            .writer
            .write(move |c| keys::revoke(c, &key_id, &audit))
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
            .writer
            .write(move |c| keys::recode(c, &key_id, &new_code_hash, per_hour, &audit))
            .await;
        self.signal(done)
    }

    async fn sweep(
        &self,
        now: Timestamp,
        retention: crate::store::retention::Retention,
    ) -> Result<SweepReport, StoreError> {
        let done = self
            .writer
            .write(move |c| {
                let mut report = sweep::sweep(c, now, retention)?;
                let (expired, purged) = requests::sweep(c, now, retention.records)?;
                report.requests_expired = expired;
                report.purged += purged;
                report.more |= expired >= SweepReport::BATCH || purged >= SweepReport::BATCH;
                Ok(report)
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
        self.writer.write(move |c| outbox::claim(c, &req)).await
    }

    async fn finish_deliveries(
        &self,
        results: Vec<(i64, AttemptResult)>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.writer
            .write(move |c| outbox::finish(c, &results, now))
            .await
    }

    async fn renew_leases(&self, ids: Vec<i64>, until: Timestamp) -> Result<(), StoreError> {
        self.writer
            .write(move |c| outbox::renew(c, &ids, until))
            .await
    }

    async fn pause_endpoint(
        &self,
        endpoint: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let endpoint = endpoint.to_owned();
        self.writer
            .write(move |c| outbox::pause(c, &endpoint, until, now).map(|n| n as u64))
            .await
    }

    async fn endpoint_backlog(&self, limit: u32) -> Result<Vec<EndpointBacklog>, StoreError> {
        self.read(move |c| outbox::backlog(c, limit)).await
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
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let status = status.to_owned();
        self.read(move |c| outbox::list(c, &status, limit)).await
    }

    async fn outbox_stats(&self, now: Timestamp) -> Result<OutboxStats, StoreError> {
        self.read(move |c| outbox::stats(c, now)).await
    }

    async fn code_hash_in_use(&self, hashes: Vec<Vec<u8>>) -> Result<bool, StoreError> {
        self.read_point(|c| rotation::code_hash_in_use(c, &hashes))
    }

    async fn sealed_not_under(
        &self,
        place: SealedPlace,
        current_key_id: [u8; KEY_ID_LEN],
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<SealedBlob>, StoreError> {
        self.read(move |c| {
            rotation::sealed_not_under(c, place, current_key_id, after.as_deref(), limit)
        })
        .await
    }

    async fn replace_sealed(
        &self,
        place: SealedPlace,
        changes: Vec<Resealed>,
    ) -> Result<u64, StoreError> {
        self.writer
            .write(move |c| rotation::replace_sealed(c, place, &changes))
            .await
    }

    async fn count_sealed_not_under(
        &self,
        current_key_id: [u8; KEY_ID_LEN],
    ) -> Result<u64, StoreError> {
        self.read(move |c| rotation::count_sealed_not_under(c, current_key_id))
            .await
    }

    async fn create_request(&self, r: NewRequest, audit: AuditRecord) -> Result<bool, StoreError> {
        self.writer
            .write(move |c| requests::create(c, &r, &audit))
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
        self.writer
            .write(move |c| {
                requests::lookup(
                    c,
                    &code_hashes,
                    &app,
                    now,
                    budget_per_minute,
                    fulfilled_is_failure,
                    &audit,
                )
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
        let json = keys::DepositJson::with_event(
            &key,
            Some((&service.0, &service.1)),
            Some(ANSWER_REASON),
        )?;
        let request_id = request_id.to_owned();
        let done = self
            .writer
            .write(move |c| requests::answer(c, &request_id, &key, &json, &audit))
            .await;
        self.signal(done)
    }

    async fn request_for_service(
        &self,
        id: &str,
        service_id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.read_point(|c| requests::for_service(c, id, service_id))
    }

    async fn request_read(&self, id: &str, retrieval_id: &str) -> Result<(), StoreError> {
        let (id, retrieval_id) = (id.to_owned(), retrieval_id.to_owned());
        self.writer
            .write(move |c| requests::mark_read(c, &id, &retrieval_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::{keys, migrate, migrated_to, SqliteStore};

    /// A key made before migration 4 is found by the hash of its token alone (an old token
    /// names no key), through the partial index; a key made after only by its id and hash.
    #[test]
    fn old_holder_tokens_still_open_their_key_after_the_holder_index_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let c = migrated_to(&dir.path().join("k.db"), 3);
        let insert = "INSERT INTO keys (id, tenant_id, holder_hash, code_hash, code_format, kind,
                 algorithm, proven, policy, state, created_at, expires_at, max_retrievals)
             VALUES (?1, 'ten_1', ?2, ?3, 'digits', 'secret', 'secret', 0,
                 '{\"max_retrievals\":1}', 'active', 0, 9999999999999, 1)";
        c.execute(insert, params!["key_old", b"old", b"c1"])
            .unwrap();
        migrate(&c).unwrap();
        c.execute(insert, params!["key_new", b"new", b"c2"])
            .unwrap();

        let found = |id: Option<&str>, hash: &[u8]| {
            keys::key_by_holder(&c, id, hash).unwrap().map(|k| k.id)
        };
        assert_eq!(found(None, b"old").as_deref(), Some("key_old"));
        assert_eq!(found(Some("key_old"), b"old").as_deref(), Some("key_old"));
        assert_eq!(found(Some("key_new"), b"new").as_deref(), Some("key_new"));
        assert_eq!(found(None, b"new"), None, "new keys are looked up by id");
        assert_eq!(found(Some("key_new"), b"old"), None);
        assert_eq!(found(Some("key_old"), b"new"), None);

        let plan: String = c
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM keys WHERE holder_hash = ?1 AND legacy_holder = 1",
                [b"old"],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("keys_holder_legacy"), "{plan}");
        let indexed: i64 = c
            .query_row(
                "SELECT count(*) FROM keys INDEXED BY keys_holder_legacy WHERE legacy_holder = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 1, "only the old key is in the index");
    }

    /// Migration 10 rebuilds `events` without AUTOINCREMENT: every event keeps its seq, the
    /// key's index is back, `sqlite_sequence` no longer has a row for it, and a new event
    /// follows the largest seq in the table.
    #[test]
    fn events_keep_their_seqs_and_order_without_autoincrement() {
        let dir = tempfile::tempdir().unwrap();
        let c = migrated_to(&dir.path().join("k.db"), 9);
        let insert = "INSERT INTO events (id, key_id, tenant_id, type, at, payload)
             VALUES (?1, ?2, 'ten_1', 'key.deposited', 0, '{}')";
        for (id, key) in [("evt_1", "key_a"), ("evt_2", "key_b"), ("evt_3", "key_a")] {
            c.execute(insert, params![id, key]).unwrap();
        }
        migrate(&c).unwrap();

        let seqs = |key: &str| -> Vec<(i64, String)> {
            let mut s = c
                .prepare("SELECT seq, id FROM events WHERE key_id = ?1 ORDER BY seq")
                .unwrap();
            s.query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(seqs("key_a"), [(1, "evt_1".into()), (3, "evt_3".into())]);
        assert_eq!(seqs("key_b"), [(2, "evt_2".into())]);
        let sequenced: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_sequence WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sequenced, 0);
        let plan: String = c
            .query_row(
                "EXPLAIN QUERY PLAN SELECT seq FROM events WHERE key_id = 'key_a' AND seq > 1",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("events_key"), "{plan}");

        c.execute(insert, params!["evt_4", "key_b"]).unwrap();
        assert_eq!(seqs("key_b"), [(2, "evt_2".into()), (4, "evt_4".into())]);
        assert!(
            c.execute(insert, params!["evt_4", "key_c"]).is_err(),
            "ids stay unique"
        );
    }

    fn audit_record(at: jiff::Timestamp, action: &'static str) -> crate::store::AuditRecord {
        crate::store::AuditRecord {
            at,
            actor: "admin".into(),
            action,
            outcome: "success".into(),
            key_id: None,
            ip: None,
            detail: None,
        }
    }

    /// Every audit row's id, blank rows too.
    fn audit_ids(c: &rusqlite::Connection) -> Vec<i64> {
        let mut s = c.prepare("SELECT id FROM audit ORDER BY id").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The ids the audit list shows, oldest first.
    fn listed(c: &rusqlite::Connection) -> Vec<i64> {
        let mut ids: Vec<i64> = super::admin::list_audit(c, 100, None)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        ids.reverse();
        ids
    }

    /// Migration 11 rebuilds `audit` without AUTOINCREMENT: every row keeps its id and columns,
    /// the coalescing index is back, `sqlite_sequence` has no row for it, and the id of a row
    /// deleted before the migration (the newest, which only AUTOINCREMENT remembered) is held
    /// by a blank row that the list does not show, so it is not given again.
    #[test]
    fn audit_rows_keep_their_ids_and_no_id_is_given_twice_after_migration_11() {
        let dir = tempfile::tempdir().unwrap();
        let c = migrated_to(&dir.path().join("k.db"), 10);
        for action in ["a", "b", "c"] {
            c.execute(
                "INSERT INTO audit (at, actor, action, outcome, detail, repeats, coalesce_key)
                 VALUES (7, 'admin', ?1, 'success', 'd', 2, 'k' || ?1)",
                params![action],
            )
            .unwrap();
        }
        c.execute("DELETE FROM audit WHERE id = 3", []).unwrap();
        migrate(&c).unwrap();

        assert_eq!(audit_ids(&c), [1, 2, 3]);
        assert_eq!(listed(&c), [1, 2]);
        let row: (i64, String, String, String, Option<String>, i64, String) = c
            .query_row(
                "SELECT at, actor, action, outcome, detail, repeats, coalesce_key
                 FROM audit WHERE id = 2",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .unwrap();
        let want = ("admin", "b", "success", Some("d".to_owned()), 2, "kb");
        assert_eq!(
            row,
            (
                7,
                want.0.into(),
                want.1.into(),
                want.2.into(),
                want.3,
                want.4,
                want.5.into()
            )
        );
        let sequenced: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_sequence WHERE name = 'audit'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sequenced, 0);
        let indexed: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'audit_coalesce'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 1);

        let tx = super::tx::Tx::new(&c);
        super::rows::insert_audit(&tx, &audit_record(jiff::Timestamp::now(), "d")).unwrap();
        super::rows::insert_coalesced_audit(&tx, &audit_record(jiff::Timestamp::now(), "e"))
            .unwrap();
        super::rows::insert_coalesced_audit(&tx, &audit_record(jiff::Timestamp::now(), "e"))
            .unwrap();
        assert_eq!(
            listed(&c),
            [1, 2, 4, 5],
            "3 was given before; 5 counted twice"
        );
    }

    /// The sweeper never deletes the newest audit row: past the retention it is blanked (gone
    /// from the list, nothing of it kept but its id and time), so the next row's id is still
    /// above every id given before; the blank row goes once a newer row exists.
    #[test]
    fn audit_ids_purged_by_the_sweeper_are_not_given_again() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        migrate(&c).unwrap();
        let tx = super::tx::Tx::new(&c);
        let old = jiff::Timestamp::from_second(1_000_000).unwrap();
        let now = jiff::Timestamp::from_second(2_000_000_000).unwrap();
        let month = crate::store::retention::Retention {
            records: std::time::Duration::from_secs(3600),
            audit: Some(std::time::Duration::from_secs(30 * 86_400)),
        };
        for _ in 0..3 {
            super::rows::insert_audit(&tx, &audit_record(old, "a")).unwrap();
        }
        let report = super::sweep::sweep(&tx, now, month).unwrap();
        assert_eq!(report.purged, 3);
        assert!(listed(&c).is_empty());
        let blank: (String, String, String, Option<String>) = c
            .query_row(
                "SELECT actor, action, outcome, key_id FROM audit WHERE id = 3",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(blank, (String::new(), String::new(), String::new(), None));
        let again = super::sweep::sweep(&tx, now, month).unwrap();
        assert_eq!((again.purged, audit_ids(&c)), (0, vec![3]));

        super::rows::insert_audit(&tx, &audit_record(now, "b")).unwrap();
        assert_eq!(listed(&c), [4]);
        super::sweep::sweep(&tx, now, month).unwrap();
        assert_eq!(
            audit_ids(&c),
            [4],
            "the blank row went once 4 was the newest"
        );
    }

    #[test]
    fn a_second_server_on_the_same_file_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let first = SqliteStore::open(&path, true).unwrap();
        let Err(e) = SqliteStore::open(&path, true) else {
            panic!("two stores opened one SQLite file")
        };
        assert!(
            e.to_string()
                .contains("in use by another keymaster process"),
            "{e}"
        );
        drop(first);
        SqliteStore::open(&path, true).unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_its_wal_shm_and_lock_are_0600_and_tightened_at_open() {
        use std::os::unix::fs::PermissionsExt;

        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let files = ["k.db", "k.db-wal", "k.db-shm", "k.db.lock"].map(|n| dir.path().join(n));
        let modes = || {
            files
                .iter()
                .map(|f| std::fs::metadata(f).unwrap().permissions().mode() & 0o777)
                .collect::<Vec<_>>()
        };
        let store = SqliteStore::open(&path, false).unwrap();
        store.ping().await.unwrap();
        assert_eq!(modes(), [0o600; 4], "a new database");
        drop(store);
        for f in &files {
            if f.exists() {
                std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
            } else {
                // SQLite removed it at close; as after a crash, it is there at the next open.
                std::fs::write(f, b"").unwrap();
                std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let store = SqliteStore::open(&path, false).unwrap();
        store.ping().await.unwrap();
        assert_eq!(modes(), [0o600; 4], "an existing database with 0644 files");
    }
}
