//! Which PostgreSQL host the store uses, and what it does when a statement fails: following a
//! promoted standby, answering `503` rather than `500`, and retrying only what cannot have
//! been done already.
//!
//! # Finding the primary
//!
//! `database_url` may list several hosts in libpq's form,
//! `postgres://user@h1:5432,h2:5432/db?target_session_attrs=read-write` ([`url`]). The hosts
//! are tried in order and the first that qualifies is used: with `any` (the default, as in
//! libpq) the first that connects; with `read-write` the first whose session is not read-only;
//! with `primary` the first that is not in recovery. The pool then opens connections to that
//! host only (`Pool::set_connect_options`), and with `read-write` or `primary` every new
//! connection is checked again when it opens (`after_connect`), so the pool never keeps a
//! connection to a standby.
//!
//! The search is made again, by one task per store, whenever something puts the current host
//! in doubt ([`Failure::primary_in_doubt`]): a connection lost or refused, the server shutting
//! down (57P01, 57P02), a read-only session (25006: a standby, or a primary that was demoted),
//! a new connection refused by the check, a pool slow to give a connection, a failed
//! `/readyz`. While no host qualifies it keeps looking (every 0.1 s, slowing to every 2 s), so
//! a replica follows a promoted standby by itself, with or without traffic.
//!
//! # Failures and retries
//!
//! Every failure is classified once ([`Failure::classify`]). Those where the database cannot
//! serve now (conflicts, read-only, lost or missing connections) are `StoreError::Unavailable`,
//! answered `503 unavailable`; the rest are `StoreError::Db`, `500`.
//!
//! Work is retried (within [`run::RETRY_WITHIN`], at most [`run::MAX_ATTEMPTS`] times, with
//! a short growing pause or until the search for the primary ends) only when it **cannot have
//! been applied**:
//!
//! - In a transaction ([`run::transaction`]): every failure before `COMMIT` is sent — getting
//!   a connection, `BEGIN`, any statement — leaves nothing committed (a transaction that never
//!   saw its `COMMIT` is rolled back, even when the connection dies), so the whole transaction
//!   is run again from the start, on a fresh connection. The connection it failed on is
//!   closed, not returned to the pool.
//! - At `COMMIT`: an `ERROR` answer means it did not commit (retried only if it was a
//!   serialization failure or deadlock). A lost connection or a `FATAL` (for example a backend
//!   terminated while its commit waits for a synchronous standby — it has already committed
//!   locally) leaves the outcome **unknown**: never retried, answered `503`.
//! - Outside a transaction ([`run::read`]): reads have no effect and are always retried.
//!
//! This is why a retrieval is never retried after its commit may have happened: the retry
//! loop can only go round from a failure seen *before* `COMMIT` was written to the connection,
//! or from an `ERROR` answer to it; the one step whose failure is ambiguous returns at once.
//! The same rule holds for an autocommit statement run on its own (one round trip): an
//! `ERROR` answer ([`Failure::not_applied`]) means nothing was committed and the statement may
//! be sent again; a lost connection after sending it is ambiguous and must be answered `503`
//! without a retry.

mod failure;
mod kept;
pub(crate) mod run;
mod url;

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) use failure::Failure;
pub(crate) use kept::{Kept, Lease};
pub(crate) use url::{parse, SessionAttrs, Targets};

use crate::store::StoreError;

/// A pooled connection idle for longer than this is pinged before it is handed out; one used
/// more recently is not (see [`open`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The longest pause between two searches while no host qualifies.
const MAX_SEARCH_PAUSE: Duration = Duration::from_secs(2);

/// A store's handle on the search for the primary, and its connections kept between pieces of
/// work ([`kept`]).
pub(crate) struct Primary {
    /// Bumped to ask the searching task for a new search. Only the store holds it strongly:
    /// the task ends when the store is dropped.
    ask: Arc<watch::Sender<u64>>,
    /// Bumped by the task at the end of each search, whatever it found.
    done: watch::Receiver<u64>,
    /// Where `run` gets its connections.
    pub(crate) kept: Kept,
}

impl Primary {
    /// Puts the current host in doubt: the task searches again (asks made while it searches
    /// are answered by that search). Returns at once.
    pub(crate) fn doubt(&self) {
        bump(&self.ask);
    }

    /// [`Primary::doubt`], then waits until a search ends or `until`, whichever is first.
    pub(crate) async fn doubt_and_wait(&self, until: Instant) {
        let mut done = self.done.clone();
        done.borrow_and_update();
        self.doubt();
        let _ = tokio::time::timeout_at(until, done.changed()).await;
    }
}

fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

/// Finds the first host that qualifies, opens the pool on it and starts the task that
/// searches again when asked. Fails (`Unavailable`, naming each host and why) when none
/// qualifies now.
///
/// sqlx pings every pooled connection before handing it out (`test_before_acquire`), one
/// round trip more per request: measured on this machine with `SELECT $1` through a pool of
/// 16, 550–570 µs a query one at a time with the ping against 340–410 µs without, and
/// 4,500–5,400 against 5,000–6,400 queries/s from 64 tasks. Here only a connection idle for
/// more than [`PING_IF_IDLE_FOR`] is pinged (one that a restart or a firewall may have cut
/// while nobody used it); a connection that breaks while in use fails its next statement,
/// which the error path handles: closed, and retried where nothing can have been applied.
///
/// `leases`: how many pieces of work may hold a connection at once ([`Kept`]); the rest of
/// the pool's connections are for its other users.
pub(crate) async fn open(
    targets: Targets,
    pool: PgPoolOptions,
    leases: usize,
) -> Result<(PgPool, Primary), StoreError> {
    let targets = Arc::new(targets);
    let first = search(&targets).await.map_err(StoreError::Unavailable)?;
    let (ask, ask_rx) = watch::channel(0u64);
    let ask = Arc::new(ask);
    let (done_tx, done) = watch::channel(0u64);
    let pool = pool
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        });
    let pool = match targets.attrs {
        SessionAttrs::Any => pool,
        attrs => pool.after_connect(refuse_others(attrs, Arc::downgrade(&ask))),
    };
    let pool = pool
        .connect_with(targets.hosts[first].options.clone())
        .await
        .map_err(super::db)?;
    tracing::info!(
        host = %targets.hosts[first].label,
        target_session_attrs = targets.attrs.as_str(),
        "database: using this host"
    );
    tokio::spawn(keep_searching(
        pool.clone(),
        targets.clone(),
        first,
        ask_rx,
        done_tx,
    ));
    Ok((
        pool,
        Primary {
            ask,
            done,
            kept: Kept::new(leases),
        },
    ))
}

