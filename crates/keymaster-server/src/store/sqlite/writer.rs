//! The one writer thread of the SQLite backend, with group commit and a pipelined `fsync`.
//!
//! Every change is a job sent over a bounded channel. The writer thread runs each job inside one
//! open `BEGIN IMMEDIATE` transaction; a failing job rolls back only itself (without a savepoint
//! per job: a job that fails after writing makes the batch replay, see `job.rs`). It commits when no job is waiting and fewer than [`MAX_IN_FLIGHT`] committed batches
//! wait for the sync thread (or the batch is full), and hands the committed batch to the sync
//! thread, which makes the WAL durable with one `fdatasync` for every batch committed before it
//! began, and only then answers their callers. So no caller hears "done" before its change is
//! on disk, one `fsync` covers every job that arrived while the previous one ran, and the writer
//! keeps running and committing jobs during the `fsync` instead of waiting for it.
//!
//! Durability is exactly that of `PRAGMA synchronous=FULL` in WAL mode, which is `NORMAL` (WAL
//! synced before each checkpoint, database synced after it) plus a sync of the WAL after each
//! commit; here that last sync is made by the sync thread instead of inside `COMMIT`. A
//! transaction torn by power loss before that sync is discarded by SQLite's WAL checksums on
//! recovery, and none of its callers was answered. If an `fsync` fails the store stops
//! accepting writes (the kernel may have dropped the dirty pages; retrying would lie).
//!
//! Checkpoints run on their own thread and connection (`checkpointer.rs`), so that copying
//! WAL pages into the database and its two syncs never stall the writer. SQLite starts the WAL
//! over from its beginning only when a write transaction begins with every WAL page already
//! copied, which a checkpointer running beside a busy writer never achieves; so once the WAL is
//! long the checkpointer pauses the writer between two transactions for one short final copy
//! ([`Msg::Pause`], [`pause_writer`]), instead of the writer checkpointing inside `COMMIT` while every caller
//! waits (that made the 80–130 ms stalls behind the retrieval p99).
//!
//! Not responsible for reads (those use separate read-only connections) or for SQL of any
//! particular operation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::checkpointer::Activity;
use super::job::{Job, Ran, WriteJob};
use super::timing;
use super::tx::Tx;
use crate::store::StoreError;

/// Most jobs committed together.
const MAX_BATCH: usize = 512;
/// Committed batches that may wait for the sync thread at once: one being synced and one
/// committed meanwhile. With one, every connection ends up waiting for the same `fdatasync`
/// while the writer holds the next batch uncommitted; with two, that batch's WAL frames are
/// written during the sync and the next sync starts as soon as the previous one ends.
const MAX_IN_FLIGHT: usize = 2;
/// Jobs waiting for the writer before callers wait to send theirs.
const QUEUE: usize = 4096;
/// Longest pause of the writer for the final copy; the writer resumes after it in any case.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// What the writer thread receives.
enum Msg {
    Job(Box<dyn Job>),
    /// The sync thread has become idle: a waiting batch can be committed.
    SyncIdle,
    /// The checkpointer asks the writer to commit what it holds, say so on `paused`, and begin
    /// no transaction until `resume` (or [`MAX_PAUSE`]).
    Pause {
        paused: std_mpsc::Sender<()>,
        resume: std_mpsc::Receiver<()>,
    },
}

/// How commits are made durable.
pub enum Durability {
    /// No sync at commit (`synchronous=NORMAL`, or `keymaster_walbuf`): a commit survives a
    /// crash of the process, but the last ones may be lost on power loss. Callers are answered
    /// right after `COMMIT`.
    Normal,
    /// The WAL file at this path is synced after every commit before its callers are answered:
    /// the durability of `synchronous=FULL`.
    SyncWal(PathBuf),
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Msg>,
    /// Whether the checkpointer is at work, for the sync thread's metrics.
    activity: Arc<Activity>,
}

/// A handle that does not keep the writer running (the checkpointer's).
pub(super) struct WeakWriter {
    jobs: mpsc::WeakSender<Msg>,
    activity: Arc<Activity>,
}

impl WeakWriter {
    /// The writer, while any [`Writer`] handle is left.
    pub(super) fn upgrade(&self) -> Option<Writer> {
        Some(Writer {
            jobs: self.jobs.upgrade()?,
            activity: self.activity.clone(),
        })
    }
}

