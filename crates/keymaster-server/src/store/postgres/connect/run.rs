//! Running the store's work on the pool: a transaction ([`transaction`]) or a read ([`read`]),
//! each retried where that is safe (the rule is in the [module doc](super)), and the readiness
//! check ([`ping`]).

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use super::{Failure, Lease, Primary};
use crate::store::StoreError;

/// How long one piece of work may take, retries included, before it is answered
/// `Unavailable`: as long as the pool waits for a connection, so that a request answers no
/// later than it did before retries existed.
pub(crate) const RETRY_WITHIN: Duration = Duration::from_secs(3);

/// Most attempts of one piece of work.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// The first pause before a retry; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// After this long waiting for a connection the primary is put in doubt: the pool may be
/// retrying a host that is gone (sqlx retries refused connections until its timeout), and
/// what the search finds is used by the pool's next attempt, within the same wait.
const SLOW_ACQUIRE: Duration = Duration::from_millis(300);

/// A piece of work's budget of attempts and time.
struct Retry {
    deadline: Instant,
    attempts: u32,
    pause: Duration,
}

impl Retry {
    fn new() -> Retry {
        Retry {
            deadline: Instant::now() + RETRY_WITHIN,
            attempts: 1,
            pause: FIRST_PAUSE,
        }
    }

    /// Whether to try again after a failure that left nothing done; waits first — for a
    /// search for the primary when it is in `doubt`, else for a short pause.
    async fn again(&mut self, primary: &Primary, doubt: bool) -> bool {
        if self.attempts >= MAX_ATTEMPTS || Instant::now() >= self.deadline {
            return false;
        }
        self.attempts += 1;
        let until = (Instant::now() + self.pause).min(self.deadline);
        if doubt {
            primary.doubt_and_wait(until).await;
        } else {
            tokio::time::sleep_until(until).await;
        }
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Instant::now() < self.deadline
    }
}

impl Retry {
    /// A pooled connection, trying again (after a search for the primary) while the budget
    /// of attempts and time allows: getting none changes nothing, so it is always safe.
    async fn acquire<'p>(
        &mut self,
        pool: &PgPool,
        primary: &'p Primary,
    ) -> Result<Lease<'p>, StoreError> {
        loop {
            match acquire(pool, primary, self.deadline).await {
                Ok(conn) => return Ok(conn),
                Err(error) if !self.again(primary, true).await => return Err(error),
                Err(_) => continue,
            }
        }
    }
}

/// The outcome of one attempt.
enum Attempt<T> {
    /// Final, success or not.
    Done(Result<T, StoreError>),
    /// Failed with nothing done: may be tried again (after a search for the primary when
    /// `doubt`).
    Again { error: StoreError, doubt: bool },
}

/// Runs `f` in one transaction (READ COMMITTED, as the connection is set up) and commits it
/// if `f` succeeded. `f` is cloned for each attempt; it must do nothing outside the
/// transaction.
pub(crate) async fn transaction<T, F>(
    pool: &PgPool,
    primary: &Primary,
    f: F,
) -> Result<T, StoreError>
where
    T: Send,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>> + Clone + Send,
{
    let mut retry = Retry::new();
    loop {
        match transaction_once(pool, primary, retry.deadline, f.clone()).await {
            Attempt::Done(done) => return done,
            Attempt::Again { error, doubt } => {
                if !retry.again(primary, doubt).await {
                    return Err(error);
                }
            }
        }
    }
}

async fn transaction_once<T, F>(
    pool: &PgPool,
    primary: &Primary,
    deadline: Instant,
    f: F,
) -> Attempt<T>
where
    T: Send,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send,
{
    let mut conn = match acquire(pool, primary, deadline).await {
        Ok(conn) => conn,
        Err(error) => return Attempt::Again { error, doubt: true },
    };
    let (attempt, keep) = on_connection(&mut conn, primary, f).await;
    if !keep {
        // Broken, read-only, or holding an outcome nobody knows: not for the next request.
        conn.close_on_drop();
    } else if matches!(attempt, Attempt::Done(Ok(_))) {
        conn.keep();
    }
    attempt
}

/// [`transaction_once`] on its connection; also says whether the connection may go back to
/// the pool.
async fn on_connection<T, F>(conn: &mut PgConnection, primary: &Primary, f: F) -> (Attempt<T>, bool)
where
    T: Send,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send,
{
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return (failed_before_commit(&e), false),
    };
    match f(&mut tx).await {
        Ok(v) => match tx.commit().await {
            Ok(()) => (Attempt::Done(Ok(v)), true),
            Err(e) => {
                let failure = Failure::classify(&e);
                if failure.not_applied() {
                    // An ERROR answer to COMMIT: the transaction was rolled back.
                    (failed_before_commit(&e), false)
                } else {
                    // COMMIT was sent and no answer came back: it may have committed (and a
                    // retrieval handed its code out). Never retried.
                    primary.doubt();
                    let error =
                        StoreError::Unavailable(format!("the commit's outcome is unknown: {e}"));
                    (Attempt::Done(Err(error)), false)
                }
            }
        },
        Err(StoreError::Unavailable(m)) => {
            // A statement of `f` failed for a reason that may pass (see `db`); COMMIT was not
            // sent, so nothing of `f` is committed. Rolled back by closing the connection,
            // which is broken, read-only or just lost a conflict.
            let again = Attempt::Again {
                error: StoreError::Unavailable(m),
                doubt: true,
            };
            (again, false)
        }
        Err(e) => {
            // Dropping the transaction would roll back too; saying so is clearer.
            let kept = tx.rollback().await.is_ok();
            (Attempt::Done(Err(e)), kept)
        }
    }
}

