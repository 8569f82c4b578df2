//! Connections kept between pieces of work, so that a connection that just served one goes to
//! the next without a round trip.
//!
//! sqlx 0.8 tests every connection that goes back to its pool: dropping a `PoolConnection`
//! spawns a task that sends a `Sync` and waits for PostgreSQL's `ReadyForQuery`
//! (`return_to_pool` → `ping`), and no option turns that off (`test_before_acquire` is about
//! acquiring). That is one round trip more per piece of work — a wake-up, a read and a write of
//! a PostgreSQL backend, a task, a write and a read here — for nothing when the work ended
//! normally: the connection has then read its statement's answer up to `ReadyForQuery`.
//!
//! So a connection whose work succeeded is parked here ([`Lease::keep`]) and the next piece of
//! work takes it ([`Kept::acquire`]); any other ending (an error, a connection to close, a
//! future dropped half-way) drops it into sqlx's pool as before, which tests it. The pool
//! still opens, closes and counts every connection; parked ones are, to sqlx, in use.
//!
//! Bounds: at most [`Kept::new`]'s `room` leases at once (a fair semaphore: waiters are
//! served in order, as in sqlx's pool), and a new connection is taken from sqlx only when none
//! is parked, so leased + parked never exceed `room`, which leaves the rest of the pool to
//! its other users (the commit listener holds one; the commit notifier borrows one). A
//! connection parked for more than [`PING_IF_IDLE_FOR`] is pinged before it is used (closed if
//! that fails), as the pool's `before_acquire` pings its own, and one kept out of sqlx's pool
//! for more than [`BACK_TO_POOL_AFTER`] goes back at its next release, as does one parked that
//! long, so that sqlx's idle and lifetime limits still apply to it.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::PING_IF_IDLE_FOR;

/// How long a connection may stay out of sqlx's pool (leased or parked) before its next
/// release hands it back.
const BACK_TO_POOL_AFTER: Duration = Duration::from_secs(60);

/// The parked connections and the leases' bound.
pub(crate) struct Kept {
    leases: Semaphore,
    parked: Mutex<Vec<Parked>>,
}

struct Parked {
    conn: PoolConnection<Postgres>,
    /// When it was parked.
    since: Instant,
    /// When it left sqlx's pool.
    out_since: Instant,
}

impl Kept {
    /// At most `room` leases at once.
    pub(crate) fn new(room: usize) -> Kept {
        Kept {
            leases: Semaphore::new(room),
            parked: Mutex::new(Vec::new()),
        }
    }

    /// A connection: the one parked last (pinged first if it was parked for more than
    /// [`PING_IF_IDLE_FOR`]), else one from `pool`. Waits for a lease first. Cancelled, it
    /// drops what it holds back into sqlx's pool.
    pub(crate) async fn acquire<'k>(&'k self, pool: &PgPool) -> Result<Lease<'k>, sqlx::Error> {
        let permit = self
            .leases
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut p) = parked else { break };
            // Idle for a while (a restart or a firewall may have cut it): tested first, as
            // the pool's `before_acquire` tests its own; a broken one is closed.
            if p.since.elapsed() <= PING_IF_IDLE_FOR || p.conn.ping().await.is_ok() {
                return Ok(Lease::new(self, permit, p.conn, p.out_since));
            }
            p.conn.close_on_drop();
        }
        let conn = pool.acquire().await?;
        Ok(Lease::new(self, permit, conn, Instant::now()))
    }

    fn park(&self, conn: PoolConnection<Postgres>, out_since: Instant) {
        let now = Instant::now();
        if now.duration_since(out_since) > BACK_TO_POOL_AFTER {
            return; // dropped: back to sqlx's pool
        }
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.push(Parked {
            conn,
            since: now,
            out_since,
        });
        // The oldest parked connection, at the bottom of the stack, goes back to sqlx once it
        // has waited that long too (when the load falls, so that sqlx's idle limit closes it).
        let stale = match parked.first() {
            Some(p) if now.duration_since(p.since) > BACK_TO_POOL_AFTER => Some(parked.remove(0)),
            _ => None,
        };
        drop(parked);
        drop(stale);
    }
}

/// A connection held for one piece of work. Dropped, it goes back to sqlx's pool (tested on
/// the way); [`Lease::keep`] parks it for the next piece of work instead.
pub(crate) struct Lease<'k> {
    conn: PoolConnection<Postgres>,
    out_since: Instant,
    kept: &'k Kept,
    permit: SemaphorePermit<'k>,
}

impl<'k> Lease<'k> {
    fn new(
        kept: &'k Kept,
        permit: SemaphorePermit<'k>,
        conn: PoolConnection<Postgres>,
        out_since: Instant,
    ) -> Lease<'k> {
        Lease {
            conn,
            out_since,
            kept,
            permit,
        }
    }

    /// The work ended normally (its last answer read up to `ReadyForQuery`, no transaction
    /// open): parks the connection for the next piece of work.
    pub(crate) fn keep(self) {
        let Lease {
            conn,
            out_since,
            kept,
            permit,
        } = self;
        // Parked before the lease's permit is given back, so that the waiter it wakes finds it.
        kept.park(conn, out_since);
        drop(permit);
    }

    /// Closes the connection instead of returning it anywhere.
    pub(crate) fn close_on_drop(&mut self) {
        self.conn.close_on_drop();
    }
}

impl Deref for Lease<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