impl Writer {
    /// Starts the writer thread on `conn` (which must be in WAL mode, and make no sync at commit
    /// when `durability` is [`Durability::SyncWal`]: `synchronous=NORMAL`, or the
    /// `keymaster_walbuf` connection the store opens), and its sync thread.
    pub fn start(conn: Connection, durability: Durability) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Msg>(QUEUE);
        let activity = Arc::new(Activity::default());
        let syncer = match durability {
            Durability::Normal => None,
            Durability::SyncWal(wal) => {
                let (batches_tx, batches_rx) = std_mpsc::channel::<Committed>();
                let in_flight = Arc::new(AtomicUsize::new(0));
                let broken = Arc::new(AtomicBool::new(false));
                let sync = Syncer {
                    wal,
                    batches: batches_rx,
                    in_flight: in_flight.clone(),
                    broken: broken.clone(),
                    checkpointer: activity.clone(),
                    // Weak, so that the writer stops once every `Writer` handle is dropped.
                    wake: tx.downgrade(),
                };
                std::thread::Builder::new()
                    .name("km-sqlite-sync".into())
                    .spawn(move || sync.run())
                    .map_err(|e| StoreError::Db(format!("cannot start sync thread: {e}")))?;
                Some(SyncHandle {
                    batches: batches_tx,
                    in_flight,
                    broken,
                })
            }
        };
        std::thread::Builder::new()
            .name("km-sqlite-write".into())
            .spawn(move || {
                // The writer's statements borrow the connection (`tx.rs`): it outlives them.
                let conn = conn;
                BatchLoop::new(&conn, syncer).run(rx)
            })
            .map_err(|e| StoreError::Db(format!("cannot start writer thread: {e}")))?;
        Ok(Writer { jobs: tx, activity })
    }

    /// A handle that lets the writer stop once every [`Writer`] is dropped.
    pub(super) fn downgrade(&self) -> WeakWriter {
        WeakWriter {
            jobs: self.jobs.downgrade(),
            activity: self.activity.clone(),
        }
    }

    /// The checkpointer's activity, which the sync thread looks at.
    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Runs `f` in the next batch and returns its result once the batch is durably committed.
    /// `f` may be run more than once (a batch is replayed when another of its jobs fails after
    /// writing, `job.rs`); only its last run's changes and result count.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let sent = Instant::now();
        self.jobs
            .send(Msg::Job(Box::new(WriteJob::new(f, tx))))
            .await
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?;
        let out = rx
            .await
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?;
        timing::written(sent.elapsed());
        out
    }
}

/// A committed batch on its way to the sync thread, with the end of its `COMMIT`.
type Committed = (Instant, Vec<Box<dyn Job>>);

/// The writer's side of the sync thread.
struct SyncHandle {
    batches: std_mpsc::Sender<Committed>,
    /// Committed batches handed to the sync thread and not yet synced.
    in_flight: Arc<AtomicUsize>,
    /// An `fsync` failed: no further write is accepted.
    broken: Arc<AtomicBool>,
}

/// The writer thread's state: the open transaction and the jobs run in it.
struct BatchLoop<'c> {
    conn: Tx<'c>,
    syncer: Option<SyncHandle>,
    /// Jobs run inside the open transaction, waiting for its commit.
    pending: Vec<Box<dyn Job>>,
    open: bool,
}