/// The pool's check of each new connection: one that does not qualify is closed (sqlx then
/// tries again, with the options the search sets meanwhile) and the primary is put in doubt.
#[allow(clippy::type_complexity)]
fn refuse_others(
    attrs: SessionAttrs,
    ask: Weak<watch::Sender<u64>>,
) -> impl for<'c> Fn(
    &'c mut PgConnection,
    sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'c, Result<(), sqlx::Error>>
       + Send
       + Sync
       + 'static {
    move |conn, _| {
        let ask = ask.clone();
        Box::pin(async move {
            match qualifies(conn, attrs).await? {
                Ok(()) => Ok(()),
                Err(why) => {
                    if let Some(ask) = ask.upgrade() {
                        bump(&ask);
                    }
                    Err(sqlx::Error::Configuration(
                        format!(
                            "a new connection's host is {why} (target_session_attrs={})",
                            attrs.as_str()
                        )
                        .into(),
                    ))
                }
            }
        })
    }
}

/// Whether a session may serve keymaster under `attrs`; `Err(why)` when it may not.
async fn qualifies(
    conn: &mut PgConnection,
    attrs: SessionAttrs,
) -> Result<Result<(), &'static str>, sqlx::Error> {
    Ok(match attrs {
        SessionAttrs::Any => Ok(()),
        SessionAttrs::ReadWrite => {
            let ro: String = sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
                .fetch_one(conn)
                .await?;
            if ro == "off" {
                Ok(())
            } else {
                Err("read-only")
            }
        }
        SessionAttrs::Primary => {
            let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(conn)
                .await?;
            if in_recovery {
                Err("a standby (in recovery)")
            } else {
                Ok(())
            }
        }
    })
}

/// Tries the hosts in order; the index of the first that qualifies, or why none does.
async fn search(targets: &Targets) -> Result<usize, String> {
    let mut why_not = Vec::new();
    for (i, host) in targets.hosts.iter().enumerate() {
        let probed =
            tokio::time::timeout(targets.probe_timeout, probe(&host.options, targets.attrs)).await;
        match probed {
            Ok(Ok(Ok(()))) => return Ok(i),
            Ok(Ok(Err(why))) => why_not.push(format!("{}: {why}", host.label)),
            Ok(Err(e)) => why_not.push(format!("{}: {e}", host.label)),
            Err(_) => why_not.push(format!(
                "{}: no answer within {:?}",
                host.label, targets.probe_timeout
            )),
        }
    }
    let wanted = match targets.attrs {
        SessionAttrs::Any => "answers",
        SessionAttrs::ReadWrite => "accepts writes (target_session_attrs=read-write)",
        SessionAttrs::Primary => "is a primary (target_session_attrs=primary)",
    };
    Err(format!(
        "no host of database_url {wanted}: {}",
        why_not.join("; ")
    ))
}

/// Connects to one host on a connection of its own (not the pool's) and checks it.
async fn probe(
    options: &PgConnectOptions,
    attrs: SessionAttrs,
) -> Result<Result<(), &'static str>, sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    let verdict = qualifies(&mut conn, attrs).await;
    let _ = conn.close().await;
    verdict
}

/// The store's search task: searches when asked and points the pool at what it finds; while
/// nothing qualifies, searches again and again. Ends when the store is dropped.
async fn keep_searching(
    pool: PgPool,
    targets: Arc<Targets>,
    mut current: usize,
    mut ask: watch::Receiver<u64>,
    done: watch::Sender<u64>,
) {
    while ask.changed().await.is_ok() {
        let mut pause = Duration::from_millis(100);
        let mut missing_since: Option<Instant> = None;
        loop {
            let found = search(&targets).await;
            bump(&done);
            match found {
                Ok(i) => {
                    let label = &targets.hosts[i].label;
                    if i != current {
                        // Connections already open to the old host stay in the pool until
                        // they fail (and are closed) or are checked on their way out.
                        pool.set_connect_options(targets.hosts[i].options.clone());
                        tracing::warn!(host = %label, "database: now using this host");
                        current = i;
                    } else if let Some(since) = missing_since {
                        tracing::warn!(host = %label, after = ?since.elapsed(),
                            "database: the host serves again");
                    }
                    break;
                }
                Err(why) => {
                    if missing_since.is_none() {
                        tracing::warn!(%why, "database: no host serves; searching until one does");
                        missing_since = Some(Instant::now());
                    } else {
                        tracing::debug!(%why, "database: still no host serves");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_SEARCH_PAUSE);
                    if ask.has_changed().is_err() {
                        return;
                    }
                }
            }
        }
        // The asks made while searching are answered by this search.
        ask.borrow_and_update();
    }
}
