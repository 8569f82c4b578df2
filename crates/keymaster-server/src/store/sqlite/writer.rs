//! The one writer thread of the SQLite backend, with group commit.
//!
//! Every change is a job sent over a bounded channel. The thread takes the first job, then every
//! job already waiting (up to [`MAX_BATCH`]), runs each inside its own savepoint of one
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers each caller. So one
//! `fsync` covers many requests, a failing job rolls back only itself, and no caller hears
//! "done" before its change is durable.
//!
//! Not responsible for reads (those use separate read-only connections) or for SQL of any
//! particular operation.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// Most jobs committed together.
const MAX_BATCH: usize = 512;

/// The answer to a job, sent once the batch's commit has finished.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A job: runs on the writer's connection (or, given `None`, does not run because no
/// transaction could be begun) and returns how to answer its caller.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Finish + Send>;

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>(4096);
        std::thread::Builder::new()
            .name("keymaster-sqlite-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Db(format!("cannot start writer thread: {e}")))?;
        Ok(Writer { jobs: tx })
    }

    /// Runs `f` in the next batch and returns its result once the batch is committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: Option<&Connection>| -> Finish {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(StoreError::Unavailable("cannot begin a transaction".into())),
            };
            Box::new(move |commit: Result<(), String>| {
                let out = match (result, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => Err(StoreError::Db(format!("commit failed: {e}"))),
                    (Err(e), _) => Err(e),
                };
                // The caller may have gone away (client disconnected); the change stands.
                let _ = tx.send(out);
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job").map_err(db)?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE job").map_err(db)?;
            Ok(v)
        }
        Err(e) => {
            // Undo only this job; the batch goes on.
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut finishes: Vec<Finish> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let begun = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = begun {
            tracing::error!(error = %e, "sqlite writer cannot begin a transaction");
            first(None)(Err(e.to_string()));
            continue;
        }
        finishes.push(first(Some(&conn)));
        while finishes.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => finishes.push(job(Some(&conn))),
                Err(_) => break,
            }
        }
        let commit = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        metrics::histogram!("keymaster_sqlite_batch_size").record(finishes.len() as f64);
        for finish in finishes.drain(..) {
            finish(commit.clone());
        }
    }
}

/// Maps a rusqlite error into the store's error.
pub fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}