impl<'c> BatchLoop<'c> {
    fn new(conn: &'c Connection, syncer: Option<SyncHandle>) -> BatchLoop<'c> {
        BatchLoop {
            conn: Tx::new(conn),
            syncer,
            pending: Vec::with_capacity(MAX_BATCH),
            open: false,
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            // Take every job already waiting, without blocking.
            while self.pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(_) => break,
                }
            }
            if !self.pending.is_empty() && (!self.sync_busy() || self.pending.len() >= MAX_BATCH) {
                self.commit();
                continue;
            }
            // Nothing to commit yet: wait for a job, or for the sync thread to become idle.
            let why = if self.pending.is_empty() {
                "idle"
            } else {
                "sync_busy"
            };
            let waiting = Instant::now();
            let msg = rx.blocking_recv();
            timing::waited("writer", why, waiting.elapsed());
            match msg {
                Some(msg) => self.handle(msg),
                None => {
                    if !self.pending.is_empty() {
                        self.commit();
                    }
                    return;
                }
            }
        }
    }

    /// True when as many batches as [`MAX_IN_FLIGHT`] already wait for the sync thread.
    fn sync_busy(&self) -> bool {
        self.syncer
            .as_ref()
            .is_some_and(|s| s.in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT)
    }

    fn handle(&mut self, msg: Msg) {
        let mut job = match msg {
            Msg::Job(job) => job,
            Msg::SyncIdle => return,
            Msg::Pause { paused, resume } => {
                if !self.pending.is_empty() {
                    self.commit();
                }
                if paused.send(()).is_ok() {
                    let _ = resume.recv_timeout(MAX_PAUSE);
                }
                return;
            }
        };
        let broken = self
            .syncer
            .as_ref()
            .is_some_and(|s| s.broken.load(Ordering::Acquire));
        if broken {
            job.answer(Err("an fsync failed; the store accepts no writes".into()));
            return;
        }
        if !self.open {
            if let Err(e) = self.conn.run("BEGIN IMMEDIATE") {
                tracing::error!(error = %e, "sqlite writer cannot begin a transaction");
                job.answer(Err(format!("cannot begin a transaction: {e}")));
                return;
            }
            self.open = true;
        }
        let ran = job.run(&self.conn, false);
        self.pending.push(job);
        if ran != Ran::Clean {
            self.replay();
        }
    }

    /// A job failed after writing (or the transaction is gone): rolls the transaction back and
    /// runs every job of the batch again, each in its own savepoint, so that only the failed
    /// job's changes are dropped. If the transaction is lost again, every job fails.
    fn replay(&mut self) {
        metrics::counter!("keymaster_sqlite_batch_replays_total").increment(1);
        // Fails harmlessly when SQLite has already rolled the transaction back.
        let _ = self.conn.execute_batch("ROLLBACK");
        let lost = match self.conn.run("BEGIN IMMEDIATE") {
            Err(e) => Some(format!("cannot begin a transaction: {e}")),
            Ok(()) => self
                .pending
                .iter_mut()
                .any(|job| job.run(&self.conn, true) == Ran::TransactionLost)
                .then(|| "the transaction was rolled back after a storage error".to_owned()),
        };
        if let Some(e) = lost {
            tracing::error!(error = %e, "sqlite writer lost a batch; its callers are told");
            let _ = self.conn.execute_batch("ROLLBACK");
            self.open = false;
            for job in self.pending.drain(..) {
                job.answer(Err(e.clone()));
            }
        }
    }

    /// Commits the open transaction and hands its jobs to the sync thread (or answers them).
    fn commit(&mut self) {
        self.open = false;
        let started = std::time::Instant::now();
        let commit = self.conn.run("COMMIT").map_err(|e| {
            let _ = self.conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        let committed = Instant::now();
        metrics::histogram!("keymaster_sqlite_commit_seconds")
            .record((committed - started).as_secs_f64());
        metrics::histogram!("keymaster_sqlite_batch_size").record(self.pending.len() as f64);
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(MAX_BATCH));
        timing::committed(&batch, committed);
        match (&self.syncer, commit) {
            (Some(s), Ok(())) => {
                s.in_flight.fetch_add(1, Ordering::AcqRel);
                if let Err(std_mpsc::SendError((_, batch))) = s.batches.send((committed, batch)) {
                    s.in_flight.fetch_sub(1, Ordering::AcqRel);
                    for job in batch {
                        job.answer(Err("sync thread stopped".into()));
                    }
                }
            }
            (_, commit) => {
                for job in batch {
                    job.answer(commit.clone());
                }
            }
        }
    }
}

/// The sync thread: one `fdatasync` of the WAL for every batch committed since the last one.
struct Syncer {
    wal: PathBuf,
    batches: std_mpsc::Receiver<Committed>,
    in_flight: Arc<AtomicUsize>,
    broken: Arc<AtomicBool>,
    /// Whether the checkpointer is writing while a sync runs.
    checkpointer: Arc<Activity>,
    wake: mpsc::WeakSender<Msg>,
}

