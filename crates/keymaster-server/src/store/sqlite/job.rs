//! One caller's change as the writer thread holds it: run inside the batch's open transaction
//! (run again if the batch is replayed), then answered once the batch's fate is known.
//!
//! A job runs without a savepoint of its own. A savepoint per job made SQLite copy every page
//! the job touched into its in-memory sub-journal before changing it, about 7 % of the
//! instructions of a deposit (counted with `bench/instructions`), to undo a failure
//! that almost never happens. Instead, a job that fails after changing a row (SQLite's
//! `total_changes` moved) makes the writer roll the transaction back and replay the batch with
//! a savepoint around each job ([`Job::run`] with `guarded`), so that only the failing job's
//! changes are dropped, exactly as if every job had had its savepoint from the start. A job that
//! fails before changing anything (a refused retrieval, a code already in use) needs no undo.
//!
//! Not responsible for batching, committing or syncing (the writer thread, `writer.rs`).

use std::time::Instant;

use tokio::sync::oneshot;

use super::tx::Tx;
use super::writer::db;
use crate::store::StoreError;

/// How a run of a job ended, as far as the open transaction is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Ran {
    /// Succeeded, or failed without leaving a change behind.
    Clean,
    /// Failed after changing rows: only a rollback undoes them.
    Dirty,
    /// Failed, and SQLite rolled the whole transaction back (disk full, I/O error): nothing
    /// run in it since `BEGIN` stands.
    TransactionLost,
}

/// A change waiting in the writer thread.
pub trait Job: Send {
    /// Runs the change on `conn` (inside the open transaction; in a savepoint of its own when
    /// `guarded`) and keeps its result, replacing that of an earlier run.
    fn run(&mut self, conn: &Tx<'_>, guarded: bool) -> Ran;
    /// Answers the caller: the kept result if `commit` succeeded, else the commit's error.
    fn answer(self: Box<Self>, commit: Result<(), String>);
    /// When the caller queued it, and when it first ran (for `timing`).
    fn stamps(&self) -> (Instant, Option<Instant>);
}

/// A job made of a function of the connection, whose result goes to a waiting caller.
pub struct WriteJob<T, F> {
    f: F,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    queued: Instant,
    ran: Option<Instant>,
}

impl<T, F> WriteJob<T, F> {
    pub fn new(f: F, reply: oneshot::Sender<Result<T, StoreError>>) -> WriteJob<T, F> {
        WriteJob {
            f,
            result: None,
            reply,
            queued: Instant::now(),
            ran: None,
        }
    }
}

impl<T, F> Job for WriteJob<T, F>
where
    T: Send,
    F: Fn(&Tx<'_>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Tx<'_>, guarded: bool) -> Ran {
        self.ran.get_or_insert_with(Instant::now);
        let before = conn.total_changes();
        let result = if guarded {
            in_savepoint(conn, &self.f)
        } else {
            (self.f)(conn)
        };
        let ran = match &result {
            // Without a transaction every later statement would commit on its own. (A job
            // that swallowed the error which made SQLite roll back is caught here too.)
            _ if conn.is_autocommit() => Ran::TransactionLost,
            Ok(_) => Ran::Clean,
            // A guarded run's changes were rolled back to its savepoint.
            Err(_) if guarded || conn.total_changes() == before => Ran::Clean,
            Err(_) => Ran::Dirty,
        };
        self.result = Some(result);
        ran
    }

    fn answer(self: Box<Self>, commit: Result<(), String>) {
        let out = match (self.result, commit) {
            (Some(Ok(v)), Ok(())) => Ok(v),
            (Some(Ok(_)), Err(e)) => Err(StoreError::Db(format!("commit failed: {e}"))),
            (Some(Err(e)), _) => Err(e),
            (None, Err(e)) => Err(StoreError::Unavailable(e)),
            (None, Ok(())) => Err(StoreError::Unavailable("the change was not run".into())),
        };
        // The caller may have gone away (client disconnected); the change stands.
        let _ = self.reply.send(out);
    }

    fn stamps(&self) -> (Instant, Option<Instant>) {
        (self.queued, self.ran)
    }
}

fn in_savepoint<T>(
    conn: &Tx<'_>,
    f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.run("SAVEPOINT job").map_err(db)?;
    match f(conn) {
        Ok(v) => {
            conn.run("RELEASE job").map_err(db)?;
            Ok(v)
        }
        Err(e) => {
            // Undo only this job; the batch goes on.
            let _ = conn
                .run("ROLLBACK TO job")
                .and_then(|_| conn.run("RELEASE job"));
            Err(e)
        }
    }
}
