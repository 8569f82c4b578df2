//! Relays commits of events between replicas with `LISTEN/NOTIFY`, so that a dispatcher and the
//! holders' event streams on one replica wake at a commit made on another.
//!
//! The `NOTIFY` is not sent inside the transactions that write events: PostgreSQL serialises
//! the commits of notifying transactions on one lock, which would put every deposit of every
//! replica in one line. Instead a task per replica sends one `pg_notify` after its own commits,
//! at most every [`MIN_GAP`] (a burst of commits makes one notification), naming the replica so
//! that it ignores its own. A notification lost to a dropped connection is covered by the
//! waiters' fallback timers.
//!
//! The same listener hears the deletions of credentials (`credentials::CHANNEL`) and tells
//! this replica's [`Credentials`] to forget what it keeps, and whether it is listening at all.
//!
//! Not responsible for what a commit means: receivers read the store.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;

use super::credentials::{self, Credentials};
use crate::store::CommitSignal;

/// The channel all replicas of one database use.
const CHANNEL: &str = "keymaster_commits";
/// Shortest time between two notifications of one replica.
const MIN_GAP: Duration = Duration::from_millis(5);
/// How often an idle listener checks that its store still exists.
const ALIVE_CHECK: Duration = Duration::from_secs(5);

/// Starts the sender (woken by `local`, this replica's own commits) and the listener (which
/// tells `commits` about other replicas' commits, and `kept` about deletions of credentials).
/// Both end when `commits` is dropped.
pub fn start(
    pool: PgPool,
    instance: String,
    local: watch::Receiver<u64>,
    commits: &Arc<CommitSignal>,
    kept: Arc<Credentials>,
) {
    tokio::spawn(send(pool.clone(), instance.clone(), local));
    tokio::spawn(listen(pool, instance, Arc::downgrade(commits), kept));
}

async fn send(pool: PgPool, instance: String, mut local: watch::Receiver<u64>) {
    while local.changed().await.is_ok() {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&instance)
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "cannot notify the other replicas of a commit");
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}

async fn listen(
    pool: PgPool,
    instance: String,
    commits: Weak<CommitSignal>,
    kept: Arc<Credentials>,
) {
    let mut listener = loop {
        let started = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen_all([CHANNEL, credentials::CHANNEL]).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match started.await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other replicas' commits; retrying");
                if commits.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    kept.listening(true);
    loop {
        let got = tokio::select! {
            got = listener.try_recv() => got,
            () = tokio::time::sleep(ALIVE_CHECK) => {
                if commits.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        let Some(signal) = commits.upgrade() else {
            return;
        };
        match got {
            Ok(Some(n)) if n.channel() == credentials::CHANNEL => {
                kept.listening(true);
                kept.forget();
            }
            Ok(Some(n)) => {
                kept.listening(true);
                if n.payload() != instance {
                    signal.committed();
                }
            }
            // The connection broke and was made again, listening: what was sent meanwhile is
            // lost. The waiters' fallback timers cover commits; credentials are forgotten.
            Ok(None) => {
                tracing::warn!("lost the connection listening for commits; listening again");
                kept.forget();
            }
            Err(e) => {
                // Not listening until the next call makes the connection again and hears
                // something.
                kept.listening(false);
                tracing::warn!(error = %e, "lost the connection listening for commits");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