impl Syncer {
    fn run(self) {
        loop {
            let waiting = Instant::now();
            let Ok(first) = self.batches.recv() else {
                return;
            };
            timing::waited("sync", "idle", waiting.elapsed());
            let mut batches = vec![first];
            while let Ok(more) = self.batches.try_recv() {
                batches.push(more);
            }
            let result = if self.broken.load(Ordering::Acquire) {
                Err("an earlier fsync failed".to_owned())
            } else {
                let started = Instant::now();
                let checkpointer = self.checkpointer.now();
                let synced = self.sync();
                let ended = Instant::now();
                let sizes: Vec<_> = batches.iter().map(|(at, b)| (*at, b.len())).collect();
                timing::synced(&sizes, started, ended);
                let took = (ended - started).as_secs_f64();
                metrics::histogram!("keymaster_sqlite_sync_seconds").record(took);
                // The same syncs again when a checkpoint ran during them: comparing the two
                // histograms shows whether the checkpointer's writes are behind the WAL's tail.
                if self.checkpointer.overlapped(checkpointer) {
                    metrics::histogram!("keymaster_sqlite_sync_beside_checkpoint_seconds")
                        .record(took);
                }
                synced
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, "cannot sync the SQLite WAL; refusing further writes");
                self.broken.store(true, Ordering::Release);
            }
            // Let the writer commit its next batch while these callers are answered. If the
            // channel is full the writer has jobs to take and looks at `in_flight` again anyway.
            self.in_flight.fetch_sub(batches.len(), Ordering::AcqRel);
            if let Some(wake) = self.wake.upgrade() {
                let _ = wake.try_send(Msg::SyncIdle);
            }
            let synced = Instant::now();
            let mut answering = 0;
            for job in batches.into_iter().flat_map(|(_, b)| b) {
                job.answer(result.clone());
                answering += timing::since(synced);
            }
            timing::answered(answering);
        }
    }

    fn sync(&self) -> Result<(), String> {
        sync_wal(&self.wal)
    }
}

/// Runs `f` while the writer waits between two transactions. `None` when the writer could not
/// be asked (its queue is full, or it stopped) or did not answer within [`MAX_PAUSE`].
pub(super) fn pause_writer<T>(writer: &Writer, f: impl FnOnce() -> T) -> Option<T> {
    let (paused_tx, paused_rx) = std_mpsc::channel();
    let (resume_tx, resume_rx) = std_mpsc::channel();
    writer
        .jobs
        .try_send(Msg::Pause {
            paused: paused_tx,
            resume: resume_rx,
        })
        .ok()?;
    paused_rx.recv_timeout(MAX_PAUSE).ok()?;
    let out = f();
    let _ = resume_tx.send(());
    Some(out)
}

