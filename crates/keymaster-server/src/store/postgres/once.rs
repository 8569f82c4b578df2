//! PostgreSQL: runs single statements in autocommit (no `BEGIN`/`COMMIT`), on one pooled
//! connection kept for a whole request, for the hot paths that are one statement each (a
//! deposit, a retrieval's read and its conditional write, a refusal).
//!
//! When a statement may run again — the rule this file keeps:
//!
//! - **A read** may always run again: it changed nothing. It is run again once when the
//!   connection broke (on a fresh connection: a pooled connection may have died while idle) or
//!   when PostgreSQL rolled it back (SQLSTATE class `40`).
//! - **A write** runs again only when PostgreSQL answered with a SQLSTATE of class `40`
//!   (`40001` serialization failure, `40P01` deadlock): the statement was rolled back, nothing
//!   of it was committed. When the connection breaks after the statement was sent (I/O error,
//!   class `08`, or a shutdown `57P..`, which the server may send after the commit record is
//!   written), whether it committed is unknown: it is never run again, the request gets
//!   `StoreError::Unavailable` (503). A caller that finds nothing written (a guard that did
//!   not hold) decides itself whether to read and try again.
//!
//! Errors are mapped to the store's with `super::db` (and a failed acquire with
//! `super::unavailable`), as every other operation of this backend.

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres};

use super::{db, unavailable};
use crate::store::StoreError;

/// How many times a statement runs at most when it may run again.
const TRIES: u32 = 3;

/// One statement with its arguments, that [`Once`] may run more than once (its ids and times
/// are fixed before it first runs).
pub trait Statement: Sync {
    type Out: Send;
    fn run<'c>(&'c self, c: &'c mut PgConnection) -> BoxFuture<'c, Result<Self::Out, sqlx::Error>>;
}

/// One request's connection, taken from the pool at its first statement.
pub struct Once<'p> {
    pool: &'p PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl<'p> Once<'p> {
    pub fn new(pool: &'p PgPool) -> Once<'p> {
        Once { pool, conn: None }
    }

    /// The request's connection (for cold paths that run several statements or a transaction
    /// of their own, mapping their errors themselves).
    pub async fn conn(&mut self) -> Result<&mut PgConnection, StoreError> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.pool.acquire().await.map_err(unavailable)?,
        };
        Ok(&mut *self.conn.insert(conn))
    }

    /// Runs a statement that changes nothing (see the file's rule).
    pub async fn read<S: Statement>(&mut self, s: &S) -> Result<S::Out, StoreError> {
        self.run(s, |e| lost(e) || rolled_back(e)).await
    }

    /// Runs a statement that writes (see the file's rule).
    pub async fn write<S: Statement>(&mut self, s: &S) -> Result<S::Out, StoreError> {
        self.run(s, rolled_back).await
    }

    async fn run<S: Statement>(
        &mut self,
        s: &S,
        again: impl Fn(&sqlx::Error) -> bool + Send,
    ) -> Result<S::Out, StoreError> {
        let mut tries = 1;
        loop {
            let result = s.run(self.conn().await?).await;
            let e = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if lost(&e) {
                // Never back into the pool: the next statement gets a fresh connection.
                if let Some(mut c) = self.conn.take() {
                    c.close_on_drop();
                }
            }
            if tries >= TRIES || !again(&e) {
                return Err(db(e));
            }
            tries += 1;
        }
    }
}

/// The connection broke: I/O, or PostgreSQL ended the session (`08…`, `57P…`).
fn lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// PostgreSQL rolled the statement back and says so (SQLSTATE class `40`): nothing committed.
fn rolled_back(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("40"))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::error::{DatabaseError, ErrorKind};

    use super::{lost, rolled_back};

    /// A statement's error as PostgreSQL reports it: a SQLSTATE.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn state(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Sqlstate(code)))
    }

    #[test]
    fn only_a_rollback_runs_again_and_a_broken_connection_is_lost() {
        // Rolled back by PostgreSQL, nothing committed: a write may run again.
        for code in ["40001", "40P01"] {
            assert!(rolled_back(&state(code)) && !lost(&state(code)), "{code}");
        }
        // The session ended: whatever was sent may have committed.
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        for e in [io, state("08006"), state("57P01")] {
            assert!(lost(&e) && !rolled_back(&e), "{e}");
        }
        // Any other failure is the store's error, never run again.
        for e in [state("23505"), state("42P01"), sqlx::Error::RowNotFound] {
            assert!(!lost(&e) && !rolled_back(&e), "{e}");
        }
    }
}