/// A failure (of `BEGIN`, or an ERROR answer to `COMMIT`) that left nothing committed.
fn failed_before_commit<T>(e: &sqlx::Error) -> Attempt<T> {
    let failure = Failure::classify(e);
    if !failure.worth_retrying() {
        return Attempt::Done(Err(StoreError::Db(e.to_string())));
    }
    Attempt::Again {
        error: StoreError::Unavailable(e.to_string()),
        doubt: failure.primary_in_doubt(),
    }
}

/// Runs one autocommit statement (or a single round trip that commits by itself, such as a
/// data-modifying CTE) and maps its failure: sent again only when it certainly did not apply
/// (no connection was had, or an `ERROR` that may pass: read-only, conflict); a lost
/// connection after it was sent is answered `Unavailable` at once, as its outcome is unknown.
/// `f` is cloned for each attempt and must send one statement.
pub(crate) async fn autocommit<T, F>(
    pool: &PgPool,
    primary: &Primary,
    f: F,
) -> Result<T, StoreError>
where
    T: Send,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Clone + Send,
{
    let mut retry = Retry::new();
    loop {
        let mut conn = retry.acquire(pool, primary).await?;
        let e = match f.clone()(&mut conn).await {
            Ok(v) => {
                conn.keep();
                return Ok(v);
            }
            Err(e) => e,
        };
        let failure = Failure::classify(&e);
        if failure == Failure::Other {
            // Not the server's answer (decoding what it returned): a bug, not retried.
            return Err(super::super::db(e));
        }
        if failure.unavailable() {
            conn.close_on_drop();
        }
        if failure.primary_in_doubt() {
            primary.doubt();
        }
        drop(conn);
        if !failure.not_applied() {
            return Err(StoreError::Unavailable(format!(
                "the statement's outcome is unknown: {e}"
            )));
        }
        if !(failure.worth_retrying() && retry.again(primary, failure.primary_in_doubt()).await) {
            return Err(super::super::db(e));
        }
    }
}

/// Runs a read on a pooled connection, outside any explicit transaction; retried like a
/// transaction that failed before its commit, as a read changes nothing. `f` must only read.
pub(crate) async fn read<T, F>(pool: &PgPool, primary: &Primary, f: F) -> Result<T, StoreError>
where
    T: Send,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>> + Clone + Send,
{
    let mut retry = Retry::new();
    loop {
        let mut conn = retry.acquire(pool, primary).await?;
        match f.clone()(&mut conn).await {
            Ok(v) => {
                conn.keep();
                return Ok(v);
            }
            Err(StoreError::Unavailable(m)) => {
                conn.close_on_drop();
                drop(conn);
                if !retry.again(primary, true).await {
                    return Err(StoreError::Unavailable(m));
                }
            }
            done => return done,
        }
    }
}

/// Gets a connection by `deadline` (a kept one, else the pool's: `Kept`); puts the primary in
/// doubt when that is slow or fails.
async fn acquire<'p>(
    pool: &PgPool,
    primary: &'p Primary,
    deadline: Instant,
) -> Result<Lease<'p>, StoreError> {
    let acquire = tokio::time::timeout_at(deadline, primary.kept.acquire(pool));
    tokio::pin!(acquire);
    let slow = tokio::time::sleep_until((Instant::now() + SLOW_ACQUIRE).min(deadline));
    let got = tokio::select! {
        // The connection first: a kept one is ready at once, and the timer then never starts.
        biased;
        got = &mut acquire => got,
        () = slow => {
            primary.doubt();
            acquire.await
        }
    };
    match got {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            if Failure::classify(&e).primary_in_doubt() {
                primary.doubt();
            }
            Err(StoreError::Unavailable(format!(
                "no database connection: {e}"
            )))
        }
        Err(_) => {
            primary.doubt();
            Err(StoreError::Unavailable(
                "no database connection: timed out".into(),
            ))
        }
    }
}

/// Ready means a primary answers: a pooled connection whose session can write. A read-only
/// answer (a standby, or a demoted primary) is not ready, whatever `target_session_attrs`; a
/// connection found broken is closed and another tried, as a request would.
pub(crate) async fn ping(pool: &PgPool, primary: &Primary) -> Result<(), StoreError> {
    let mut retry = Retry::new();
    loop {
        let mut conn = retry.acquire(pool, primary).await?;
        let answer: Result<(bool, String), sqlx::Error> =
            sqlx::query_as("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
                .fetch_one(&mut *conn)
                .await;
        if matches!(&answer, Ok((false, ro)) if ro == "off") {
            conn.keep();
            return Ok(());
        }
        // Broken, or read-only: not for the next request.
        conn.close_on_drop();
        let why = match answer {
            Ok((true, _)) => "the database is a standby: no primary answers",
            Ok((false, _)) => "the database session is read-only: no primary answers",
            Err(e) => {
                let failure = Failure::classify(&e);
                drop(conn);
                if failure.unavailable() && retry.again(primary, failure.primary_in_doubt()).await {
                    continue;
                }
                return Err(StoreError::Unavailable(e.to_string()));
            }
        };
        primary.doubt();
        return Err(StoreError::Unavailable(why.into()));
    }
}