/// Syncs the WAL at `wal`. Opened afresh each time so that a WAL that SQLite replaced is still
/// the one synced; a WAL that no longer exists was checkpointed (and synced) and removed.
pub fn sync_wal(wal: &std::path::Path) -> Result<(), String> {
    match std::fs::File::open(wal) {
        Ok(f) => f
            .sync_data()
            .map_err(|e| format!("fdatasync {}: {e}", wal.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("open {}: {e}", wal.display())),
    }
}

/// Maps a rusqlite error into the store's error.
pub fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    type Answer = oneshot::Receiver<Result<(), StoreError>>;

    /// A job inserting `v` into `t`, counting its runs, then failing with `fail` if given.
    fn insert(
        v: &'static str,
        runs: &Arc<AtomicUsize>,
        fail: Option<&'static str>,
    ) -> (Msg, Answer) {
        let runs = runs.clone();
        let (tx, rx) = oneshot::channel();
        let job = WriteJob::new(
            move |c: &Tx<'_>| {
                runs.fetch_add(1, Ordering::SeqCst);
                c.execute("INSERT INTO t (v) VALUES (?1)", [v])
                    .map_err(db)?;
                match fail {
                    Some(sql) => {
                        let _ = c.execute_batch(sql);
                        Err(StoreError::Db("failed after writing".into()))
                    }
                    None => Ok(()),
                }
            },
            tx,
        );
        (Msg::Job(Box::new(job)), rx)
    }

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT NOT NULL UNIQUE)")
            .unwrap();
        conn
    }

    fn rows(l: &BatchLoop) -> Vec<String> {
        let mut s = l.conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let v = s.query_map([], |r| r.get(0)).unwrap();
        v.map(Result::unwrap).collect()
    }

    /// Runs the jobs in one batch and commits it: the answers, in order.
    fn run_batch(l: &mut BatchLoop, jobs: Vec<(Msg, Answer)>) -> Vec<Result<(), StoreError>> {
        let mut answers = Vec::new();
        for (msg, rx) in jobs {
            l.handle(msg);
            answers.push(rx);
        }
        l.commit();
        answers
            .into_iter()
            .map(|mut rx| rx.try_recv().unwrap())
            .collect()
    }

    /// A job that fails after writing makes the batch replay: its row is gone, the jobs before
    /// and after it in the same batch stand, and the one before it ran twice.
    #[test]
    fn a_job_failing_after_writing_drops_only_its_own_changes() {
        let conn = table();
        let mut l = BatchLoop::new(&conn, None);
        let (a, b, c) = (Arc::default(), Arc::default(), Arc::default());
        let answers = run_batch(
            &mut l,
            vec![
                insert("a", &a, None),
                insert("b", &b, Some("SELECT 1")),
                insert("c", &c, None),
            ],
        );
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert!(matches!(answers[1], Err(StoreError::Db(_))), "{answers:?}");
        assert_eq!(rows(&l), ["a", "c"]);
        assert_eq!(a.load(Ordering::SeqCst), 2, "replayed with the failed job");
        assert_eq!(b.load(Ordering::SeqCst), 2);
        assert_eq!(c.load(Ordering::SeqCst), 1);
    }

    /// A job that fails before writing anything (here: a UNIQUE violation) needs no replay.
    #[test]
    fn a_job_failing_before_writing_causes_no_replay() {
        let conn = table();
        let mut l = BatchLoop::new(&conn, None);
        let (a, b) = (Arc::default(), Arc::default());
        let answers = run_batch(&mut l, vec![insert("a", &a, None), insert("a", &b, None)]);
        assert!(answers[0].is_ok(), "{answers:?}");
        assert!(answers[1].is_err(), "{answers:?}");
        assert_eq!(rows(&l), ["a"]);
        assert_eq!(a.load(Ordering::SeqCst), 1, "no replay");
    }

    /// A job that succeeds but has lost the transaction (it swallowed the error that made
    /// SQLite roll back) is caught too: no later job runs outside a transaction.
    #[test]
    fn a_job_that_hides_a_lost_transaction_fails_the_batch() {
        let conn = table();
        let mut l = BatchLoop::new(&conn, None);
        let runs = Arc::default();
        let (tx, mut rx) = oneshot::channel();
        let hides = WriteJob::new(
            |c: &Tx<'_>| {
                c.execute_batch("ROLLBACK").map_err(db)?;
                Ok(())
            },
            tx,
        );
        let (a, mut a_rx) = insert("a", &runs, None);
        l.handle(a);
        l.handle(Msg::Job(Box::new(hides)));
        let (b, mut b_rx) = insert("b", &runs, None);
        l.handle(b);
        l.commit();
        assert!(a_rx.try_recv().unwrap().is_err());
        assert!(rx.try_recv().unwrap().is_err());
        assert!(
            b_rx.try_recv().unwrap().is_ok(),
            "b ran in a new transaction"
        );
        assert_eq!(rows(&l), ["b"]);
    }

    /// A job that loses the transaction (as SQLite does on a full disk or an I/O error) fails
    /// every job run in it, leaves none of their rows, and the next batch starts afresh.
    #[test]
    fn a_lost_transaction_fails_every_job_of_the_batch() {
        let conn = table();
        let mut l = BatchLoop::new(&conn, None);
        let runs = Arc::default();
        let answers = run_batch(
            &mut l,
            vec![
                insert("a", &runs, None),
                insert("b", &runs, Some("ROLLBACK")),
            ],
        );
        assert!(answers.iter().all(Result::is_err), "{answers:?}");
        assert!(rows(&l).is_empty());
        let answers = run_batch(&mut l, vec![insert("c", &runs, None)]);
        assert!(answers[0].is_ok(), "{answers:?}");
        assert_eq!(rows(&l), ["c"]);
    }

    /// Under steady writes the checkpointer makes the WAL start over (so the WAL file stays far
    /// shorter than what was written through it), and pausing the writer loses no write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_steady_writes_and_no_write_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        // No limit on the WAL file and no checkpoint inside COMMIT: only the checkpointer's
        // pauses can make the WAL start over.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=-1;
             PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL);",
        )
        .unwrap();
        let writer =
            Writer::start(conn, Durability::SyncWal(path.with_extension("db-wal"))).unwrap();
        let ckpt = Connection::open(&path).unwrap();
        ckpt.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
        super::super::checkpointer::start(
            ckpt,
            path.clone(),
            &writer,
            Duration::from_millis(100),
            64,
        )
        .unwrap();

        const TASKS: usize = 16;
        const EACH: usize = 500;
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..EACH {
                    w.write(|c| {
                        let v: Vec<u8> = (0..1000).map(|_| rand::random::<u8>()).collect();
                        c.execute("INSERT INTO t (v) VALUES (?1)", [v]).map_err(db)
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let rows: usize = writer
            .write(|c| {
                c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .map_err(db)
            })
            .await
            .unwrap();
        assert_eq!(
            rows,
            TASKS * EACH,
            "every acknowledged write is in the database"
        );
        // 8 MB of rows went through the WAL; had it never started over, the WAL file would be
        // at least that long.
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        let data = (TASKS * EACH * 1000) as u64;
        assert!(
            wal < data / 2,
            "the WAL file grew to {wal} bytes for {data} bytes of rows: it never started over"
        );
    }
}
